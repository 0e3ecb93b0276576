"""The manifest policies under conftest/OPA's input shapes, evaluated with the real engine (regorus).

conftest feeds one document at a time, or with --combine a list of {"path", "contents"}; its
--data policies/params.yaml puts `defaults`/`environments` at the data root. The pipeline passes
a List and flattened `data.params`. Every combination must deny a bad object, and pass the
rendered chart of every env.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.artifacts.chart_render import helm_template
from pipeline.checks import policy

POLICIES = ("policies/manifests", "policies/lib")
ENVS = ("dev", "staging", "prod")


def _shapes(docs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Inputs per shape: each is a list of inputs evaluated separately (single = one per document)."""
    return {
        "single": list(docs),
        "combine": [[{"path": f"rendered/{i}.yaml", "contents": d} for i, d in enumerate(docs)]],
        "list": [{"kind": "List", "items": docs}],
    }


def _data(repo_root: Path, env: str, style: str) -> dict[str, Any]:
    if style == "pipeline":
        return {"params": policy.load_params(repo_root / "policies/params.yaml", env)}
    # conftest test --data policies/params.yaml: the file as it is; env comes from the labels.
    return dict(yaml.safe_load((repo_root / "policies/params.yaml").read_text()))


def _denials(repo_root: Path, inputs: list[Any], data: dict[str, Any]) -> list[str]:
    engine = policy.compile_engine([repo_root / p for p in POLICIES], data)
    return sorted({m for doc in inputs for m in policy.evaluate_engine(engine, doc)})


@pytest.fixture(scope="module")
def rendered(repo_root: Path) -> dict[str, list[dict[str, Any]]]:
    return {env: [d for d in yaml.safe_load_all(helm_template(repo_root, env)) if d] for env in ENVS}


@pytest.mark.parametrize("style", ["pipeline", "conftest"])
@pytest.mark.parametrize("shape", ["single", "combine", "list"])
@pytest.mark.parametrize("env", ENVS)
def test_rendered_chart_passes_in_every_shape(
    repo_root: Path, rendered: dict[str, list[dict[str, Any]]], env: str, shape: str, style: str
) -> None:
    assert _denials(repo_root, _shapes(rendered[env])[shape], _data(repo_root, env, style)) == []


@pytest.mark.parametrize("style", ["pipeline", "conftest"])
@pytest.mark.parametrize("shape", ["single", "combine", "list"])
def test_bad_deployment_denied_in_every_shape(
    repo_root: Path, rendered: dict[str, list[dict[str, Any]]], shape: str, style: str
) -> None:
    docs = copy.deepcopy(rendered["prod"])
    dep = next(d for d in docs if d["kind"] in ("Deployment", "Rollout"))  # prod: a Rollout (rollout.enabled)
    vllm = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "vllm")
    vllm["image"] = "docker.io/someone/vllm:latest"
    vllm["securityContext"]["privileged"] = True
    del vllm["resources"]["limits"]
    msgs = _denials(repo_root, _shapes(docs)[shape], _data(repo_root, "prod", style))
    name = f"{dep['kind']} <{dep['metadata']['name']}>"
    for expected in (
        f"container <vllm> in {name} is privileged",
        f"container <vllm> in {name} uses the latest tag (docker.io/someone/vllm:latest); pin a version or digest",
        f"container <vllm> in {name} has no resources.limits.cpu",
        # prod's params (digests required) apply in both styles: flattened, or picked by the env label.
        f"container <vllm> in {name} is not pinned by digest (docker.io/someone/vllm:latest); prod requires digests",
    ):
        assert expected in msgs, msgs


@pytest.mark.parametrize("shape", ["combine", "list"])
def test_httproute_into_a_networkpolicy_for_ingress_nginx_only_is_denied(
    repo_root: Path, rendered: dict[str, list[dict[str, Any]]], shape: str
) -> None:
    """dev exposes through an HTTPRoute; a NetworkPolicy admitting only ingress-nginx (the seed's) is refused."""
    docs = copy.deepcopy(rendered["dev"])
    np = next(d for d in docs if d["kind"] == "NetworkPolicy")
    for rule in np["spec"]["ingress"]:
        for peer in rule["from"]:
            if peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "gateway-system"}:
                peer["namespaceSelector"]["matchLabels"] = {"kubernetes.io/metadata.name": "ingress-nginx"}
    msgs = _denials(repo_root, _shapes(docs)[shape], _data(repo_root, "dev", "pipeline"))
    assert any(m.startswith("HTTPRoute <llm-service> routes traffic from namespaces labelled") for m in msgs), msgs


def test_builtin_defaults_agree_with_params_yaml(repo_root: Path) -> None:
    doc = yaml.safe_load((repo_root / "policies/params.yaml").read_text())
    engine = policy.compile_engine([repo_root / "policies/lib"])
    builtin = engine.eval_rule("data.lib.params.builtin")
    for key, value in {**doc["defaults"], **doc["environments"]["argocd"]}.items():
        if key != "required_labels":  # argocd's own list; the builtin is the manifests' default
            assert builtin[key] == value, key
    assert builtin["required_labels"] == doc["defaults"]["required_labels"]
