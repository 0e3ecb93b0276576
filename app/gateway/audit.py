"""The audit log: one JSON line per API request.

Subjects are written as a keyed hash (HMAC-SHA256 with GATEWAY_AUDIT_HASH_KEY), never
raw; prompt and completion text only when GATEWAY_AUDIT_INCLUDE_TEXT is on. Lines go out
with one O_APPEND write each, so several workers can share one file without interleaving.
"""

from __future__ import annotations

import logging
import os
import time
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
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        """datetime.now(UTC).isoformat(timespec="milliseconds"), formatted once per second."""
        t = time.time()
        sec = int(t)
        if sec != self._second:
            self._second = sec
            self._prefix = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        return f"{self._prefix}{int((t - sec) * 1000):03d}+00:00"

    def write(self, record: dict[str, Any]) -> None:
        record["time"] = self.now()
        try:
            os.write(self._fd, orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        except OSError as exc:
            # Losing an audit line is bad; failing the user's request for it is worse.
            log.error("audit write failed: %s", exc)

    def close(self) -> None:
        if self._owned:
            os.close(self._fd)
            self._owned = False
