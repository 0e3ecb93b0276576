"""`trivy config` over a directory, its JSON report reused while nothing trivy reads has changed.

The report is a function of trivy (its binary, and the checks bundle it may keep in its cache
directory), its arguments, its TRIVY_* settings and the bytes of the files it scans. The key is
a sha256 over all of them, so a reused report is the one trivy would write again; the caller
gates the report afresh on every run (ignore file, today's date, severities), so only trivy's
own work (~1.3 s of CPU: compiling its checks, scanning) is saved. A failed run is never stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.checks.trivy_scan import trivy_cache_dir
from pipeline.core.cache import forget_unused

CACHE_SCHEMA = 1
# Reports not written or reused for this long are forgotten (each chart edit adds one).
CACHE_MAX_AGE_S = 30 * 86400


@dataclass(frozen=True)
class Scan:
    report: dict[str, Any] | None  # None: trivy failed (see stderr)
    stderr: str = ""
    reused: bool = False


def _identity(path: Path) -> str:
    """Path, size and mtime: changes whenever the file does (cheaper than reading a binary)."""
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _bundle_identity() -> str:
    """The checks bundle trivy caches (`<cache dir>/policy`), used over its embedded checks when present."""
    bundle = trivy_cache_dir() / "policy"
    if not bundle.is_dir():
        return "embedded"
    return "\n".join(f"{p.relative_to(bundle)}:{_identity(p)}" for p in sorted(bundle.rglob("*")) if p.is_file())


def cache_key(argv: Sequence[str], target: Path, skip_dirs: Sequence[str], environ: Mapping[str, str]) -> str:
    """sha256 over trivy's identity and bundle, `argv`, TRIVY_* settings and every file under
    `target` (path and content) outside its top-level `skip_dirs`; OSError if a file cannot be read."""
    h = hashlib.sha256(f"trivy-config/{CACHE_SCHEMA}\0{_identity(Path(argv[0]))}\0{_bundle_identity()}\0".encode())
    h.update(
        json.dumps([list(argv[1:]), sorted((k, v) for k, v in environ.items() if k.startswith("TRIVY_"))]).encode()
    )
    for path in sorted(target.rglob("*")):
        rel = path.relative_to(target)
        if rel.parts[0] in skip_dirs or not path.is_file():
            continue
        content = path.read_bytes()
        h.update(f"{rel}\0{len(content)}\0".encode() + content)
    return h.hexdigest()


def scan(
    argv: Sequence[str],
    target: Path,
    *,
    cwd: Path,
    cache: Path | None,
    skip_dirs: Sequence[str] = (),
) -> Scan:
    """`argv` (trivy and its options, `--format json`) run on `target`; the report of an earlier
    identical run from `cache` when there is one (None: always run, store nothing). `skip_dirs`:
    top-level directories of `target` that argv tells trivy to skip (not part of the key)."""
    key: str | None = None
    if cache is not None:
        try:
            key = cache_key(argv, target, skip_dirs, os.environ)
        except OSError:
            key = None
        entry = cache / f"{key}.json"
        if key and entry.is_file():
            with contextlib.suppress(OSError, ValueError):
                report = json.loads(entry.read_text())
                entry.touch()  # still in use: not forgotten
                return Scan(report, reused=True)
    proc = subprocess.run([*argv, str(target)], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        return Scan(None, stderr=proc.stderr)
    report = json.loads(proc.stdout or "{}")
    if cache is not None and key:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{key}.{os.getpid()}"
        tmp.write_text(json.dumps(report))
        tmp.replace(cache / f"{key}.json")  # atomic: a reader never sees half a report
        forget_unused(cache, CACHE_MAX_AGE_S)
    return Scan(report)
