"""Stage results cached by a hash of their inputs.

Key = sha256 over: every file under the paths a stage reads (relative path + content
hash), the stage's options, and the identity of the tools it calls (path, size, mtime:
cheaper than running `--version` and changes whenever the binary does). A stage lists the
paths it reads in `CACHE_INPUTS` (`TRACKED` = every file git knows: tracked plus untracked,
not ignored); inputs outside the tree or facts of the machine (a CRD schema directory, an env
variable, today's date for expiring ignore entries, a reachable engine) come from the module's
`cache_extra(options, root) -> Extra`; root-relative files a stage's result provably does not
depend on are left out with `CACHE_EXCLUDE` (the test stage runs its suite on an example model
record, not on app/model.yaml). An unchanged
tree therefore re-uses the previous PASSED result; any changed file, option or tool
misses. Only PASSED results are stored: a failure must be re-proven every time, and a
SKIPPED result depends on the machine (engine, DB, GPU), which is not in the key.

File content hashes are memoised per (path, size, mtime_ns) in one index file, so a
warm key costs a stat per file rather than a read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.result import StageResult, Status
from pipeline.runtime.tools import REPO_ROOT, find

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """`.cache/pipeline/` under the repo, or $PIPELINE_CACHE_DIR (read at call time)."""
    return Path(os.environ.get("PIPELINE_CACHE_DIR") or REPO_ROOT / ".cache" / "pipeline")


# Never inputs: environments, tool installs, outputs, VCS internals.
EXCLUDED_DIRS = frozenset(
    {
        ".git",
        ".venv",
        ".tools",
        ".runs",
        ".cache",
        ".gitops",
        "__pycache__",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        "node_modules",
        "dist",
        "build",
    }
)
SCHEMA = 2
# A CACHE_INPUTS entry: every file `git ls-files --cached --others --exclude-standard` lists
# (what a test suite may read), or the whole tree minus EXCLUDED_DIRS outside a git checkout.
TRACKED = ":tracked:"


@dataclass(frozen=True)
class Extra:
    """Key material a stage adds at run time: more paths (absolute or root-relative) and facts."""

    paths: tuple[str, ...] = ()
    facts: Mapping[str, Any] = field(default_factory=dict)


def tracked_files(root: Path) -> list[Path] | None:
    """Files git knows under root (tracked + untracked-not-ignored), or None outside a checkout."""
    try:
        proc = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    base = root.resolve()
    names = [n for n in proc.stdout.decode().split("\0") if n]
    # A tracked file deleted from the work tree is absent, not an input.
    return [base / n for n in names if not EXCLUDED_DIRS.intersection(n.split("/")) and (base / n).is_file()]


def _iter_files(root: Path, paths: Iterable[str], exclude: Iterable[str] = ()) -> list[Path]:
    files: set[Path] = set()
    for rel in paths:
        if rel == TRACKED:
            listed = tracked_files(root)
            if listed is not None:
                files.update(listed)
                continue
            rel = "."
        base = (root / rel).resolve()
        if base.is_file():
            files.add(base)
            continue
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d not in EXCLUDED_DIRS and not d.endswith(".egg-info")]
            for name in filenames:
                if not name.endswith((".pyc", ".pyo")):
                    files.add(Path(dirpath) / name)
    left_out = {(root / rel).resolve() for rel in exclude}
    return sorted(files - left_out)


class InputHasher:
    """Hash trees of files, re-reading only files whose (size, mtime) changed."""

    def __init__(self, directory: Path | None = None) -> None:
        self.index_path = (directory or cache_dir()) / "file-index.json"
        self._index: dict[str, list[Any]] = {}
        self._dirty = False
        try:
            self._index = json.loads(self.index_path.read_text())
        except (OSError, ValueError):
            self._index = {}

    def file_digest(self, path: Path) -> str:
        st = path.stat()
        key = str(path)
        entry = self._index.get(key)
        if entry and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            return str(entry[2])
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        self._index[key] = [st.st_size, st.st_mtime_ns, digest]
        self._dirty = True
        return digest

    def tree_digest(self, root: Path, paths: Iterable[str], exclude: Iterable[str] = ()) -> tuple[str, int]:
        """sha256 over (relative path, content digest) of every file but `exclude`; also the file count."""
        h = hashlib.sha256()
        files = _iter_files(root, paths, exclude)
        for f in files:
            try:
                rel = f.relative_to(root.resolve())
            except ValueError:
                rel = f
            h.update(f"{rel}\0{self.file_digest(f)}\n".encode())
        return h.hexdigest(), len(files)

    def save(self) -> None:
        if not self._dirty:
            return
        self.index_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._index))
        tmp.replace(self.index_path)
        self._dirty = False


def tool_identity(names: Iterable[str]) -> dict[str, str]:
    """name → "path:size:mtime" for each tool (or "absent"): part of the key. The path is resolved:
    a checkout whose .tools links to another's runs the same binaries, and shares its results."""
    out: dict[str, str] = {"python": sys.version.split()[0]}
    for name in sorted(set(names)):
        path = find(name)
        if path is None:
            out[name] = "absent"
            continue
        real = Path(path).resolve()
        st = real.stat()
        out[name] = f"{real}:{st.st_size}:{int(st.st_mtime)}"
    return out


def cache_key(
    stage: str,
    *,
    root: Path,
    inputs: Iterable[str],
    options: Mapping[str, Any],
    tools: Iterable[str] = (),
    hasher: InputHasher | None = None,
    exclude: Iterable[str] = (),
) -> str:
    """The stage's cache key: inputs tree (but `exclude`) + options + tool identities."""
    own = hasher or InputHasher()
    tree, count = own.tree_digest(root, inputs, exclude)
    if hasher is None:
        own.save()
    material = json.dumps(
        {
            "schema": SCHEMA,
            "stage": stage,
            "tree": tree,
            "files": count,
            "options": options,
            "tools": tool_identity(tools),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(material.encode()).hexdigest()


class ResultCache:
    """`.cache/pipeline/results/<stage>/<key>.json` holding a PASSED StageResult."""

    def __init__(self, directory: Path | None = None) -> None:
        self.dir = (directory or cache_dir()) / "results"

    def _path(self, stage: str, key: str) -> Path:
        return self.dir / stage / f"{key}.json"

    def get(self, stage: str, key: str) -> StageResult | None:
        path = self._path(stage, key)
        try:
            result = StageResult.model_validate_json(path.read_text())
        except (OSError, ValueError):
            return None
        if result.status is not Status.PASSED:
            return None
        log.debug("cache hit %s %s", stage, key[:12])
        return result.model_copy(update={"cached": True})

    def put(self, stage: str, key: str, result: StageResult) -> bool:
        """Store a PASSED result; anything else is not cached (returns False)."""
        if result.status is not Status.PASSED or result.cached:
            return False
        path = self._path(stage, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(result.model_dump_json(indent=2))
        tmp.replace(path)
        return True


def forget_unused(cache: Path, max_age_s: float) -> None:
    """Remove the entries of a reuse cache not written or reused (mtime) within `max_age_s`."""
    import contextlib
    import time

    cutoff = time.time() - max_age_s
    for entry in cache.iterdir():
        with contextlib.suppress(OSError):  # another run may remove it first
            if entry.stat().st_mtime < cutoff:
                entry.unlink()
