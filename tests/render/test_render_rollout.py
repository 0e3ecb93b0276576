"""render over the Argo Rollouts objects: valid for every env; a bad condition, a pod budget overrun and an
invalid Rollout field each fail naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.result import Status
from tests.render.conftest import FAST, RenderFn, edit, failure_text

pytestmark = pytest.mark.slow


def test_rollout_checks_pass_for_every_env(repo_copy: Path, run_render: RenderFn) -> None:
    result = run_render(repo_copy, ["all"], skip=FAST)
    checks = {c.name: c for c in result.checks}
    for env in ("dev", "staging", "prod"):
        assert checks[f"rollout {env}"].status is Status.PASSED
        assert checks[f"crd schema {env}"].status is Status.PASSED
    assert result.status is not Status.FAILED, failure_text(result)
    rendered = (repo_copy.parent / "out" / "prod" / "manifests.yaml").read_text()
    assert "kind: Rollout" in rendered and "kind: AnalysisTemplate" in rendered


def test_condition_not_of_the_allowed_form_is_refused(repo_copy: Path, run_render: RenderFn) -> None:
    edit(
        repo_copy / "charts/llm-service/values.yaml",
        "        successCondition: result[0] <= 1.5\n",
        "        successCondition: result[0] <= 1.5 || isNaN(result[0])\n",
    )
    result = run_render(repo_copy, ["prod"], skip=FAST)
    assert result.status is Status.FAILED
    failed = {c.name: c.detail for c in result.failures()}
    assert "rollout prod" in failed, failure_text(result)
    assert "metric ttft-p95-ratio" in failed["rollout prod"]
    assert "'result[0] <= 1.5 || isNaN(result[0])'" in failed["rollout prod"]


def test_gateway_api_canary_beyond_the_surge_budget_is_refused(repo_copy: Path, run_render: RenderFn) -> None:
    edit(
        repo_copy / "environments/prod/values.yaml",
        "rollout:\n  enabled: true\n",
        "rollout:\n  enabled: true\n  surge: 1\n",
    )
    result = run_render(repo_copy, ["prod"], skip=FAST)
    failed = {c.name: c.detail for c in result.failures()}
    assert "rollout prod" in failed, failure_text(result)
    assert "exceed replicas + surge budget 1" in failed["rollout prod"]


def test_invalid_rollout_field_fails_the_crd_schema(repo_copy: Path, run_render: RenderFn) -> None:
    edit(
        repo_copy / "charts/llm-service/templates/rollout-llm.yaml",
        "      maxSurge: {{ $r.surge }}\n",
        "      maxSurge: {{ $r.surge }}\n      maxSurges: 1\n",
    )
    result = run_render(repo_copy, ["staging"], skip=FAST)
    failed = {c.name: c.detail for c in result.failures()}
    assert "crd schema staging" in failed, failure_text(result)
    assert "Rollout" in failed["crd schema staging"] and "maxSurges" in failed["crd schema staging"]
