"""`python -m pipeline render` fails on a scrape selector Argo CD's label tracking breaks and on an
https Argo CD server the rollback controller has no TLS decision for (issue 18, items 8 and 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.result import Status
from tests.render.conftest import FAST, RenderFn, edit, failure_text

pytestmark = pytest.mark.slow


def test_servicemonitor_selecting_on_the_instance_label_fails(repo_copy: Path, run_render: RenderFn) -> None:
    """The selector the chart had before: its Service carries instance=llm-service-<env> under label tracking."""
    edit(
        repo_copy / "charts/llm-service/templates/servicemonitor-gateway.yaml",
        '{{- include "llm-service.ownedSelectorLabels" . | nindent 6 }}',
        '{{- include "llm-service.selectorLabels" . | nindent 6 }}',
    )
    result = run_render(repo_copy, ["dev"], skip=FAST)
    assert result.status is Status.FAILED
    text = failure_text(result)
    assert (
        "[policy dev] dev: policy tracking: ServiceMonitor <llm-service-gateway> selects on app.kubernetes.io/instance, "
        "which Argo CD's label tracking overwrites with the Application name" in text
    ), text
    assert "ServiceMonitor <llm-service-vllm>" not in text


def test_https_argocd_server_without_a_ca_decision_fails(repo_copy: Path, run_render: RenderFn) -> None:
    values = repo_copy / "environments/argocd/rollback-controller-values.yaml"
    edit(values, "    caConfigMap:\n      name: argocd-server-ca\n", "    insecure: false\n")
    result = run_render(repo_copy, ["dev"], skip=FAST)
    assert result.status is Status.FAILED
    text = failure_text(result)
    # `helm lint` only logs a template's `fail` (lint mode); `helm template` fails with it.
    assert (
        "[helm template rollback-controller] rollback-controller: Error: execution error at "
        "(rollback-controller/templates/deployment-controller.yaml:1:4): argocd.server "
        "https://argocd-server.argocd.svc is https but argocd.tls makes no decision" in text
    ), text
    # The env's own chart is untouched by it.
    assert "[helm template dev]" not in text and "[policy dev]" not in text


def test_insecure_opt_out_renders(repo_copy: Path, run_render: RenderFn, tmp_path: Path) -> None:
    values = repo_copy / "environments/argocd/rollback-controller-values.yaml"
    edit(values, "    caConfigMap:\n      name: argocd-server-ca\n", "    insecure: true\n")
    result = run_render(repo_copy, ["dev"], skip=FAST)
    assert result.status is Status.PASSED, failure_text(result)
    manifests = (tmp_path / "out" / "rollback-controller" / "manifests.yaml").read_text()
    assert "name: ARGOCD_INSECURE" in manifests and "ARGOCD_CA_FILE" not in manifests
