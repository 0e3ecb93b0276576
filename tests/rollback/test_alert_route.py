"""The chart's rollback alert and the controller's Alertmanager route must line up, in every env."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from pipeline.artifacts import chart_render
from pipeline.runtime.tools import find

REPO = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "a" * 64


def template(chart: str, *args: str) -> list[dict[str, Any]]:
    helm = find("helm")
    if helm is None:
        pytest.fail("helm missing: run `python -m pipeline.runtime.tools ensure helm`")
    out = subprocess.run(
        [helm, "template", "x", str(REPO / "charts" / chart), *args], capture_output=True, text=True, check=True
    )
    return [d for d in YAML(typ="safe").load_all(out.stdout) if d]


def matches(matcher: dict[str, str], labels: dict[str, str]) -> bool:
    value, op = labels.get(matcher["name"], ""), matcher.get("matchType", "=")
    return {
        "=": value == matcher["value"],
        "!=": value != matcher["value"],
        "=~": re.fullmatch(matcher["value"], value) is not None,
        "!~": re.fullmatch(matcher["value"], value) is None,
    }[op]


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_fast_burn_rate_alert_is_routed_to_the_controller(env: str) -> None:
    # The manifests exactly as `render` validates them (the drill uses the same helper).
    docs = [d for d in YAML(typ="safe").load_all(chart_render.helm_template(REPO, env)) if d]
    rules = [r for d in docs if d["kind"] == "PrometheusRule" for g in d["spec"]["groups"] for r in g["rules"]]
    rollback_alerts = [r for r in rules if r.get("labels", {}).get("rollback") == "true"]
    assert [r["alert"] for r in rollback_alerts] == ["LLMErrorBudgetBurnFast"]
    labels = rollback_alerts[0]["labels"]
    assert labels["env"] == env and labels["severity"] == "critical"

    ctl = template(
        "rollback-controller",
        "--namespace",
        "llm-rollback",
        "--set",
        f"image.digest={DIGEST}",
        "--set",
        "gitops.repoURL=ssh://git@git.example.com/llm/gitops.git",
    )
    amc = next(d for d in ctl if d["kind"] == "AlertmanagerConfig")
    route = amc["spec"]["route"]
    assert all(matches(m, labels) for m in route["matchers"]), (route["matchers"], labels)
    # ...and a non-rollback alert of the same env must not be routed there.
    assert not all(matches(m, {**labels, "rollback": "false"}) for m in route["matchers"])
    # ...nor the symptom alert (every 5xx, dependencies included).
    symptom = next(r for r in rules if r.get("alert") == "LLMHighErrorRate")["labels"]
    assert not all(matches(m, symptom) for m in route["matchers"])
    receiver = next(r for r in amc["spec"]["receivers"] if r["name"] == route["receiver"])
    webhook = receiver["webhookConfigs"][0]
    assert (
        webhook["url"].endswith("/webhook") and webhook["httpConfig"]["authorization"]["credentials"]["key"] == "token"
    )


def test_alertmanagerconfig_validates_against_the_crd_schema(crd_schemas: Path) -> None:
    import json

    import jsonschema

    ctl = template(
        "rollback-controller", "--set", f"image.digest={DIGEST}", "--set", "gitops.repoURL=ssh://git@h/r.git"
    )
    amc = next(d for d in ctl if d["kind"] == "AlertmanagerConfig")
    schema = json.loads((crd_schemas / "monitoring.coreos.com" / "alertmanagerconfig_v1alpha1.json").read_text())
    # The CRD schemas carry Go regexes ((?i) mid-pattern): validate without checking the schema itself.
    jsonschema.validators.validator_for(schema)(schema).validate(amc)
    es_schema = json.loads((crd_schemas / "external-secrets.io" / "externalsecret_v1.json").read_text())
    es = next(d for d in ctl if d["kind"] == "ExternalSecret")
    jsonschema.validators.validator_for(es_schema)(es_schema).validate(es)


def test_chart_requires_digest_and_repo() -> None:
    helm = find("helm")
    assert helm is not None
    r = subprocess.run(
        [helm, "template", "x", str(REPO / "charts" / "rollback-controller")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode != 0 and "must be set" in r.stderr
