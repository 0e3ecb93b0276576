"""Rollbacks ship exactly the pins (issue #13 item 2): a prod rollback restores the previous release's
pins and values as they were at its promotion, nothing else from the branch; promote and rollback
print the values diff they ship and record it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pipeline.core.context import RunContext
from pipeline.core.result import Status
from pipeline.gitops import promotion as pm
from pipeline.gitops.argocd_pin import pinned_revision
from pipeline.gitops.release import Release
from pipeline.gitops.repo import GitOpsRepo, edit_yaml, git, load_yaml_text
from pipeline.stages import promote, rollback
from tests.promotion.conftest import ci_evidence, clone, commit_by_hand, prod_local_options
from tests.rollback.conftest import WEEKDAY, to_prod

VALUES = "environments/prod/values.yaml"


def hand_edit_max_replicas(remote: str, tmp_path: Path, value: int) -> None:
    """Someone edits prod's values on the branch without promoting (the hand edit of the issue)."""
    repo = clone(remote, tmp_path, f"edit-{value}")
    edit_yaml(repo.file(VALUES), {("autoscaling", "maxReplicas"): value}, VALUES)
    commit_by_hand(repo, f"prod: maxReplicas {value}")


def values_at(repo: GitOpsRepo, rev: str) -> dict[str, object]:
    return dict(json.loads(json.dumps(load_yaml_text(git("show", f"{rev}:{VALUES}", cwd=repo.path), VALUES))))


def test_prod_rollback_ships_the_previous_pins_and_values_not_the_branch_edit(
    remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    v1, v2 = make_release(1, images_built=False), make_release(2, images_built=False)
    hand_edit_max_replicas(remote, tmp_path, 12)
    to_prod(remote, tmp_path, v1, 1)
    to_prod(remote, tmp_path, v2, 2)
    hand_edit_max_replicas(remote, tmp_path, 40)
    res = rollback.run(
        rollback.RollbackOptions(env="prod", reason="5xx", actor="oncall", gitops_repo=remote),
        RunContext(run_dir=tmp_path / "rb"),
    )
    assert res.status is Status.PASSED, res.checks
    repo = clone(remote, tmp_path, "after")
    pin = pinned_revision(repo, "prod")
    assert pin == res.evidence["commit"]
    # What Argo CD now syncs: v1's pins and v1's values (12), not the unpromoted 40.
    assert values_at(repo, pin)["autoscaling"] == {"maxReplicas": 12}
    assert pm.read_release(repo, "prod") == v1
    # Printed and recorded: nothing changes for the cluster's values; the branch edit is undone, by name.
    values = next(c for c in res.checks if c.name == "values")
    assert "no values change" in values.detail and "autoscaling.maxReplicas: 40 → 12" in values.detail
    commit = repo.log(pm.release_path("prod"), limit=1)[0]
    assert commit.trailer_all("Values-Branch-Change") == ["autoscaling.maxReplicas: 40 → 12"]
    assert commit.trailer("Values-Against") == str(res.evidence["values_diff"]["against"])


def test_dev_rollback_restores_the_values_of_the_restored_promotion(
    remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    ctx = RunContext(run_dir=tmp_path / "r")
    for n in (1, 2):
        rel = make_release(n)
        assert promote.run(
            promote.PromoteOptions(to="dev", release=rel, evidence=ci_evidence(rel=rel), gitops_repo=remote), ctx
        ).ok
    repo = clone(remote, tmp_path, "e")
    edit_yaml(repo.file("environments/dev/values.yaml"), {("replicaCount",): 5}, "values.yaml")
    commit_by_hand(repo, "dev: 5 replicas")
    res = rollback.run(rollback.RollbackOptions(env="dev", gitops_repo=remote), RunContext(run_dir=tmp_path / "rb"))
    assert res.ok
    after = clone(remote, tmp_path, "after")
    assert load_yaml_text(after.file("environments/dev/values.yaml").read_text(), "v")["replicaCount"] == 1
    # dev follows the branch: the cluster ran 5, the rollback ships 1 — shown as a values change.
    assert res.evidence["values_diff"]["changes"] == ["replicaCount: 5 → 1"]


def test_prod_promotion_prints_and_records_the_values_it_ships(
    remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    v1, v2 = make_release(1, images_built=False), make_release(2, images_built=False)
    hand_edit_max_replicas(remote, tmp_path, 12)
    to_prod(remote, tmp_path, v1, 1)
    hand_edit_max_replicas(remote, tmp_path, 40)
    ctx = RunContext(run_dir=tmp_path / "p2")
    assert promote.run(
        promote.PromoteOptions(to="dev", release=v2, evidence=ci_evidence(rel=v2), gitops_repo=remote), ctx
    ).ok
    assert promote.run(promote.PromoteOptions(to="staging", gitops_repo=remote, policy_profile="local"), ctx).ok
    res = promote.run(prod_local_options(remote, now=WEEKDAY), ctx)
    assert res.status is Status.PASSED, res.checks
    values = next(c for c in res.checks if c.name == "values")
    assert "autoscaling.maxReplicas: 12 → 40" in values.detail
    repo = clone(remote, tmp_path, "after")
    commit = repo.log(pm.release_path("prod"), limit=1)[0]
    assert commit.trailer_all("Values-Change") == ["autoscaling.maxReplicas: 12 → 40"]
    evidence = json.loads(repo.file(pm.evidence_path("prod", v2.id)).read_text())
    assert evidence["promotions"][-1]["values_shipped"]["changes"] == ["autoscaling.maxReplicas: 12 → 40"]
