"""A model-only release keeps every image: app/model.yaml is outside each image's build context.

The build-context digest (pipeline.artifacts.source.context_digest) is what `build` pins without an
engine and what gates record as the tree they ran; .dockerignore is what the engine sends. Both
leave the model's release record out, and nothing the images run reads it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.artifacts.source import CONTEXT_EXCLUDED, CONTEXT_INPUTS, TARGETS, context_digest
from tests.images.dockerfile_checks import dockerignore_excludes

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The build context's inputs of this checkout (app/, pyproject.toml, uv.lock) and .dockerignore."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "app", root / "app", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "uv.lock", ".dockerignore"):
        shutil.copy2(REPO / name, root / name)
    return root


def digests(root: Path) -> dict[str, str]:
    return {t: context_digest(root, t) for t in TARGETS}


def test_a_model_record_edit_keeps_every_context_digest(tree: Path) -> None:
    before = digests(tree)
    record = tree / "app" / "model.yaml"
    record.write_text(record.read_text().replace("steps: ", "steps: 1"))  # a new stand-in recipe
    assert record.read_text() != (REPO / "app" / "model.yaml").read_text()
    assert digests(tree) == before


def test_an_app_code_edit_changes_every_context_digest(tree: Path) -> None:
    before = digests(tree)
    code = tree / "app" / "gateway" / "__init__.py"
    code.write_text(code.read_text() + "\n# changed\n")
    after = digests(tree)
    assert all(after[t] != before[t] for t in TARGETS), (before, after)


def test_a_new_file_beside_the_record_changes_the_digest(tree: Path) -> None:
    # Only the record itself is left out, not the rest of app/'s top level.
    before = digests(tree)
    (tree / "app" / "model.yml").write_text("id: x\n")
    assert digests(tree) != before


def test_dockerignore_leaves_out_exactly_what_the_context_digest_leaves_out() -> None:
    rules = (REPO / ".dockerignore").read_text()
    for path in CONTEXT_EXCLUDED:
        assert dockerignore_excludes(rules, path), f".dockerignore sends {path} to the image build"
    # The code beside it still reaches the images.
    for path in ("app/gateway/__init__.py", "app/simulator/__init__.py", "pyproject.toml", "uv.lock"):
        assert not dockerignore_excludes(rules, path), path
    assert all(p.split("/")[0] in CONTEXT_INPUTS for p in CONTEXT_EXCLUDED)
