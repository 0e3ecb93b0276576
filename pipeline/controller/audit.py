"""The audit trail: one JSON line per event on the `pipeline.controller.audit` logger and the audit file."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.gitops import promotion as pm

# docs/rollback.md names this logger; it stays put whatever module writes to it.
audit_log = logging.getLogger("pipeline.controller.audit")


def write_audit(audit_file: Path | None, **fields: Any) -> None:
    line = json.dumps({"ts": pm.utcnow().isoformat(timespec="milliseconds"), **fields}, sort_keys=True, default=str)
    audit_log.info(line)
    if audit_file:
        with audit_file.open("a") as fh:
            fh.write(line + "\n")
