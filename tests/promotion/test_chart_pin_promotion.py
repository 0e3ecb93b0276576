"""A promotion carries the chart pin (version + digest), and Argo CD's generated app follows it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.checks import validate
from pipeline.core.context import RunContext
from pipeline.core.result import Status
from pipeline.gitops import promotion as pm
from pipeline.gitops.release import Release
from pipeline.gitops.repo import GitOpsRepo, load_yaml_text
from pipeline.stages import promote
from tests.promotion.conftest import APPSET, ci_evidence

CHART_DIGEST = "sha256:" + "d" * 64


def test_promotion_copies_the_chart_pin_and_the_generated_app_pulls_it(
    remote: str, ctx: RunContext, make_release: Callable[..., Release], tmp_path: Path
) -> None:
    rel = make_release(3).model_copy(update={"chart_version": "0.1.0-g0000003", "chart_digest": CHART_DIGEST})
    dev = promote.PromoteOptions(to="dev", release=rel, evidence=ci_evidence(rel=rel), gitops_repo=remote)
    assert promote.run(dev, ctx).status is Status.PASSED
    res = promote.run(promote.PromoteOptions(to="staging", gitops_repo=remote, policy_profile="local"), ctx)
    assert res.status is Status.PASSED, res.checks

    repo = GitOpsRepo(remote, tmp_path / "check")
    repo.sync()
    for env in ("dev", "staging"):
        pinned = pm.read_release(repo, env)
        assert pinned == rel, env  # chart version and digest included
    # The ApplicationSet (files generator over environments/*/release.yaml) generates exactly that pin.
    appset = load_yaml_text(repo.file(APPSET).read_text(), APPSET)
    apps = {a["metadata"]["name"]: a for a in validate.expand_applicationset(appset, repo.path)}
    for env in ("dev", "staging"):
        chart_src = apps[f"llm-service-{env}"]["spec"]["sources"][0]
        assert (chart_src["chart"], chart_src["targetRevision"]) == ("llm-service", "0.1.0-g0000003")
    # prod was never promoted: no generator reads it yet, so no prod Application (issue 20).
    assert "llm-service-prod" not in apps
