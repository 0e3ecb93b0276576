"""The prod pin: promotions and rollbacks of prod move the ApplicationSet's prodRevision in the same push."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipeline.commands import status
from pipeline.controller.app import create_app
from pipeline.controller.config import ControllerConfig
from pipeline.core.context import RunContext
from pipeline.core.result import StageResult, Status
from pipeline.gitops import promotion as pm
from pipeline.gitops.argocd_pin import pin_status, pinned_revision, set_pinned_revision
from pipeline.gitops.release import Release
from pipeline.gitops.repo import GitOpsError, GitOpsRepo, git, load_yaml_text
from pipeline.stages import promote, rollback
from tests.promotion.conftest import APPSET, ci_evidence, clone, commit_by_hand, prod_local_options


def to_prod(remote: str, tmp_path: Path, rel: Release, n: int) -> StageResult:
    ctx = RunContext(run_dir=tmp_path / f"p{n}")
    dev = promote.PromoteOptions(to="dev", release=rel, evidence=ci_evidence(rel=rel), gitops_repo=remote)
    assert promote.run(dev, ctx).ok
    assert promote.run(promote.PromoteOptions(to="staging", gitops_repo=remote, policy_profile="local"), ctx).ok
    res = promote.run(prod_local_options(remote), ctx)
    assert res.status is Status.PASSED, res.checks
    return res


def release_at(repo: GitOpsRepo, rev: str) -> Release:
    text = git("show", f"{rev}:{pm.release_path('prod')}", cwd=repo.path)
    return Release.from_values(json.loads(json.dumps(load_yaml_text(text, "release.yaml"), default=str)))


def changed_lines(repo: GitOpsRepo, a: str, b: str, rel: str) -> list[tuple[str, str]]:
    old = git("show", f"{a}:{rel}", cwd=repo.path).splitlines(keepends=True)
    new = git("show", f"{b}:{rel}", cwd=repo.path).splitlines(keepends=True)
    assert len(old) == len(new)
    return [(x, y) for x, y in zip(old, new, strict=True) if x != y]


def test_prod_promotion_pins_the_promotion_commit_in_the_same_push(
    remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    v1 = make_release(1, images_built=False)
    res = to_prod(remote, tmp_path, v1, 1)
    promotion = str(res.evidence["commit"])
    repo = clone(remote, tmp_path, "after")
    # HEAD = the pin commit, its parent = the promotion: one push carried both.
    assert repo.head() == res.evidence["pin_commit"]
    assert git("rev-parse", "HEAD^", cwd=repo.path).strip() == promotion
    assert pinned_revision(repo, "prod") == promotion
    # The pinned commit carries the new prod pins.
    assert release_at(repo, promotion) == v1
    # The first pin commit appends prod's generator to the ApplicationSet (a fresh repo has none: issue 20)
    # with both pin lines (its revision, so the chart version is read at the pin, and the `$values`
    # revision) at the promotion, and changes nothing else.
    assert git("show", "--name-only", "--format=", "HEAD", cwd=repo.path).split() == [APPSET]
    diff = git("diff", "-U0", "HEAD^", "HEAD", "--", APPSET, cwd=repo.path).splitlines()
    assert not [line for line in diff if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff if line.startswith("+") and not line.startswith("+++")]
    assert f'        revision: "{promotion}"' in added and f'          prodRevision: "{promotion}"' in added
    pin = repo.log(limit=1)[0]
    assert pin.trailer("Pinned-Revision") == promotion and pin.trailer("Previous-Revision") == "none"
    assert pin.trailer("Pinned-By") == "rm" and not pin.trailer("Promote-To")
    # status: the prod row shows the pin and that it matches; dev/staging follow the branch.
    rows = {r["env"]: r["argocd_revision"] for r in status.collect(repo)}
    assert rows["prod"]["revision"] == promotion and rows["prod"]["matches"] is True
    assert rows["staging"] == {"mode": "branch", "revision": "main", "matches": True, "detail": "follows main"}
    # dev/staging promotions never move the pin.
    assert git("log", "--format=%s", "--", APPSET, cwd=repo.path).splitlines()[0].startswith("pin(prod)")
    assert len(git("log", "--format=%H", "--", APPSET, cwd=repo.path).split()) == 2  # seed + this pin


def test_prod_rollback_pins_the_revert_commit(
    remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    v1, v2 = make_release(1, images_built=False), make_release(2, images_built=False)
    to_prod(remote, tmp_path, v1, 1)
    second = str(to_prod(remote, tmp_path, v2, 2).evidence["commit"])
    assert pinned_revision(clone(remote, tmp_path, "mid"), "prod") == second
    res = rollback.run(
        rollback.RollbackOptions(env="prod", reason="p99", actor="oncall", gitops_repo=remote),
        RunContext(run_dir=tmp_path / "rb"),
    )
    assert res.status is Status.PASSED, res.summary
    revert = str(res.evidence["commit"])
    repo = clone(remote, tmp_path, "after")
    assert pinned_revision(repo, "prod") == revert
    assert repo.head() == res.evidence["pin_commit"]
    assert release_at(repo, revert) == v1
    assert repo.log(pm.release_path("prod"), limit=1)[0].trailer("Reverts") == second
    assert changed_lines(repo, "HEAD^", "HEAD", APPSET) == [
        (f'        revision: "{second}"\n', f'        revision: "{revert}"\n'),
        (f'          prodRevision: "{second}"\n', f'          prodRevision: "{revert}"\n'),
    ]
    assert pin_status(repo, "prod")["matches"] is True


def test_controller_rollback_of_prod_moves_the_pin(
    remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    from tests.rollback.conftest import TOKEN, alert_payload

    to_prod(remote, tmp_path, make_release(1, images_built=False), 1)
    to_prod(remote, tmp_path, make_release(2, images_built=False), 2)
    cfg = ControllerConfig(gitops_repo=remote, work_root=tmp_path / "ctl", bearer_token=TOKEN)
    with TestClient(create_app(cfg)) as client:
        resp = client.post("/webhook", json=alert_payload(env="prod"), headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 200, resp.text
    (result,) = resp.json()["results"]
    assert result["outcome"] == "rolled_back", result
    repo = clone(remote, tmp_path, "after")
    assert pinned_revision(repo, "prod") == result["commit"]
    assert repo.head() == result["pin_commit"]
    assert release_at(repo, result["commit"]) == make_release(1, images_built=False)


def test_status_reports_a_pin_behind_the_branch(
    remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    # The seed has no prod generator (nothing promoted): reported as such.
    assert pin_status(clone(remote, tmp_path, "seed"), "prod") == {
        "mode": "pinned",
        "revision": None,
        "matches": False,
        "detail": "no prod generator yet: nothing promoted, Argo CD generates no Application",
    }
    to_prod(remote, tmp_path, make_release(1, images_built=False), 1)
    repo = clone(remote, tmp_path, "writer")
    # Someone changes prod's values on the branch by hand: Argo CD (pinned) does not see it.
    values = repo.file("environments/prod/values.yaml")
    values.write_text(values.read_text() + "extra: 1\n")
    commit_by_hand(repo, "hand edit", push=False)
    state = pin_status(repo, "prod")
    assert state["matches"] is False and "values.yaml changed on main" in state["detail"]
    assert pin_status(clone(remote, tmp_path, "fresh"), "prod")["detail"].startswith("pins at ")


def test_prod_promotion_without_the_applicationset_pushes_nothing(
    remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    repo = clone(remote, tmp_path, "writer")
    git("rm", "-q", APPSET, cwd=repo.path)
    commit_by_hand(repo, "drop appset")
    ctx = RunContext(run_dir=tmp_path / "p")
    rel = make_release(1, images_built=False)
    assert promote.run(
        promote.PromoteOptions(to="dev", release=rel, evidence=ci_evidence(rel=rel), gitops_repo=remote), ctx
    ).ok
    assert promote.run(promote.PromoteOptions(to="staging", gitops_repo=remote, policy_profile="local"), ctx).ok
    before = clone(remote, tmp_path, "before").head()
    res = promote.run(prod_local_options(remote, approvers=["a", "b"], actor=None), ctx)
    assert res.status is Status.FAILED
    assert f"{APPSET}: missing" in res.checks[-1].detail and "nothing pushed" in res.checks[-1].detail
    assert clone(remote, tmp_path, "after").head() == before


def test_pin_edit_refuses_to_reformat_other_lines(remote: str, tmp_path: Path) -> None:
    repo = clone(remote, tmp_path, "w")
    path = repo.file(APPSET)
    # A hand-formatted line ruamel would normalize: the edit must not silently rewrite it.
    path.write_text(path.read_text().replace("branch: main", "branch:    main"))
    original = path.read_text()
    with pytest.raises(GitOpsError, match="would change other lines"):
        set_pinned_revision(repo, "prod", "a" * 40)
    assert path.read_text() == original
