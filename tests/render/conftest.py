"""Fixtures for render tests: a throwaway copy of the parts of the repo the stage reads."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.core.context import RunContext
from pipeline.core.result import StageResult
from pipeline.stages import render

# What `render` reads; planted violations edit these copies, never the repo.
COPIED = (
    "charts",
    "environments",
    "policies",
    "docs/runbooks",
    ".trivyignore.yaml",
    # platform.yaml and the files derived from it outside the above (render checks they agree).
    "platform.yaml",
    "app/model.yaml",
    "loadtests/slo",
)


@pytest.fixture
def repo_copy(repo_root: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "repo"
    for rel in COPIED:
        if (repo_root / rel).is_dir():
            shutil.copytree(repo_root / rel, dest / rel)
        else:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo_root / rel, dest / rel)
    return dest


RenderFn = Callable[..., StageResult]


@pytest.fixture
def run_render(tmp_path: Path, crd_schemas: Path) -> RenderFn:
    def _run(root: Path, envs: list[str] | None = None, **kw: object) -> StageResult:
        ctx = RunContext(run_dir=tmp_path / "run")
        opts = render.RenderOptions(
            envs=envs or ["all"], out=tmp_path / "out", crd_schemas=str(crd_schemas), repo_root=root, **kw
        )
        return render.run(opts, ctx)

    return _run


def failure_text(result: StageResult) -> str:
    return "\n".join(f"[{c.name}] {c.detail}" for c in result.failures())


# The checks a test about other checks leaves out (they take most of render's time).
FAST = frozenset({"trivy", "promtool"})


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    """Replace `old` (which must be there) `count` times in a file of the copy."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count))
