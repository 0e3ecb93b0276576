"""rollback/unfreeze/status: a revert commit (no history rewrite), reason recorded, env frozen."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.commands import status, unfreeze
from pipeline.core.context import RunContext
from pipeline.core.result import Status
from pipeline.gitops import promotion as pm
from pipeline.gitops.release import Release
from pipeline.gitops.repo import GitOpsRepo, git
from pipeline.stages import promote, rollback
from tests.rollback.conftest import promote_chain


def fresh(remote: str, tmp_path: Path, name: str = "check") -> GitOpsRepo:
    repo = GitOpsRepo(remote, tmp_path / name)
    repo.sync()
    return repo


def test_rollback_reverts_last_promotion_records_reason_and_freezes(
    remote: str, tmp_path: Path, v1_v2: tuple[Release, Release]
) -> None:
    v1, v2 = v1_v2
    before = fresh(remote, tmp_path, "before")
    bad_promotion = before.log(pm.release_path("staging"), limit=1)[0].sha
    res = rollback.run(
        rollback.RollbackOptions(env="staging", reason="p99 too high", actor="oncall", gitops_repo=remote),
        RunContext(run_dir=tmp_path / "rb"),
    )
    assert res.status is Status.PASSED, res.checks
    repo = fresh(remote, tmp_path)
    assert pm.read_release(repo, "staging") == v1
    assert pm.read_release(repo, "dev") == v2  # other envs untouched
    head = repo.log(limit=1)[0]
    assert head.subject == f"rollback(staging): {v2.id} → {v1.id}"
    assert head.trailer("Reverts") == bad_promotion
    assert head.trailer("Rollback-Reason") == "p99 too high"
    assert head.trailer("Frozen") == "true"
    assert f"This reverts commit {bad_promotion}." in head.body
    freeze = pm.read_freeze(repo, "staging")
    assert freeze.frozen and freeze.by == "oncall" and freeze.reason == "p99 too high"
    # No history rewrite: the bad promotion is still an ancestor; evidence of what ran is kept.
    git("merge-base", "--is-ancestor", bad_promotion, "HEAD", cwd=repo.path)
    assert repo.file(pm.evidence_path("staging", v2.id)).exists()


def test_frozen_env_refuses_promotion_until_unfrozen(
    remote: str, tmp_path: Path, v1_v2: tuple[Release, Release]
) -> None:
    ctx = RunContext(run_dir=tmp_path / "r")
    assert rollback.run(rollback.RollbackOptions(env="staging", gitops_repo=remote), ctx).ok
    res = promote.run(promote.PromoteOptions(to="staging", gitops_repo=remote, policy_profile="local"), ctx)
    assert res.status is Status.FAILED and any("is frozen" in c.detail for c in res.checks)
    assert unfreeze.unfreeze(GitOpsRepo(remote, tmp_path / "u"), "staging", "lead", "fixed") is not None
    assert unfreeze.unfreeze(GitOpsRepo(remote, tmp_path / "u2"), "staging", "lead") is None  # idempotent
    head = fresh(remote, tmp_path, "h").log(limit=1)[0]
    assert head.trailer("Unfrozen-By") == "lead"
    assert promote.run(promote.PromoteOptions(to="staging", gitops_repo=remote, policy_profile="local"), ctx).ok


def test_nothing_to_roll_back_to_is_refused(remote: str, tmp_path: Path, make_release: Callable[..., Release]) -> None:
    promote_chain(remote, tmp_path, [make_release(1)])
    head = fresh(remote, tmp_path, "before").head()
    res = rollback.run(rollback.RollbackOptions(env="staging", gitops_repo=remote), RunContext(run_dir=tmp_path / "r"))
    assert res.status is Status.FAILED and "nothing to roll back to" in res.summary
    res = rollback.run(rollback.RollbackOptions(env="prod", gitops_repo=remote), RunContext(run_dir=tmp_path / "r2"))
    assert res.status is Status.FAILED and "no promotion left to revert" in res.summary
    assert fresh(remote, tmp_path).head() == head


def test_rollback_to_an_older_commit_reverts_every_later_promotion(
    remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    v1, v2, v3 = make_release(1), make_release(2), make_release(3)
    promote_chain(remote, tmp_path, [v1, v2, v3])
    repo = fresh(remote, tmp_path, "before")
    v1_commit = next(c.sha for c in repo.log(pm.release_path("staging")) if c.trailer("Release-Id") == v1.id)
    res = rollback.run(
        rollback.RollbackOptions(env="staging", to=v1_commit, gitops_repo=remote), RunContext(run_dir=tmp_path / "r")
    )
    assert res.status is Status.PASSED, res.summary
    after = fresh(remote, tmp_path)
    assert pm.read_release(after, "staging") == v1
    assert len(after.log(limit=1)[0].trailer("Reverts").split()) == 2


def test_status_reports_pins_who_evidence_and_freeze(
    remote: str, tmp_path: Path, v1_v2: tuple[Release, Release]
) -> None:
    _, v2 = v1_v2
    rollback.run(
        rollback.RollbackOptions(env="dev", reason="drill", actor="oncall", gitops_repo=remote),
        RunContext(run_dir=tmp_path / "r"),
    )
    rows = {r["env"]: r for r in status.collect(fresh(remote, tmp_path))}
    assert rows["staging"]["release"] == v2.id and rows["staging"]["gates"]["smoke"] == "passed"
    assert rows["staging"]["evidence"] == pm.evidence_path("staging", v2.id)
    assert rows["dev"]["frozen"]["frozen"] and rows["dev"]["by"] == "oncall"
    assert rows["prod"]["release"] is None
