"""Model-only promotion: a release whose model content digest differs from the target env's needs a
passed eval of that model against the env's (policies/promotion.rego, and the promote stage's own
check); promote shows the model diff beside the values diff; status shows each env's model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.commands import status
from pipeline.core.context import RunContext
from pipeline.core.result import Status
from pipeline.gitops import promotion as pm
from pipeline.gitops.release import Release
from pipeline.gitops.repo import edit_yaml, git
from pipeline.stages import promote
from tests.cli.conftest import Ran, cli_env, run_cli  # noqa: F401 (fixtures)
from tests.promotion.conftest import clone, commit_by_hand
from tests.promotion.model_fixtures import eval_result, to_dev, with_model

MODEL_ID = "acme/tiny-chat"


def head_of(remote: str) -> str:
    return git("ls-remote", remote, "refs/heads/main").split()[0]


def denials(res: promote.StageResult) -> list[str]:
    return [c.detail for c in res.checks if c.status is Status.FAILED]


@pytest.fixture
def model_in_values(remote: str, tmp_path: Path) -> str:
    """The envs' chart values name the model id (as environments/<env>/values.yaml do, from platform.yaml)."""
    repo = clone(remote, tmp_path, "values")
    for env in pm.ENVS:
        path = f"environments/{env}/values.yaml"
        edit_yaml(repo.file(path), {("vllm", "model", "id"): MODEL_ID}, path)
    commit_by_hand(repo, "values: model id")
    return remote


@pytest.fixture
def v1_v2(model_in_values: str, tmp_path: Path, make_release: Callable[..., Release]) -> tuple[Release, Release]:
    """v1 serves model `a` in dev and staging; v2 is the same images with model `b` (a model-only release)."""
    v1 = with_model(make_release(1), "a")
    assert to_dev(model_in_values, tmp_path / "v1", v1, {"eval": eval_result(v1, None)}).ok
    staging = promote.PromoteOptions(to="staging", gitops_repo=model_in_values, policy_profile="local")
    assert promote.run(staging, RunContext(run_dir=tmp_path / "v1s")).ok
    return v1, with_model(v1, "b", n=2)


def test_a_first_model_artifact_needs_a_floor_only_eval(
    remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    v1 = with_model(make_release(1), "a")
    before = head_of(remote)
    refused = to_dev(remote, tmp_path / "r1", v1)
    assert refused.status is Status.FAILED
    assert any(f"from content digest none to {v1.model_content_digest}" in d for d in denials(refused)), refused.checks
    assert head_of(remote) == before  # nothing pushed

    done = to_dev(remote, tmp_path / "r2", v1, {"eval": eval_result(v1, None)})
    assert done.ok, done.checks
    head = clone(remote, tmp_path).log(limit=1)[0]
    assert head.trailer("Model-Content-Digest") == v1.model_content_digest
    assert head.trailer("Model-Digest") == v1.model_digest


def test_a_model_only_release_promotes_with_an_eval_against_the_env_model(
    v1_v2: tuple[Release, Release], remote: str, tmp_path: Path
) -> None:
    v1, v2 = v1_v2
    assert (v1.gateway_digest, v1.vllm_digest) == (v2.gateway_digest, v2.vllm_digest)
    res = to_dev(remote, tmp_path / "v2", v2, {"eval": eval_result(v2, v1)})
    assert res.ok, res.checks
    # The pins that moved: the release's id/commit and the model's, not one image digest.
    moved = {line.split(":")[0] for line in res.evidence["pins_diff"]}
    assert moved == {
        "release.id",
        "release.commit",
        "vllm.model.revision",
        "vllm.model.artifact.digest",
        "vllm.model.artifact.contentDigest",
    }, res.evidence["pins_diff"]
    model = next(c.detail for c in res.checks if c.name == "model")
    assert f"content digest: {v1.model_content_digest} → {v2.model_content_digest}" in model
    assert f"model id: {MODEL_ID}" in model
    assert f"eval score: 0.95 vs baseline 0.94 ({v1.model_content_digest})" in model
    # The ci eval compared with dev's model a — which staging serves too: it vouches for staging.
    staging = promote.PromoteOptions(to="staging", gitops_repo=remote, policy_profile="local")
    assert promote.run(staging, RunContext(run_dir=tmp_path / "v2s")).ok
    repo = clone(remote, tmp_path)
    assert pm.read_release(repo, "staging") == v2
    record = json.loads(repo.file(pm.evidence_path("staging", v2.id)).read_text())["promotions"][-1]["model"]
    assert record["replaces_content_digest"] == v1.model_content_digest and record["eval"]["score"] == 0.95


def test_an_eval_against_another_model_is_refused_naming_both_digests(
    v1_v2: tuple[Release, Release], remote: str, tmp_path: Path
) -> None:
    v1, v2 = v1_v2
    other = with_model(v1, "x")
    before = head_of(remote)
    res = to_dev(remote, tmp_path / "v2", v2, {"eval": eval_result(v2, other)})
    assert res.status is Status.FAILED
    [denial] = [d for d in denials(res) if "changes the model" in d]
    assert f"from content digest {v1.model_content_digest} to {v2.model_content_digest}" in denial
    assert f"eval: pass (candidate {v2.model_content_digest}, baseline {other.model_content_digest})" in denial
    assert head_of(remote) == before
    # A blocked eval against the right model does not vouch either.
    res = to_dev(remote, tmp_path / "v2b", v2, {"eval": eval_result(v2, v1, verdict="blocked", score=0.5)})
    assert res.status is Status.FAILED and any("eval: blocked" in d for d in denials(res))
    assert head_of(remote) == before


def test_the_stage_refuses_an_unvouched_model_even_if_the_policy_lost_the_rule(
    v1_v2: tuple[Release, Release], remote: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, v2 = v1_v2
    before = head_of(remote)
    monkeypatch.setattr(promote, "evaluate_policy", lambda *_: [])  # a policy file without the model rule
    res = to_dev(remote, tmp_path / "v2", v2)
    assert res.status is Status.FAILED
    assert any(f"to {v2.model_content_digest}: no passed eval" in d for d in denials(res)), res.checks
    assert head_of(remote) == before


def test_a_release_without_an_artifact_cannot_replace_a_verified_model(
    v1_v2: tuple[Release, Release], remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    v1, _ = v1_v2
    res = to_dev(remote, tmp_path / "hub", make_release(3))
    assert res.status is Status.FAILED
    assert any(f"serves model content digest {v1.model_content_digest}" in d for d in denials(res))


def test_status_and_dry_run_show_the_model(
    v1_v2: tuple[Release, Release],
    remote: str,
    tmp_path: Path,
    run_cli: Callable[..., Ran],  # noqa: F811
) -> None:
    v1, v2 = v1_v2
    assert to_dev(remote, tmp_path / "v2", v2, {"eval": eval_result(v2, v1, score=0.975)}).ok

    rows = {r["env"]: r for r in status.collect(clone(remote, tmp_path))}
    assert rows["dev"]["model"]["id"] == MODEL_ID
    assert rows["dev"]["model"]["revision"] == v2.model_revision
    assert rows["dev"]["model"]["artifact_digest"] == v2.model_digest
    assert rows["dev"]["model"]["eval"]["score"] == 0.975
    assert rows["staging"]["model"]["artifact_digest"] == v1.model_digest
    assert rows["staging"]["model"]["eval"]["score"] == 0.95 and rows["prod"]["model"]["artifact_digest"] is None

    ran = run_cli("status", "--gitops-repo", remote, "-o", "json")
    assert ran.code == 0, ran.err
    by_env = {r["env"]: r["model"] for r in ran.json()}
    assert by_env["dev"]["content_digest"] == v2.model_content_digest and by_env["dev"]["eval"]["score"] == 0.975
    table = run_cli("status", "--gitops-repo", remote)
    assert "eval 0.975" in table.out and f"artifact {v2.model_digest.removeprefix('sha256:')[:12]}" in table.out

    dry = run_cli("promote", "--to", "staging", "--dry-run", "--policy-profile", "local", "--gitops-repo", remote)
    assert dry.code == 0, dry.out + dry.err
    assert f"content digest: {v1.model_content_digest} → {v2.model_content_digest}" in dry.out
    assert "eval score: 0.975 vs baseline 0.94" in dry.out


def test_an_eval_against_the_target_model_given_with_evidence_vouches(
    v1_v2: tuple[Release, Release], remote: str, tmp_path: Path
) -> None:
    v1, v2 = v1_v2
    v3 = with_model(v1, "c", n=3)
    assert to_dev(remote, tmp_path / "v2", v2, {"eval": eval_result(v2, v1)}).ok
    assert to_dev(remote, tmp_path / "v3", v3, {"eval": eval_result(v3, v2)}).ok  # ci compared with dev's b
    staging = promote.PromoteOptions(to="staging", gitops_repo=remote, policy_profile="local")
    refused = promote.run(staging, RunContext(run_dir=tmp_path / "s1"))
    assert refused.status is Status.FAILED  # staging still serves a: the ci eval says nothing about it
    assert any(
        f"from content digest {v1.model_content_digest} to {v3.model_content_digest}" in d for d in denials(refused)
    )

    # `eval --candidate <v3's artifact> --env staging` writes its StageResult; promote takes it with --evidence.
    run_dir = tmp_path / "eval-staging"
    eval_result(v3, v1, score=0.96).write(run_dir)
    staging.extra_evidence = [run_dir / "eval.json"]
    done = promote.run(staging, RunContext(run_dir=tmp_path / "s2"))
    assert done.ok, done.checks
    assert pm.read_release(clone(remote, tmp_path), "staging") == v3
    assert "eval score: 0.96 vs baseline 0.94" in next(c.detail for c in done.checks if c.name == "model")
