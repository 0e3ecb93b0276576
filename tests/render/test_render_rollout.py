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


@pytest.mark.parametrize(
    ("path", "old", "new", "env", "check", "expected"),
    [
        pytest.param(
            "charts/llm-service/values.yaml",
            "        successCondition: result[0] <= 1.5\n",
            "        successCondition: result[0] <= 1.5 || isNaN(result[0])\n",
            "prod",
            "rollout prod",
            ("metric ttft-p95-ratio", "'result[0] <= 1.5 || isNaN(result[0])'"),
            id="condition-not-of-the-allowed-form",
        ),
        pytest.param(
            "environments/prod/values.yaml",
            "rollout:\n  enabled: true\n",
            "rollout:\n  enabled: true\n  surge: 1\n",
            "prod",
            "rollout prod",
            ("exceed replicas + surge budget 1",),
            id="gateway-api-canary-beyond-the-surge-budget",
        ),
        pytest.param(
            "charts/llm-service/templates/rollout-llm.yaml",
            "      maxSurge: {{ $r.surge }}\n",
            "      maxSurge: {{ $r.surge }}\n      maxSurges: 1\n",
            "staging",
            "crd schema staging",
            ("Rollout", "maxSurges"),
            id="invalid-rollout-field-fails-the-crd-schema",
        ),
    ],
)
def test_a_bad_rollout_is_refused_naming_what_is_wrong(
    repo_copy: Path,
    run_render: RenderFn,
    path: str,
    old: str,
    new: str,
    env: str,
    check: str,
    expected: tuple[str, ...],
) -> None:
    edit(repo_copy / path, old, new)
    result = run_render(repo_copy, [env], skip=FAST)
    assert result.status is Status.FAILED
    failed = {c.name: c.detail for c in result.failures()}
    assert check in failed, failure_text(result)
    for text in expected:
        assert text in failed[check]
