"""Every series the dashboard's panels and annotations read is one a real process exports.

Each panel expression (Grafana variables substituted) is parsed with promql-parser; a `llm:` name is
resolved through the chart's rendered recording rules down to raw metrics; each raw metric and each
label it is filtered on must appear on a live scrape: the gateway here (its request series after a
real request), the simulator (vLLM's metric names), the rollback controller's registry; DCGM exporter
series as the chart's promtool cases carry them (charts/llm-service/tests/gpu.test.yaml: the
exporter's label sets under honorLabels false), since no GPU exporter runs here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.artifacts.chart_render import helm_template
from pipeline.checks import manifests
from pipeline.controller.metrics import Metrics
from tests.gateway.conftest import Gateway, chat_body
from tests.helpers.promql import Selector, selectors
from tests.simulator.conftest import SimFactory, start_sim  # noqa: F401

Series = dict[str, list[dict[str, str]]]
TARGET_LABELS = {"namespace", "service", "pod", "job", "instance", "container", "endpoint"}


def parse(text: str, into: Series) -> Series:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            into.setdefault(s.name, []).append(dict(s.labels))
    return into


def dcgm_series(repo_root: Path) -> Series:
    out: Series = {}
    doc = yaml.safe_load((repo_root / "charts/llm-service/tests/gpu.test.yaml").read_text())
    for group in doc["tests"]:
        for s in group["input_series"]:
            if s["series"].startswith("DCGM_"):
                parse(s["series"].replace("${NAMESPACE}", "llm-prod") + " 1\n", out)
    return out


def grafana_vars(expr: str, d: dict[str, Any]) -> str:
    for v in d["templating"]["list"]:
        if v["type"] == "constant":
            expr = expr.replace(f"${v['name']}", v["query"])
    return expr.replace("$namespace", "llm-prod").replace("$__rate_interval", "5m")


def test_every_dashboard_series_is_exported(
    repo_root: Path,
    gateway: Gateway,
    client: httpx.Client,
    start_sim: SimFactory,  # noqa: F811
) -> None:
    exported: Series = {}
    resp = client.post("/v1/chat/completions", json=chat_body(), headers=gateway.auth())
    assert resp.status_code == 200, resp.text
    parse(gateway.metrics(), exported)
    with start_sim() as (sim, _):
        body = {"model": "sim-test", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        assert httpx.post(f"{sim}/v1/chat/completions", json=body, timeout=30).status_code == 200
        parse(httpx.get(f"{sim}/metrics", timeout=10).text, exported)
    m = Metrics()
    m.init_series(("prod",))
    m.last_rollback.labels(env="prod").set_to_current_time()
    parse(generate_latest(m.registry).decode(), exported)
    exported.update(dcgm_series(repo_root))

    docs = [d for d in yaml.safe_load_all(helm_template(repo_root, "prod")) if d]
    rules = manifests.extract_rules(docs)
    assert rules is not None
    records: dict[str, list[str]] = {}
    for g in rules["groups"]:
        for r in g["rules"]:
            if "record" in r:
                records.setdefault(r["record"], []).append(str(r["expr"]))
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard"))
    dash = json.loads(cm["data"]["llm-service.json"])

    problems: list[str] = []

    def check(where: str, sel: Selector, depth: int = 0) -> None:
        if sel.name in records:
            for expr in records[sel.name]:
                for inner in selectors(expr):
                    check(f"{where} -> {sel.name}", inner, depth + 1)
            return
        if sel.name.startswith("llm:"):
            problems.append(f"{where}: {sel.name} is no recording rule of the chart")
            return
        if sel.name not in exported:
            problems.append(f"{where}: {sel.name} is exported by nothing scraped")
            return
        for mt in sel.matchers:
            if mt.label in TARGET_LABELS or mt.label.startswith("exported_"):
                continue
            if not any(mt.label in s for s in exported[sel.name]):
                problems.append(f"{where}: {sel.name} has no label {mt.label}")

    queries = [(f"panel <{p['title']}>", t["expr"]) for p in dash["panels"] for t in p["targets"]]
    queries += [(f"annotation <{a['name']}>", a["expr"]) for a in dash["annotations"]["list"]]
    assert len(queries) >= 20
    for where, expr in queries:
        for sel in selectors(grafana_vars(expr, dash)):
            check(where, sel)
    # The time-per-output-token rules read vLLM's newer name or its older one: one of them suffices.
    problems = [p for p in problems if "time_per_output_token" not in p and "inter_token_latency" not in p]
    assert not problems, "\n".join(problems)


def test_the_gateway_rows_of_the_metric_label_table_match_a_live_scrape(
    repo_root: Path, gateway: Gateway, client: httpx.Client
) -> None:
    """docs/chart.md "Metrics the alerts read": each gateway row names a metric and exactly its own labels."""
    assert client.post("/v1/chat/completions", json=chat_body(), headers=gateway.auth()).status_code == 200
    # Time to first token is observed on streams.
    stream = client.post("/v1/chat/completions", json=chat_body(stream=True), headers=gateway.auth())
    assert stream.status_code == 200 and "data:" in stream.text
    exported = parse(gateway.metrics(), {})
    rows = {}
    for line in (repo_root / "docs/chart.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("gateway") and cells[1].startswith("`gateway_"):
            own = cells[2].split("+ target labels")[0].split("+ the same")[0]
            rows[cells[1].strip("`")] = {x for x in re.findall(r"`(\w+)`", own) if not x.startswith("_")}
    assert set(rows) == {
        "gateway_requests_total",
        "gateway_request_duration_seconds",
        "gateway_time_to_first_token_seconds",
    }
    for metric, documented in rows.items():
        samples = exported.get(metric) or exported.get(f"{metric}_bucket") or []
        assert samples, f"{metric} not exported after a request"
        labels = set().union(*(s.keys() for s in samples)) - {"le"}
        assert labels == documented - {"le"}, (metric, labels, documented)
