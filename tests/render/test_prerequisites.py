"""policies/prerequisites.yaml: render's `prerequisites` check passes on the repo and fails, naming the kind
or field and the component's minimum, for an older schema, an unlisted kind or apiVersion, a minimum the
charts disagree with; docs/prerequisites.md carries exactly the generated table."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.checks import prerequisites, validate
from pipeline.checks.manifests import argocd_docs
from pipeline.core.context import RunContext
from pipeline.core.result import Status
from pipeline.stages import render
from tests.render.conftest import RenderFn, failure_text

APPSET_SCHEMA = Path("argoproj.io/applicationset_v1alpha1.json")


@pytest.fixture
def prereqs(repo_root: Path) -> prerequisites.Prerequisites:
    return prerequisites.load(repo_root / prerequisites.PREREQUISITES)


@pytest.fixture
def repo_kinds(repo_root: Path) -> dict[str, set[tuple[str, str]]]:
    """What render would hand the check for the Argo CD objects (the chart targets need helm: see the slow test)."""
    return {"argocd": prerequisites.object_kinds(argocd_docs(repo_root))}


def _schemas_without_exclude(crd_schemas: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "crd-schemas"
    shutil.copytree(crd_schemas, copy)
    schema = json.loads((copy / APPSET_SCHEMA).read_text())
    files = schema["properties"]["spec"]["properties"]["generators"]["items"]["properties"]["git"]["properties"]
    del files["files"]["items"]["properties"]["exclude"]
    (copy / APPSET_SCHEMA).write_text(json.dumps(schema))
    return copy


def test_check_passes_on_the_repo(
    repo_root: Path, crd_schemas: Path, repo_kinds: dict[str, set[tuple[str, str]]]
) -> None:
    problems, summary = prerequisites.check(repo_root, repo_kinds, validate.CrdSchemas(str(crd_schemas)))
    assert problems == []
    assert "version-gated fields present" in summary and "Kubernetes >= 1.30" in summary


def test_every_vendored_schema_kind_is_provided_and_every_crd_kind_vendored(
    repo_root: Path, prereqs: prerequisites.Prerequisites
) -> None:
    vendored = prerequisites.vendored_kinds(repo_root)
    assert prerequisites.check_listing(prereqs, vendored) == []
    assert prerequisites.check_kinds(prereqs, {"SOURCE": prerequisites.vendored_as_kinds(prereqs, vendored)}) == []


def test_schema_without_exclude_fails_naming_field_and_argocd_minimum(
    repo_root: Path, crd_schemas: Path, tmp_path: Path, repo_kinds: dict[str, set[tuple[str, str]]]
) -> None:
    older = validate.CrdSchemas(str(_schemas_without_exclude(crd_schemas, tmp_path)))
    problems, _ = prerequisites.check(repo_root, repo_kinds, older)
    assert len(problems) == 1, problems
    assert problems[0].startswith("Argo CD >= v3.1.0: ApplicationSet (argoproj.io/v1alpha1) has no field ")
    assert "spec.generators[].git.files[].exclude" in problems[0]
    assert "no `exclude` under spec.generators[].git.files[]" in problems[0]


def test_unknown_kind_fails_naming_it(prereqs: prerequisites.Prerequisites) -> None:
    problems = prerequisites.check_kinds(prereqs, {"prod": {("example.com/v1", "Widget")}, "dev": set()})
    assert problems == [
        "prod: Widget (example.com/v1): no entry of policies/prerequisites.yaml provides it (no entry provides "
        "API group example.com): add the component that serves it, with its minimum version"
    ]
    # A core kind nobody listed (a CronJob rendered one day) fails the same way.
    assert prerequisites.check_kinds(prereqs, {"dev": {("batch/v1", "CronJob")}})


def test_kind_of_a_listed_component_at_an_unlisted_version_fails(prereqs: prerequisites.Prerequisites) -> None:
    problems = prerequisites.check_kinds(
        prereqs, {"prod": {("keda.sh/v1beta1", "ScaledObject")}, "staging": {("keda.sh/v1beta1", "ScaledObject")}}
    )
    assert problems == [
        "prod, staging: ScaledObject (keda.sh/v1beta1): KEDA >= v2.15.0 provides ScaledObject only as "
        "keda.sh/v1alpha1: add keda.sh/v1beta1 to KEDA in policies/prerequisites.yaml with the minimum KEDA that "
        "serves it"
    ]
    # Same group, another kind: the message lists what the component does provide.
    (other,) = prerequisites.check_kinds(prereqs, {"prod": {("keda.sh/v1alpha1", "ScaledJob")}})
    assert "KEDA >= v2.15.0 provides keda.sh/v1alpha1 ScaledObject" in other


def test_kubernetes_minimum_must_match_the_charts_and_serve_the_fields(
    repo_root: Path, crd_schemas: Path, prereqs: prerequisites.Prerequisites
) -> None:
    charts = repo_root / "charts"
    assert prerequisites.check_kubernetes(prereqs, charts) == []
    lower = dataclasses.replace(prereqs, kubernetes=dataclasses.replace(prereqs.kubernetes, minimum="1.28"))
    assert prerequisites.check_kubernetes(lower, charts) == [
        "charts/llm-service/Chart.yaml: kubeVersion >=1.30.0-0 needs more than the stated Kubernetes >= 1.28"
    ]
    (field,) = prerequisites.check_fields(lower, validate.CrdSchemas(str(crd_schemas)))
    assert "Kubernetes >= 1.28: Deployment (apps/v1) has no field spec.template.spec.containers[]" in field
    assert "no `sleep` under spec.template.spec.containers[].lifecycle.preStop" in field
    higher = dataclasses.replace(prereqs, kubernetes=dataclasses.replace(prereqs.kubernetes, minimum="1.31"))
    (problem,) = prerequisites.check_kubernetes(higher, charts)
    assert "Kubernetes >= 1.31 is stated, but no chart's kubeVersion asks for it" in problem


def test_kubernetes_kind_not_served_at_the_minimum_fails(repo_root: Path, prereqs: prerequisites.Prerequisites) -> None:
    k8s = prereqs.kubernetes
    gone = prerequisites.Api("autoscaling/v2beta2", ("HorizontalPodAutoscaler",))
    listed = dataclasses.replace(prereqs, kubernetes=dataclasses.replace(k8s, provides=(*k8s.provides, gone)))
    assert prerequisites.check_kubernetes(listed, repo_root / "charts") == [
        "Kubernetes >= 1.30: HorizontalPodAutoscaler (autoscaling/v2beta2) is listed, but Kubernetes 1.30 does "
        "not serve it"
    ]


def test_malformed_file_fails_naming_the_entry(repo_root: Path, tmp_path: Path, crd_schemas: Path) -> None:
    data = yaml.safe_load((repo_root / prerequisites.PREREQUISITES).read_text())
    data["components"][0]["references"] = []
    bad = tmp_path / "prerequisites.yaml"
    bad.write_text(yaml.safe_dump(data))
    problems, _ = prerequisites.check(repo_root, {}, validate.CrdSchemas(str(crd_schemas)), path=bad)
    assert problems == [f"{bad}: components[0] <Argo CD>: `references` must name the upstream source of the minimum"]


def test_doc_table_equals_the_file(repo_root: Path, prereqs: prerequisites.Prerequisites) -> None:
    doc = (repo_root / prerequisites.DOC).read_text()
    assert prerequisites.documented(doc) == prerequisites.markdown(prereqs), (
        "docs/prerequisites.md differs from policies/prerequisites.yaml: "
        "run `python -m pipeline.checks.prerequisites --write`"
    )
    for comp in prereqs.all:
        assert f"| {comp.name} | `{comp.minimum}` |" in doc


@pytest.mark.slow
def test_render_runs_the_check_and_fails_on_an_older_schema(
    repo_root: Path, run_render: RenderFn, tmp_path: Path, crd_schemas: Path
) -> None:
    fast = frozenset({"trivy", "promtool", "lint"})
    result = run_render(repo_root, skip=fast)
    check = next(c for c in result.checks if c.name == "prerequisites")
    assert check.status is Status.PASSED, failure_text(result)
    # Every target's kinds went in: dev, staging, prod, the rollback-controller chart app, argocd.
    assert check.numbers["targets"] == 5 and "in 5 targets" in check.detail
    assert result.evidence["prerequisites"] == "policies/prerequisites.yaml"

    older = _schemas_without_exclude(crd_schemas, tmp_path / "older")
    opts = render.RenderOptions(
        envs=["dev"], out=tmp_path / "out-older", crd_schemas=str(older), repo_root=repo_root, skip=fast
    )
    result = render.run(opts, RunContext(run_dir=tmp_path / "run-older"))
    failed = {c.name: c.detail for c in result.failures()}
    assert "prerequisites" in failed, failure_text(result)
    assert "Argo CD >= v3.1.0" in failed["prerequisites"] and "files[].exclude" in failed["prerequisites"]
