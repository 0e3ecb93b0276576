"""The audit log: one JSON line per API request.

Subjects are written as a keyed hash (HMAC-SHA256 with GATEWAY_AUDIT_HASH_KEY), never
raw; prompt and completion text only when GATEWAY_AUDIT_INCLUDE_TEXT is on. Lines go out
with one O_APPEND write each, so several workers can share one file without interleaving.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any

import orjson

log = logging.getLogger(__name__)


class AuditLog:
    def __init__(self, target: str) -> None:
        self.target = target
        if target == "-":
            self._fd = 1
            self._owned = False
        else:
            self._fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._owned = True

    def write(self, record: dict[str, Any]) -> None:
        record["time"] = datetime.now(UTC).isoformat(timespec="milliseconds")
        try:
            os.write(self._fd, orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        except OSError as exc:
            # Losing an audit line is bad; failing the user's request for it is worse.
            log.error("audit write failed: %s", exc)

    def close(self) -> None:
        if self._owned:
            os.close(self._fd)
            self._owned = False
