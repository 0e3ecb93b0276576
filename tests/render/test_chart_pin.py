"""Each env renders the chart version its release.yaml pins — the OCI chart Argo CD will pull."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.artifacts import chart, chart_render
from pipeline.checks import manifests, validate
from pipeline.core.result import Status
from pipeline.runtime.tools import require
from tests.render.conftest import RenderFn, failure_text

FAST = frozenset({"trivy", "promtool"})
APPSET = "environments/argocd/applicationset-llm-service.yaml"


def _pin(root: Path, env: str, version: str, digest: str | None = None) -> None:
    path = root / "environments" / env / "release.yaml"
    text = path.read_text()
    assert "  chartVersion: 0.1.0\n" in text
    extra = f"  chartDigest: {digest}\n" if digest else ""
    path.write_text(text.replace("  chartVersion: 0.1.0\n", f"  chartVersion: {version}\n{extra}"))


def _pin_prod(root: Path, sha: str = "1" * 40) -> None:
    """What prod's first promotion does to the ApplicationSet (a fresh repo has no prod generator)."""
    from pipeline.gitops.argocd_pin import set_pinned_revision
    from pipeline.gitops.repo import GitOpsRepo

    set_pinned_revision(GitOpsRepo("unused", root), "prod", sha)


def _generated(root: Path) -> dict[str, dict[str, object]]:
    appset = next(d for d in manifests.static_argocd_docs(root) if d["kind"] == "ApplicationSet")
    return {a["metadata"]["name"]: a for a in validate.expand_applicationset(appset, root)}


def test_seed_pins_name_the_tree_chart_version(repo_root: Path) -> None:
    tree = chart.tree_version(repo_root)
    for env in chart_render.discover_envs(repo_root):
        assert chart_render.pinned_chart_version(repo_root, env)[0] == tree, env


def test_files_generator_makes_one_app_per_release_file_with_the_oci_chart(repo_copy: Path) -> None:
    repo_root = repo_copy
    _pin_prod(repo_root)
    apps = _generated(repo_root)
    assert sorted(apps) == ["llm-service-dev", "llm-service-prod", "llm-service-staging"]
    for env in ("dev", "staging", "prod"):
        spec = apps[f"llm-service-{env}"]["spec"]
        assert isinstance(spec, dict)
        chart_src, values_src = spec["sources"]
        assert chart_src["repoURL"] == "registry.example.com/llm/charts"  # no oci:// with `chart:`
        assert chart_src["chart"] == "llm-service" and "path" not in chart_src
        assert chart_src["targetRevision"] == chart_render.pinned_chart_version(repo_root, env)[0]
        assert chart_src["helm"]["valueFiles"] == [
            f"$values/environments/{env}/values.yaml",
            f"$values/environments/{env}/release.yaml",
        ]
        assert values_src["ref"] == "values"
        expected = "1" * 40 if env == "prod" else "main"  # prod's values at the pinned commit
        assert values_src["targetRevision"] == expected
        assert spec["destination"]["namespace"] == f"llm-{env}"


def test_files_generator_path_parameters() -> None:
    params = validate._path_params("environments/dev/release.yaml", "release.yaml")
    assert params["path"] == "environments/dev" and params["basename"] == "dev"
    assert params["filename"] == "release.yaml" and params["segments"] == ["environments", "dev"]


@pytest.mark.slow
def test_unavailable_pinned_chart_is_skipped_for_dev_and_fails_prod(repo_copy: Path, run_render: RenderFn) -> None:
    for env in ("dev", "prod"):
        _pin(repo_copy, env, "0.2.0")
    result = run_render(repo_copy, ["dev", "prod", "staging"], skip=FAST)
    checks = {c.name: c for c in result.checks}
    assert checks["chart-pin:dev"].status is Status.SKIPPED
    assert checks["chart-pin:prod"].status is Status.FAILED
    assert checks["chart-pin:staging"].status is Status.PASSED
    assert "pins chart llm-service 0.2.0, but this tree has 0.1.0" in checks["chart-pin:prod"].detail
    assert "llm-service-0.2.0.tgz" in checks["chart-pin:dev"].detail
    # Nothing is passed off as rendered: no manifests, no checks for those envs.
    assert "helm template dev" not in checks and "helm template prod" not in checks
    assert checks["helm template staging"].status is Status.PASSED
    assert result.status is Status.FAILED


@pytest.mark.slow
def test_packaged_pinned_chart_is_rendered(repo_copy: Path, run_render: RenderFn, tmp_path: Path) -> None:
    charts = tmp_path / "charts"
    check, packaged = chart.package(
        require("helm"), repo_copy / chart.CHART_DIR, "0.2.0-g1a2b3c4", "0.2.0+g1a2b3c4", charts, tmp_path
    )
    assert packaged is not None, check.detail
    _pin(repo_copy, "prod", "0.2.0-g1a2b3c4", packaged.digest)
    result = run_render(repo_copy, ["prod"], skip=FAST, charts_dirs=[charts])
    assert result.status is Status.PASSED, failure_text(result)
    pin = next(c for c in result.checks if c.name == "chart-pin:prod")
    assert str(packaged.path) in pin.detail
    manifests = (tmp_path / "out" / "prod" / "manifests.yaml").read_text()
    assert "helm.sh/chart: llm-service-0.2.0-g1a2b3c4" in manifests
    # The generated prod Application pulls exactly that version.
    _pin_prod(repo_copy)
    spec = _generated(repo_copy)["llm-service-prod"]["spec"]
    assert isinstance(spec, dict) and spec["sources"][0]["targetRevision"] == "0.2.0-g1a2b3c4"


@pytest.mark.slow
def test_packaged_chart_with_another_digest_fails(repo_copy: Path, run_render: RenderFn, tmp_path: Path) -> None:
    charts = tmp_path / "charts"
    _, packaged = chart.package(require("helm"), repo_copy / chart.CHART_DIR, "0.2.0", "0.2.0", charts, tmp_path)
    assert packaged is not None
    _pin(repo_copy, "dev", "0.2.0", "sha256:" + "0" * 64)
    result = run_render(repo_copy, ["dev"], skip=FAST, charts_dirs=[charts])
    assert "[chart-pin:dev] dev: llm-service-0.2.0.tgz has digest" in failure_text(result)


@pytest.mark.slow
def test_chart_version_range_fails_pin_and_policy(repo_copy: Path, run_render: RenderFn) -> None:
    _pin(repo_copy, "staging", '"~0.1.0"')
    result = run_render(repo_copy, ["staging"], skip=FAST)
    text = failure_text(result)
    assert "[chart-pin:staging] staging: release.chartVersion '~0.1.0' is not an exact SemVer" in text
    assert (
        'Application <llm-service-staging> (env staging) chart llm-service targetRevision "~0.1.0" '
        "is not an exact SemVer version" in text
    )


@pytest.mark.slow
def test_chart_from_git_path_fails_policy(repo_copy: Path, run_render: RenderFn) -> None:
    _pin_prod(repo_copy)
    appset = repo_copy / APPSET
    doc = yaml.safe_load(appset.read_text())
    doc["spec"]["template"]["spec"]["sources"][0] = {
        "repoURL": "https://git.example.com/llm/llm-service.git",
        "targetRevision": "main",
        "path": "charts/llm-service",
        "helm": {"valueFiles": ["$values/{{ .path.path }}/values.yaml"]},
    }
    appset.write_text(yaml.safe_dump(doc))
    result = run_render(repo_copy, ["dev"], skip=FAST)
    text = failure_text(result)
    assert "Application <llm-service-dev> (env dev) has no OCI chart source" in text
    assert "Application <llm-service-prod> (env prod) renders git path charts/llm-service" in text
    assert "Application <llm-service-prod> (env prod) tracks targetRevision main" in text
