"""`eval --env ENV` compares with the model ENV runs in the GitOps remote promotion reads, not the tree's copy.

The promotion rule checks the eval's baseline against what the remote pins, so an eval against the
tree's `environments/<env>/release.yaml` (the seed, no artifact) would vouch for nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.context import RunContext
from pipeline.core.result import Status
from pipeline.gitops import repo as gitops
from pipeline.gitops.release import Release
from pipeline.models import eval_gate
from pipeline.stages import eval as eval_stage
from tests.promotion.model_fixtures import eval_result, to_dev, with_model

REPO = Path(__file__).resolve().parents[2]


def test_the_baseline_is_the_artifact_the_remote_pins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote = str(gitops.ensure_local_remote(tmp_path / "gitops.git", REPO))
    rel = with_model(
        Release(
            id="0.2.0+g0000002",
            commit="2" * 40,
            chart_version="0.1.0",
            gateway_digest="sha256:" + "a" * 64,
            vllm_digest="sha256:" + "b" * 64,
            model_revision="r",
        ),
        "m2",
    )
    assert to_dev(remote, tmp_path / "seed", rel, {"eval": eval_result(rel, None)}).status is Status.PASSED
    monkeypatch.setenv("PIPELINE_GITOPS_REPO", remote)
    # Pulling needs an engine and a registry: record what would be pulled instead (the seam under test
    # is which reference and which expected content digest the env's release yields).
    pulled: list[tuple[str, str | None]] = []

    def pull(ref: str, out: Path, expected: str | None, label: str) -> eval_gate.ModelSpec:
        pulled.append((ref, expected))
        return eval_gate.ModelSpec(path=out, content_digest=str(expected), source=ref, label=label)

    monkeypatch.setattr(eval_stage, "_pull", pull)
    ctx = RunContext(run_dir=tmp_path / "run", repo_root=REPO)  # the tree's dev pins no artifact
    spec, why = eval_stage._env_baseline("dev", tmp_path / "work", ctx)
    assert pulled == [(rel.model_artifact, rel.model_content_digest)]
    assert spec is not None and spec.content_digest == rel.model_content_digest and str(rel.model_artifact) in why
    # staging has no model artifact in the remote yet: floor only, nothing pulled.
    spec, why = eval_stage._env_baseline("staging", tmp_path / "work", ctx)
    assert spec is None and "floor-only" in why and len(pulled) == 1


def test_an_unreachable_remote_is_a_setup_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_GITOPS_REPO", str(tmp_path / "missing.git"))
    ctx = RunContext(run_dir=tmp_path / "run", repo_root=REPO)
    with pytest.raises(eval_gate.EvalSetupError, match=r"missing\.git:environments/dev/release\.yaml"):
        eval_stage._env_baseline("dev", tmp_path / "work", ctx)
