"""`python -m pipeline render`: passes on the repo; each planted violation fails naming it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.checks import manifests
from pipeline.core.result import Status
from tests.render.conftest import RenderFn, failure_text

pytestmark = pytest.mark.slow

# Planted violations aimed at schema/policy checks skip the slow tools they do not involve.
FAST = frozenset({"trivy", "promtool"})


def test_render_all_passes_on_repo(repo_root: Path, run_render: RenderFn, tmp_path: Path) -> None:
    result = run_render(repo_root)
    assert result.status is Status.PASSED, failure_text(result)
    names = {c.name for c in result.checks}
    for env in ("dev", "staging", "prod"):
        assert {f"helm lint {env}", f"kubernetes schema {env}", f"crd schema {env}", f"policy {env}"} <= names
        assert (tmp_path / "out" / env / "manifests.yaml").is_file()
        assert (tmp_path / "out" / env / "prometheus-rules.yaml").is_file()
    assert {
        "trivy config",
        "promtool check rules",
        "promtool test rules",
        "crd schema argocd",
        "policy argocd",
    } <= names
    assert not result.skipped()
    # Every policy has a test (cheap, here); the Rego tests themselves run once, in `test`.
    assert "policy tests present" in names and "policy unit tests" not in names
    # One ignore file for both Trivy gates: the root one, validated; the old per-render one is gone.
    ignorefile = next(c for c in result.checks if c.name == "trivy ignorefile")
    assert ignorefile.status is Status.PASSED and not (repo_root / "policies/.trivyignore.yaml").exists()
    # The generated Applications are rendered and checked too: dev and staging from the branch; prod has
    # no generator until its first promotion appends it (a fresh GitOps repo is valid from its first commit).
    argocd = (tmp_path / "out" / "argocd" / "manifests.yaml").read_text()
    assert "name: llm-service-dev" in argocd and "name: llm-service-staging" in argocd
    assert "name: llm-service-prod" not in argocd


def _edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count))


# One edit of one file, rendered for one env: the failure names the check and the object.
PLANTED = [
    pytest.param(
        "charts/llm-service/templates/_podtemplate-llm.tpl",
        '{{ include "llm-service.image" (dict "ctx" . "image" .Values.gateway.image "what" "gateway") }}',
        "registry.example.com/llm/gateway:latest",
        "dev",
        ["[policy dev] dev: policy images: container <gateway> in Deployment <llm-service> uses the latest tag"],
        id="latest-tag-in-template",
    ),
    pytest.param(
        "charts/llm-service/templates/prometheusrule-llm.yaml",
        "            runbook_url: {{ $rb }}/LLMQueueDepthHigh.md\n",
        "",
        "prod",
        [
            "policy alerts: alert <LLMQueueDepthHigh> in PrometheusRule <llm-service> has no runbook_url annotation",
            "alert <LLMQueueDepthHigh> runbook_url (none)",
        ],
        id="alert-without-runbook",
    ),
    pytest.param(
        "environments/argocd/applicationset-llm-service.yaml",
        "          prune: true",
        "          prun: true",
        "dev",
        [
            "[crd schema argocd] argocd: ApplicationSet <argocd/llm-service>: spec.template.spec.syncPolicy.automated: ",
            "'prun' was unexpected",
        ],
        id="broken-argocd-field",
    ),
    pytest.param(
        "environments/argocd/applicationset-llm-service.yaml",
        # A prod generator reading prod on the branch (a fresh repo has none; issue 20).
        "          branch: main\n",
        "          branch: main\n    - git:\n        repoURL: https://git.example.com/llm/llm-service.git\n"
        "        revision: main\n        files:\n          - path: environments/prod/release.yaml\n"
        "        values:\n          prodRevision: main\n",
        "dev",
        ["Application <llm-service-prod> (env prod) tracks targetRevision main"],
        id="unpinned-prod-app",
    ),
    pytest.param(
        "environments/argocd/rollback-controller-values.yaml",
        "  digest: sha256:0000000000000000000000000000000000000000000000000000000000000003\n",
        "",
        "dev",
        ["[helm template rollback-controller] rollback-controller:", "image.digest must be set"],
        id="rollback-controller-without-its-values",
    ),
    pytest.param(
        "charts/rollback-controller/templates/alertmanagerconfig-controller.yaml",
        "  route:\n",
        "  routes:\n",
        "dev",
        [
            "[crd schema rollback-controller] rollback-controller: AlertmanagerConfig <llm-rollback/",
            "'routes' was unexpected",
        ],
        id="rollback-controller-crd-breakage",
    ),
]


@pytest.mark.parametrize(("rel", "old", "new", "env", "fragments"), PLANTED)
def test_planted_violation_fails_naming_it(
    repo_copy: Path, run_render: RenderFn, rel: str, old: str, new: str, env: str, fragments: list[str]
) -> None:
    _edit(repo_copy / rel, old, new)
    result = run_render(repo_copy, [env], skip=FAST)
    text = failure_text(result)
    assert result.status is Status.FAILED
    for fragment in fragments:
        assert fragment in text, text


def test_latest_tag_in_values_fails(repo_copy: Path, run_render: RenderFn) -> None:
    env = repo_copy / "environments/dev"
    _edit(
        env / "release.yaml",
        "digest: sha256:0000000000000000000000000000000000000000000000000000000000000001",
        'digest: ""',
    )
    (env / "values.yaml").write_text((env / "values.yaml").read_text() + "gateway:\n  image:\n    tag: latest\n")
    result = run_render(repo_copy, ["dev"], skip=FAST)
    assert result.status is Status.FAILED
    assert "/gateway/image/tag" in failure_text(result)


def test_missing_limit_fails(repo_copy: Path, run_render: RenderFn) -> None:
    values = repo_copy / "charts/llm-service/values.yaml"
    _edit(values, '    limits:\n      cpu: "1"\n      memory: 512Mi\n', '    limits:\n      cpu: "1"\n')
    result = run_render(repo_copy, ["dev"], skip=FAST)
    assert result.status is Status.FAILED
    assert "container <gateway> in Deployment <llm-service> has no resources.limits.memory" in failure_text(result)
    # Tools left out are reported as skipped, never as passed.
    assert {c.name for c in result.skipped()} == {"trivy config", "promtool test rules"}


def test_privileged_container_fails(repo_copy: Path, run_render: RenderFn) -> None:
    _edit(repo_copy / "charts/llm-service/templates/_helpers.tpl", "privileged: false", "privileged: true")
    result = run_render(repo_copy, ["prod"])
    text = failure_text(result)
    assert "policy security: container <vllm> in Rollout <llm-service> is privileged" in text  # prod: rollout.enabled
    # trivy flags it as well (HIGH), naming the env.
    assert re.search(r"\[trivy config\] prod/manifests\.yaml: KSV-?0*17 HIGH", text), text


def test_bad_values_type_fails(repo_copy: Path, run_render: RenderFn) -> None:
    values = repo_copy / "environments/staging/values.yaml"
    values.write_text(values.read_text() + "replicaCount: two\n")
    result = run_render(repo_copy, ["staging"], skip=frozenset({"trivy", "promtool"}))
    text = failure_text(result)
    assert "[helm template staging]" in text and "at '/replicaCount': got string, want integer" in text
    assert "[helm lint staging]" in text


def test_missing_runbook_page_fails(repo_copy: Path, run_render: RenderFn) -> None:
    (repo_copy / "docs/runbooks/LLMCostIncrease.md").unlink()
    result = run_render(repo_copy, ["dev"], skip=FAST)
    assert "dev: alert <LLMCostIncrease> links docs/runbooks/LLMCostIncrease.md, which does not exist" in failure_text(
        result
    )


def test_broken_alert_test_expectation_fails(repo_copy: Path, run_render: RenderFn) -> None:
    # An alert that stops firing (threshold raised far above the test input) breaks its promtool case.
    values = repo_copy / "environments/dev/values.yaml"
    _edit(values, "    errorRateRatio: 0.05", "    errorRateRatio: 0.5")
    result = run_render(repo_copy, ["dev"], skip=frozenset({"trivy"}))
    text = failure_text(result)
    assert "[promtool test rules]" in text and "dev/alerts.test.yaml" in text and "LLMHighErrorRate" in text


def test_unknown_env_fails(repo_root: Path, run_render: RenderFn) -> None:
    result = run_render(repo_root, ["qa"])
    assert result.status is Status.FAILED and "unknown environment(s) qa" in result.summary


def test_cli_exit_codes(tmp_path: Path, crd_schemas: Path, repo_root: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "pipeline", "--run-dir", str(tmp_path / "run"), "render", *args]
        return subprocess.run(argv, cwd=repo_root, capture_output=True, text=True, check=False)

    ok = cli("--env", "dev", "--out", str(tmp_path / "o"), "--crd-schemas", str(crd_schemas))
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "o" / "dev" / "manifests.yaml").is_file()
    assert (tmp_path / "run" / "render.json").is_file()
    bad = cli("--env", "qa", "--crd-schemas", str(crd_schemas))
    # A usage error (exit 2, pipeline/core/exit_codes.py) that lists the valid values.
    assert bad.returncode == 2 and "invalid choice: 'qa'" in bad.stderr and "'staging'" in bad.stderr


def test_render_covers_the_rollback_controller_application(
    repo_root: Path, run_render: RenderFn, tmp_path: Path
) -> None:
    """The controller chart is rendered with exactly the values its Argo CD Application passes."""

    (app,) = manifests.chart_apps(repo_root)
    assert (app.name, app.release, app.namespace) == ("rollback-controller", "rollback-controller", "llm-rollback")
    assert app.value_files == [repo_root / "environments/argocd/rollback-controller-values.yaml"]
    result = run_render(repo_root, ["dev"], skip=frozenset({"promtool"}))
    assert result.status is Status.PASSED, failure_text(result)
    for check in ("helm lint", "helm template", "kubernetes schema", "crd schema"):
        assert any(c.name == f"{check} rollback-controller" and c.status is Status.PASSED for c in result.checks), check
    docs = (tmp_path / "out" / "rollback-controller" / "manifests.yaml").read_text()
    assert "image: registry.example.com/llm/pipeline:0.1.0@sha256:" in docs
    assert "kind: AlertmanagerConfig" in docs and "kind: ExternalSecret" in docs


def test_pinned_prod_revision_still_validates(repo_copy: Path, run_render: RenderFn) -> None:
    """After a prod promotion moved the pin (round-trip edit), the Argo CD objects still pass."""
    from pipeline.gitops.argocd_pin import PIN_FILE, set_pinned_revision
    from pipeline.gitops.repo import GitOpsRepo

    appset = repo_copy / PIN_FILE
    # The first pin appends prod's generator (a fresh repo has none); the next moves its two lines.
    assert set_pinned_revision(GitOpsRepo("unused", repo_copy), "prod", "f" * 40) == ""
    before = appset.read_text()
    assert set_pinned_revision(GitOpsRepo("unused", repo_copy), "prod", "0123456789abcdef" * 2 + "01234567")
    # Two lines: the prod generator's revision (chart version read at the pin) and the $values pin.
    assert len([a for a, b in zip(before.splitlines(), appset.read_text().splitlines(), strict=True) if a != b]) == 2
    result = run_render(repo_copy, ["prod"], skip=FAST)
    assert result.status is Status.PASSED, failure_text(result)


def test_trivy_finding_accepted_only_by_a_valid_entry_of_the_root_ignore_file(
    repo_copy: Path, run_render: RenderFn
) -> None:
    """render gates trivy config like scan: same function, same file, same reason + expiry contract."""
    _edit(repo_copy / "charts/llm-service/templates/_helpers.tpl", "privileged: false", "privileged: true")
    ignore = repo_copy / ".trivyignore.yaml"
    entry = "  - id: KSV-0017\n    paths: [prod/manifests.yaml]\n    statement: {s}\n    expired_at: {d}\n"
    base = ignore.read_text()
    ignore.write_text(
        base.replace("misconfigurations:\n", "misconfigurations:\n" + entry.format(s="drill", d="2099-01-01"))
    )
    result = run_render(repo_copy, ["prod"], skip=frozenset({"promtool"}))
    trivy = next(c for c in result.checks if c.name == "trivy config")
    assert trivy.status is Status.PASSED and trivy.numbers["ignored"] >= 1, trivy.detail
    # Expired: the entry fails the gate itself and suppresses nothing.
    ignore.write_text(
        base.replace("misconfigurations:\n", "misconfigurations:\n" + entry.format(s="drill", d="2020-01-01"))
    )
    result = run_render(repo_copy, ["prod"], skip=frozenset({"promtool"}))
    text = failure_text(result)
    assert "[trivy ignorefile]" in text and "KSV-0017: expired on 2020-01-01" in text
    assert re.search(r"\[trivy config\] prod/manifests\.yaml: KSV-?0*17 HIGH", text), text


def test_missing_crd_schema_directory_names_the_setting(repo_root: Path, tmp_path: Path) -> None:
    from pipeline.core.context import RunContext
    from pipeline.stages import render

    ctx = RunContext(run_dir=tmp_path / "run", executor="local")
    opts = render.RenderOptions(
        envs=["dev"], out=tmp_path / "out", crd_schemas=str(tmp_path / "nope"), repo_root=repo_root
    )
    result = render.run(opts, ctx)
    assert result.status is Status.FAILED
    assert "--crd-schemas" in result.summary and "$PIPELINE_CRD_SCHEMAS" in result.summary
