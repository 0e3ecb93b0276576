"""`promote` into an env whose values enable the rollout writes the canary plan and state into git, atomically.

The GitOps remote carries the real chart and the real staging values (rollout.enabled), so the plan is
checked against what `helm template` renders for the Rollout at the promoted commit (one source).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.artifacts.chart_render import helm_template
from pipeline.core.context import RunContext
from pipeline.gitops import canary_record
from pipeline.gitops import promotion as pm
from pipeline.gitops.release import Release
from pipeline.gitops.repo import ensure_local_remote, git
from pipeline.stages import promote
from tests.promotion.conftest import REPO, ci_evidence, clone, commit_by_hand, write_envs

STAGING_RECORD = "environments/staging/rollout.yaml"


def canary_source(root: Path) -> Path:
    """write_envs + the real chart and the real staging values (which enable the rollout)."""
    write_envs(root)
    shutil.copytree(REPO / "charts" / "llm-service", root / "charts" / "llm-service")
    shutil.copy(REPO / "environments" / "staging" / "values.yaml", root / "environments" / "staging" / "values.yaml")
    return root


@pytest.fixture
def canary_remote(tmp_path: Path) -> str:
    return str(ensure_local_remote(tmp_path / "remote" / "gitops.git", canary_source(tmp_path / "src")))


def to_dev(remote: str, rel: Release, run: Path) -> None:
    opts = promote.PromoteOptions(to="dev", release=rel, evidence=ci_evidence(rel=rel), gitops_repo=remote)
    assert promote.run(opts, RunContext(run_dir=run)).ok


def to_staging(remote: str, run: Path, **kw: Any) -> Any:
    return promote.run(
        promote.PromoteOptions(to="staging", gitops_repo=remote, policy_profile="local", **kw), RunContext(run_dir=run)
    )


def changed_files(remote: str, rev: str = "main") -> set[str]:
    out = git("--git-dir", remote, "show", "--name-only", "--format=", rev)
    return {line for line in out.splitlines() if line}


def test_promotion_into_a_canary_env_writes_plan_and_state_in_the_same_commit(
    canary_remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    v1, v2 = make_release(1), make_release(2)
    to_dev(canary_remote, v1, tmp_path / "r1")
    first = to_staging(canary_remote, tmp_path / "s1")
    assert first.ok, first.checks
    # No stable release yet: Argo Rollouts deploys it at once, and the record and output say so.
    assert first.evidence["rollout"]["state"] == "initial"
    assert first.evidence["rollout"]["mode"] == "all-at-once (initial deploy)"

    to_dev(canary_remote, v2, tmp_path / "r2")
    res = to_staging(canary_remote, tmp_path / "s2")
    assert res.ok, res.checks
    ro = res.evidence["rollout"]
    assert (ro["state"], ro["from"], ro["to"], ro["mode"]) == ("progressing", v1.id, v2.id, "canary")
    detail = next(c.detail for c in res.checks if c.name == "rollout")
    assert "goes through the canary, not all at once" in detail and f"{v1.id} → {v2.id}" in detail
    assert ro["steps"] in res.summary

    # ONE commit: pins, evidence and the canary record together.
    files = changed_files(canary_remote)
    assert {"environments/staging/release.yaml", STAGING_RECORD} <= files
    assert any(f.startswith("environments/staging/evidence/") for f in files)
    head = clone(canary_remote, tmp_path, "check")
    commit = head.log("environments/staging", limit=1)[0]
    assert commit.trailer("Rollout-State") == "progressing"
    assert commit.trailer("Rollout-Steps") == ro["steps"]
    record = canary_record.read(head, "staging")
    assert record is not None
    assert record["state"] == "progressing" and record["release"] == {"from": v1.id, "to": v2.id}

    # The plan is what the Rollout and AnalysisTemplate render to at that commit (chart + env values).
    docs = [d for d in yaml.safe_load_all(helm_template(head.path, "staging")) if d]
    rollout = next(d for d in docs if d["kind"] == "Rollout")
    template = next(d for d in docs if d["kind"] == "AnalysisTemplate")
    assert record["plan"]["steps"] == rollout["spec"]["strategy"]["canary"]["steps"]
    assert record["plan"]["analysis"]["template"] == template["metadata"]["name"]
    assert [m["name"] for m in record["plan"]["analysis"]["metrics"]] == [
        m["name"] for m in template["spec"]["metrics"]
    ]
    # dev has no rollout: nothing canary about it, as before.
    assert canary_record.read(head, "dev") is None


def test_envs_without_the_rollout_keep_all_at_once(
    canary_remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    rel = make_release(1)
    opts = promote.PromoteOptions(to="dev", release=rel, evidence=ci_evidence(rel=rel), gitops_repo=canary_remote)
    res = promote.run(opts, RunContext(run_dir=tmp_path / "r"))
    assert res.ok, res.checks
    assert res.evidence["rollout"] is None
    assert "rollout" not in {c.name for c in res.checks}
    assert not any(f.endswith("rollout.yaml") for f in changed_files(canary_remote))


def test_a_refused_promotion_writes_no_canary_state(
    canary_remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    v1, v2 = make_release(1), make_release(2)
    to_dev(canary_remote, v1, tmp_path / "r1")
    assert to_staging(canary_remote, tmp_path / "s1").ok
    # staging is frozen (by hand here): the promotion is refused before anything is written.
    to_dev(canary_remote, v2, tmp_path / "r2")
    work = clone(canary_remote, tmp_path, "freeze")
    (work.path / "environments/staging/freeze.yaml").write_text("frozen: true\nby: t\nreason: incident\n")
    commit_by_hand(work, "freeze staging by hand")
    before = git("--git-dir", canary_remote, "rev-parse", "main").strip()
    res = to_staging(canary_remote, tmp_path / "s2")
    assert not res.ok
    assert git("--git-dir", canary_remote, "rev-parse", "main").strip() == before
    record = canary_record.read(clone(canary_remote, tmp_path, "after"), "staging")
    assert record is not None and record["state"] == "initial" and record["release"]["to"] == v1.id


def test_a_failed_gate_refuses_and_pushes_no_canary_state(
    canary_remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    v1, v2 = make_release(1), make_release(2)
    to_dev(canary_remote, v1, tmp_path / "r1")
    assert to_staging(canary_remote, tmp_path / "s1").ok
    to_dev(canary_remote, v2, tmp_path / "r2")
    # v2's scan gate turns out failed in dev's evidence (a re-scan found a critical CVE): staging must refuse it.
    work = clone(canary_remote, tmp_path, "rescan")
    ev = work.path / pm.evidence_path("dev", v2.id)
    bundle = json.loads(ev.read_text())
    bundle["gates"]["scan"]["status"] = "failed"
    ev.write_text(json.dumps(bundle))
    commit_by_hand(work, "re-scan of v2 failed")
    before = git("--git-dir", canary_remote, "rev-parse", "main").strip()
    res = to_staging(canary_remote, tmp_path / "s2")
    assert not res.ok
    assert any(c.name == "policy" and c.status.value == "failed" for c in res.checks), res.checks
    assert git("--git-dir", canary_remote, "rev-parse", "main").strip() == before
    record = canary_record.read(clone(canary_remote, tmp_path, "after"), "staging")
    assert record is not None and (record["state"], record["release"]["to"]) == ("initial", v1.id)


def test_steps_the_chart_would_refuse_refuse_the_promotion_and_push_nothing(
    canary_remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    to_dev(canary_remote, make_release(1), tmp_path / "r1")
    work = clone(canary_remote, tmp_path, "edit")
    path = work.path / "environments/staging/values.yaml"
    path.write_text(
        path.read_text().replace(
            "rollout:\n  enabled: true\n",
            "rollout:\n  enabled: true\n  steps:\n    - setWeight: 10\n    - experiment: {}\n",
        )
    )
    commit_by_hand(work, "a step the chart does not render")
    before = git("--git-dir", canary_remote, "rev-parse", "main").strip()
    res = to_staging(canary_remote, tmp_path / "s1")
    assert not res.ok
    assert "rollout.steps[1] must be one of setWeight, pause, analysis" in res.summary
    assert git("--git-dir", canary_remote, "rev-parse", "main").strip() == before


def test_dry_run_shows_the_canary_and_pushes_nothing(
    canary_remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    v1, v2 = make_release(1), make_release(2)
    to_dev(canary_remote, v1, tmp_path / "r1")
    assert to_staging(canary_remote, tmp_path / "s1").ok
    to_dev(canary_remote, v2, tmp_path / "r2")
    before = git("--git-dir", canary_remote, "rev-parse", "main").strip()
    res = to_staging(canary_remote, tmp_path / "s2", dry_run=True)
    assert res.ok, res.checks
    assert res.evidence["rollout"]["state"] == "progressing"
    assert any(c.name == "rollout" and "goes through the canary" in c.detail for c in res.checks)
    assert git("--git-dir", canary_remote, "rev-parse", "main").strip() == before
