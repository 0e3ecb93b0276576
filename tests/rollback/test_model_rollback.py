"""Model-only rollback: reverting a promotion that changed only the model restores the previous
model artifact pins byte for byte — by hand (`rollback`) and automatically (an error burst the
gateway attributes to the release, e.g. vLLM failing on the new model, fires the rollback alert)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.gateway import metrics
from pipeline.controller.app import create_app
from pipeline.controller.config import ControllerConfig
from pipeline.core.context import RunContext
from pipeline.core.result import Status
from pipeline.gitops import promotion as pm
from pipeline.gitops.argocd_pin import pinned_revision
from pipeline.gitops.release import Release
from pipeline.gitops.repo import GitOpsRepo, git
from pipeline.stages import promote, rollback
from tests.promotion.conftest import clone, prod_local_options
from tests.promotion.model_fixtures import eval_result, to_dev, with_model
from tests.rollback.conftest import TOKEN, WEEKDAY
from tests.rollback.test_release_aware import labelled


def artifact_block(text: str) -> list[str]:
    """The lines of release.yaml from `model:` to its end (revision + artifact pins), byte for byte."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip() == "model:")
    return lines[start:]


def promote_model_chain(remote: str, tmp_path: Path, v1: Release, v2: Release, *, to_prod: bool) -> dict[str, str]:
    """v1 (model a) then v2 (same images, model b) through dev → staging (→ prod); returns release.yaml
    of each env as it was with v1, before v2 arrived."""
    c = RunContext(run_dir=tmp_path / "chain")
    envs = ["staging", "prod"] if to_prod else ["staging"]
    before: dict[str, str] = {}
    for rel, evals in ((v1, {"eval": eval_result(v1, None)}), (v2, {"eval": eval_result(v2, v1)})):
        if rel is v2:
            repo = clone(remote, tmp_path, "before")
            before = {env: repo.file(pm.release_path(env)).read_text() for env in envs}
        assert to_dev(remote, tmp_path / f"dev-{rel.id}", rel, evals).ok
        for env in envs:
            opts = (
                prod_local_options(remote, now=WEEKDAY)
                if env == "prod"
                else promote.PromoteOptions(to=env, gitops_repo=remote, policy_profile="local")
            )
            res = promote.run(opts, c)
            assert res.ok, res.checks
    return before


@pytest.fixture
def v1_v2(make_release: Callable[..., Release]) -> tuple[Release, Release]:
    v1 = with_model(make_release(1, images_built=False), "a")
    return v1, with_model(v1, "b", n=2)


def test_rollback_of_a_model_only_promotion_restores_the_model_pins_byte_for_byte(
    remote: str, tmp_path: Path, v1_v2: tuple[Release, Release]
) -> None:
    v1, v2 = v1_v2
    before = promote_model_chain(remote, tmp_path, v1, v2, to_prod=True)
    promoted = clone(remote, tmp_path, "promoted")
    assert pm.read_release(promoted, "prod") == v2
    assert f"contentDigest: {v1.model_content_digest}" in before["prod"]
    assert artifact_block(promoted.file(pm.release_path("prod")).read_text()) != artifact_block(before["prod"])

    res = rollback.run(
        rollback.RollbackOptions(env="prod", reason="model answers wrong", actor="oncall", gitops_repo=remote),
        RunContext(run_dir=tmp_path / "rb"),
    )
    assert res.status is Status.PASSED, res.checks
    repo = clone(remote, tmp_path, "after")
    after = repo.file(pm.release_path("prod")).read_text()
    assert after == before["prod"]  # the whole file: the model artifact pins and everything else
    assert pm.read_release(repo, "prod") == v1
    # What Argo CD syncs (the prod pin) is that exact file.
    pin = pinned_revision(repo, "prod")
    assert pin == res.evidence["commit"]
    assert git("show", f"{pin}:{pm.release_path('prod')}", cwd=repo.path) == before["prod"]
    commit = repo.log(pm.release_path("prod"), limit=1)[0]
    assert commit.trailer("Model-Content-Digest") == v1.model_content_digest
    assert commit.trailer("Model-Digest") == v1.model_digest
    assert f"Model: content digest {v2.model_content_digest} → {v1.model_content_digest}" in commit.body
    assert pm.read_release(repo, "staging") == v2  # only prod was rolled back


@pytest.fixture
def client(remote: str, tmp_path: Path) -> Iterator[TestClient]:
    cfg = ControllerConfig(gitops_repo=remote, work_root=tmp_path / "ctl", bearer_token=TOKEN)
    with TestClient(create_app(cfg)) as c:
        yield c


def test_an_error_burst_from_the_new_model_rolls_back_to_the_previous_model(
    client: TestClient, remote: str, tmp_path: Path, v1_v2: tuple[Release, Release]
) -> None:
    v1, v2 = v1_v2
    before = promote_model_chain(remote, tmp_path, v1, v2, to_prod=False)
    # vLLM failing on the new model reaches clients as the gateway's 502 upstream_error: cause "release".
    cause = metrics.cause(502, "upstream_error")
    assert cause == metrics.CAUSE_RELEASE
    resp = client.post("/webhook", json=labelled(v2.id, cause=cause), headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 200 and [r["outcome"] for r in resp.json()["results"]] == ["rolled_back"]
    repo = GitOpsRepo(remote, tmp_path / "after")
    repo.sync()
    assert repo.file(pm.release_path("staging")).read_text() == before["staging"]
    assert pm.read_release(repo, "staging") == v1 and pm.read_freeze(repo, "staging").frozen
    commit = repo.log(limit=1)[0]
    assert commit.trailer("Rollback-Trigger") == "alert" and commit.trailer("Alert-Release") == v2.id
    assert commit.trailer("Model-Content-Digest") == v1.model_content_digest
