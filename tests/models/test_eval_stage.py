"""The eval stage inside `ci`: its candidate comes from build's model artifact, and its cache key moves
with the model's behaviour inputs (app/model.yaml, the suite) but not with unrelated files."""

from __future__ import annotations

import argparse
import subprocess
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


def _commit(work: Path, text: str) -> None:
    """A commit on the remote's main (identity injected: never the host's git config)."""
    (work / "environments" / "dev").mkdir(parents=True, exist_ok=True)
    (work / "environments" / "dev" / "release.yaml").write_text(text)
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    for argv in (["add", "-A"], [*ident, "commit", "-qm", "promote"], ["push", "-q", "origin", "HEAD:main"]):
        subprocess.run(["git", *argv], cwd=work, check=True, capture_output=True)


def test_cache_key_follows_what_the_gitops_remote_pins_not_the_trees_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The baseline is the model the env runs as the GitOps remote pins it (`_env_baseline`): a
    promotion there re-judges the candidate; the tree's environments/ copy is not what is compared."""
    root = _tree(tmp_path / "repo")
    (root / "environments" / "dev").mkdir(parents=True)
    (root / "environments" / "dev" / "release.yaml").write_text("release: {id: a}\n")
    remote, work = tmp_path / "gitops.git", tmp_path / "work"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    subprocess.run(["git", "clone", "-q", str(remote), str(work)], check=True, capture_output=True)
    _commit(work, "release: {id: a}\n")
    monkeypatch.setenv("PIPELINE_GITOPS_REPO", str(remote))
    before = _key(root, tmp_path)
    (root / "environments" / "dev" / "release.yaml").write_text("release: {id: b}\n")
    assert _key(root, tmp_path) == before  # the tree's copy is not the baseline
    _commit(work, "release: {id: b}\n")
    moved = _key(root, tmp_path)
    assert moved != before  # dev was promoted: the verdict against its model is re-judged
    # An explicit baseline does not depend on the remote.
    opts = stage.EvalOptions(baseline=str(tmp_path / "base"))
    ctx = RunContext(run_dir=tmp_path / "run", repo_root=root)
    explicit = ci.stage_cache_key("eval", stage, opts, ci._jsonable(opts), ctx, InputHasher(tmp_path / "idx"), "h")
    _commit(work, "release: {id: c}\n")
    assert ci.stage_cache_key("eval", stage, opts, ci._jsonable(opts), ctx, InputHasher(tmp_path / "idx"), "h") == (
        explicit
    )


def test_without_a_remote_the_trees_envs_seed_the_baseline_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPELINE_GITOPS_REPO", raising=False)
    root = _tree(tmp_path / "repo")
    (root / "environments" / "dev").mkdir(parents=True)
    (root / "environments" / "dev" / "release.yaml").write_text("release: {id: a}\n")
    before = _key(root, tmp_path)
    (root / "environments" / "dev" / "release.yaml").write_text("release: {id: b}\n")
    assert _key(root, tmp_path) != before  # remote_for_reading would seed from these files
