"""Apply platform.yaml to the tree: rename env files when env names change, then rewrite every
derived file (pipeline/platform_config/derived.py). All or nothing: every new file is computed
before the first write, and a failure while writing puts the tree back."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.platform import PLATFORM_FILE, Platform
from pipeline.platform_config.derived import Change, derive

PROMOTION_DATA = Path("policies/promotion.data.json")


class ApplyError(RuntimeError):
    """The tree cannot take this platform.yaml; the message says what to do."""


def tree_envs(root: Path) -> tuple[str, ...]:
    """The env names the tree is laid out for, in promotion order: the chain of the promotion
    policy's allowed_sources (first env ← ci, each next ← the one before)."""
    sources: dict[str, list[str]] = json.loads((root / PROMOTION_DATA).read_text())["promotion"]["allowed_sources"]
    by_source = {src[0]: env for env, src in sources.items() if len(src) == 1}
    chain: list[str] = []
    current = "ci"
    while current in by_source and len(chain) <= len(sources):
        current = by_source[current]
        chain.append(current)
    if len(chain) != len(sources):
        raise ApplyError(f"{PROMOTION_DATA}: allowed_sources is not one chain from ci: {sources}")
    return tuple(chain)


def renames_for(root: Path, platform: Platform) -> dict[str, str]:
    old = tree_envs(root)
    new = platform.env_names
    if len(old) != len(new):
        raise ApplyError(
            f"platform.yaml has {len(new)} environments ({', '.join(new)}), the tree {len(old)} ({', '.join(old)}): "
            "apply renames environments in promotion order, it does not add or remove them — copy or remove "
            "environments/<env>/ and loadtests/slo/<env>.yaml (and the env's entries in policies/) by hand first"
        )
    return dict(zip(old, new, strict=True))


def _moves(root: Path, renames: dict[str, str]) -> list[tuple[Path, Path]]:
    moves = []
    for old, new in renames.items():
        if old == new:
            continue
        for pattern in ("environments/{}", "loadtests/slo/{}.yaml"):
            src, dst = root / pattern.format(old), root / pattern.format(new)
            if src.exists():
                moves.append((src, dst))
    # A swap (dev ↔ staging) is fine: apply parks every source first. Anything else in the way is not.
    sources = {src for src, _ in moves}
    for _, dst in moves:
        if dst.exists() and dst not in sources:
            raise ApplyError(f"{dst.relative_to(root)} already exists: move or remove it before renaming an env to it")
    return moves


@dataclass
class Applied:
    renamed: dict[str, str]
    changed: list[str]


def apply(root: Path, platform: Platform, platform_text: str | None = None) -> Applied:
    """Rename env files, rewrite the derived files, and (when given) write platform.yaml."""
    renames = renames_for(root, platform)
    moves = _moves(root, renames)
    staged: list[tuple[Path, Path]] = []
    with tempfile.TemporaryDirectory(dir=root, prefix=".platform-apply-") as tmp:
        # Two steps through the temp dir: old names out, new names in (swaps need it).
        for i, (src, _) in enumerate(moves):
            parked = Path(tmp) / f"{i}"
            os.replace(src, parked)
            staged.append((src, parked))
        for i, (_, dst) in enumerate(moves):
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(tmp) / f"{i}", dst)
        try:
            changes = derive(root, platform, {**{e: e for e in platform.env_names}, **renames})
            missing = [c for c in changes if c.new_text is None]
            if missing:
                raise ApplyError("; ".join(c.diff for c in missing))
            _write_all(root, changes, platform_text)
        except BaseException:
            for (src, _), (_, dst) in zip(staged, moves, strict=True):
                if dst.exists():
                    shutil.move(dst, src)
            raise
    return Applied({o: n for o, n in renames.items() if o != n}, [c.path for c in changes])


def _write_all(root: Path, changes: list[Change], platform_text: str | None) -> None:
    """Write every file through a temp file + rename; on a failure restore the ones written."""
    written: list[tuple[Path, str]] = []
    targets = [(root / c.path, c.new_text) for c in changes]
    if platform_text is not None:
        targets.append((root / PLATFORM_FILE, platform_text))
    try:
        for path, text in targets:
            assert text is not None
            old = path.read_text() if path.exists() else ""
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text)
            try:
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            written.append((path, old))
    except BaseException:
        for path, old in written:
            path.write_text(old)
        raise
