"""`python -m pipeline render` gates the rollback controller's own monitoring like an env's: its
policies (tracking over its ServiceMonitor), runbooks and the promtool cases of its chart."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.result import Status
from tests.render.conftest import RenderFn, edit, failure_text

pytestmark = pytest.mark.slow


def test_the_controller_s_rules_are_tested_and_its_policies_checked(
    repo_root: Path, run_render: RenderFn, tmp_path: Path
) -> None:
    result = run_render(repo_root, ["dev"], skip=frozenset({"trivy"}))
    assert result.status is Status.PASSED, failure_text(result)
    by_name = {c.name: c for c in result.checks}
    for name in ("policy rollback-controller", "runbooks rollback-controller", "promtool test rules"):
        assert by_name[name].status is Status.PASSED, name
    env_tests = len(list((repo_root / "charts/llm-service/tests").glob("*.test.yaml")))
    assert by_name["promtool test rules"].numbers["files"] == env_tests + 1  # dev's + the controller's
    assert (tmp_path / "out" / "rollback-controller" / "controller.test.yaml").is_file()


def test_a_broken_controller_alert_fails_its_promtool_case(repo_copy: Path, run_render: RenderFn) -> None:
    edit(
        repo_copy / "charts/rollback-controller/templates/prometheusrule-controller.yaml",
        'outcome="error"',
        'outcome="failed"',
    )
    result = run_render(repo_copy, ["dev"], skip=frozenset({"trivy"}))
    text = failure_text(result)
    assert "[promtool test rules]" in text and "rollback-controller/controller.test.yaml" in text, text
    assert "RollbackControllerRevertFailed" in text


def test_an_instance_selector_and_a_missing_runbook_fail(repo_copy: Path, run_render: RenderFn) -> None:
    edit(
        repo_copy / "charts/rollback-controller/templates/servicemonitor-controller.yaml",
        '{{- include "rollback-controller.ownedSelectorLabels" . | nindent 6 }}',
        '{{- include "rollback-controller.selectorLabels" . | nindent 6 }}',
    )
    (repo_copy / "docs/runbooks/RollbackControllerSyncHeld.md").unlink()
    result = run_render(repo_copy, ["dev"], skip=frozenset({"trivy", "promtool"}))
    text = failure_text(result)
    assert (
        "rollback-controller: policy tracking: ServiceMonitor <rollback-controller> selects on "
        "app.kubernetes.io/instance" in text
    ), text
    assert (
        "rollback-controller: alert <RollbackControllerSyncHeld> links docs/runbooks/RollbackControllerSyncHeld.md, "
        "which does not exist" in text
    ), text
