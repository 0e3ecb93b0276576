"""The eval stage inside `ci`: its candidate comes from build's model artifact, and its cache key moves
with the model's behaviour inputs (app/model.yaml, the suite) but not with unrelated files."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pipeline.core.cache import InputHasher
from pipeline.core.context import RunContext
from pipeline.core.result import StageResult, Status
from pipeline.stages import ci
from pipeline.stages import eval as stage


def test_ci_evaluates_the_artifact_build_pushed_else_the_stand_in(tmp_path: Path) -> None:
    ctx = RunContext(run_dir=tmp_path)
    ref = "127.0.0.1:5000/model@sha256:" + "b" * 64
    build = StageResult(stage="build", status=Status.PASSED, evidence={"model_artifact": {"ref": ref}})
    assert stage.ci_options({"build": build}, ctx).candidate == ref
    assert stage.ci_options({}, ctx).candidate is None


def _tree(root: Path) -> Path:
    (root / "app").mkdir(parents=True)
    (root / "app" / "model.yaml").write_text("serving:\n  maxModelLen: 512\n")
    (root / "app" / "main.py").write_text("x = 1\n")
    (root / "evals" / "chat-basics").mkdir(parents=True)
    (root / "evals" / "chat-basics" / "items.jsonl").write_text('{"id": "a"}\n')
    return root


def _key(root: Path, tmp: Path) -> str:
    ctx = RunContext(run_dir=tmp / "run", repo_root=root)
    opts = stage.EvalOptions()
    return ci.stage_cache_key("eval", stage, opts, ci._jsonable(opts), ctx, InputHasher(tmp / "idx"), "head")


@pytest.mark.parametrize(
    ("path", "text", "moves"),
    [
        ("app/model.yaml", "serving:\n  maxModelLen: 256\n", True),
        ("evals/chat-basics/items.jsonl", '{"id": "b"}\n', True),
        ("app/main.py", "x = 2\n", False),  # the gateway's code does not change the model's answers
    ],
)
def test_cache_key_follows_the_behaviour_inputs(tmp_path: Path, path: str, text: str, moves: bool) -> None:
    root = _tree(tmp_path / "repo")
    before = _key(root, tmp_path)
    assert _key(root, tmp_path) == before
    (root / path).write_text(text)
    assert (_key(root, tmp_path) != before) is moves


def test_json_flag_is_o_json(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    stage.add_arguments(parser)
    assert parser.parse_args(["--json"]).output == "json"
    assert not hasattr(parser.parse_args([]), "output")
    with pytest.raises(SystemExit):
        parser.parse_args(["--baseline", "d", "--env", "dev"])
