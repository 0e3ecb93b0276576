"""What a release is built from: the image targets, the source commit, build-context digests.

Shared by the stages that build, scan, render and promote a release (and by promotion evidence),
so none of them reaches into another stage for them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from pipeline.core.cache import InputHasher
from pipeline.runtime.contract import RELEASE_TARGETS

# Release images: their digests are the release pins (defined in pipeline/runtime/contract.json).
TARGETS = RELEASE_TARGETS
# Set by the Dagger module from its `commit`/`dirty` arguments: the engine's copy of the source may
# have no .git, and the caller knows what it checked out (pipeline_dagger.plan.COMMIT_ENV/DIRTY_ENV).
COMMIT_ENV = "PIPELINE_COMMIT"
DIRTY_ENV = "PIPELINE_DIRTY"
# Files that make up an image's build context (besides the target name).
CONTEXT_INPUTS = ("app", "pyproject.toml", "uv.lock")
# Under CONTEXT_INPUTS but not in any image (.dockerignore leaves them out too): the model's release
# record is read by the pipeline at build/eval time, never by a running image, so a model-only
# release keeps every image's context digest (and image).
CONTEXT_EXCLUDED = ("app/model.yaml",)


def git_commit(root: Path) -> tuple[str, bool]:
    """(HEAD commit, dirty?) — $PIPELINE_COMMIT/$PIPELINE_DIRTY when set; ("unknown", True) outside a git checkout."""
    if commit := os.environ.get(COMMIT_ENV):
        return commit, os.environ.get(DIRTY_ENV, "0") not in ("", "0")
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True
    return head, dirty


def commit_time(root: Path) -> str:
    """The commit's time (not now): labels stay the same for the same commit, so layers cache."""
    try:
        return (
            subprocess.run(
                ["git", "log", "-1", "--format=%cI"], cwd=root, capture_output=True, text=True, check=True
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def context_digest(root: Path, target: str) -> str:
    """Content digest of an image's build context: stands in for a registry digest when no engine exists."""
    tree, _ = InputHasher().tree_digest(root, context_files(root))
    return "sha256:" + hashlib.sha256(f"{target}\0{tree}".encode()).hexdigest()


def context_files(root: Path) -> list[str]:
    """CONTEXT_INPUTS as repo-relative paths, CONTEXT_EXCLUDED left out (one level down where excluded)."""
    out: list[str] = []
    for rel in CONTEXT_INPUTS:
        if (root / rel).is_dir() and any(x.startswith(f"{rel}/") for x in CONTEXT_EXCLUDED):
            out += [
                f"{rel}/{p.name}" for p in sorted((root / rel).iterdir()) if f"{rel}/{p.name}" not in CONTEXT_EXCLUDED
            ]
        elif rel not in CONTEXT_EXCLUDED:
            out.append(rel)
    return out
