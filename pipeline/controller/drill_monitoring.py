"""Real Prometheus + Alertmanager for the rollback drill, configured from the charts.

The Alertmanager route's matchers come from the rollback-controller chart's values, so the drill fails
if they stop lining up with the chart's alert labels; Prometheus scrapes the gateway targets it is given
(the live pod's published gateway port, or the gateway processes) with the labels the rules select on.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from ruamel.yaml import YAML

from pipeline.runtime.procs import free_port, running
from pipeline.runtime.tools import REPO_ROOT, require

# The chart's rollback trigger (the alert labelled rollback="true"; chart_alert_rules finds it by label).
ALERT = "LLMErrorBudgetBurnFast"


def route_matchers() -> list[dict[str, str]]:
    """The AlertmanagerConfig route matchers of charts/rollback-controller (values.yaml)."""
    values = YAML(typ="safe").load((REPO_ROOT / "charts" / "rollback-controller" / "values.yaml").read_text())
    return list(values["alertmanagerConfig"]["matchers"])


@contextlib.contextmanager
def monitoring(
    work: Path,
    rules: dict[str, Any],
    gateway_targets: list[str],
    target_labels: dict[str, str],
    webhook_url: str,
    token_file: Path,
    scrape_interval: str = "1s",
    eval_interval: str = "1s",
    am_timers: dict[str, str] | None = None,
    scrape_configs: list[dict[str, Any]] | None = None,
) -> Iterator[tuple[str, str]]:
    """Real Alertmanager + Prometheus on free loopback ports; stopped by PID on exit.

    scrape_configs: instead of one static job of `gateway_targets` (the canary drill's pods come and go:
    it passes a file_sd job).
    """
    timers = am_timers or {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"}
    y = YAML(typ="safe")
    y.default_flow_style = False
    am_port, prom_port = free_port(), free_port()
    matchers = [f'{m["name"]}{m.get("matchType", "=")}"{m["value"]}"' for m in route_matchers()]
    am_cfg = {
        "route": {
            "receiver": "blackhole",
            "routes": [
                {
                    "receiver": "rollback-controller",
                    "matchers": matchers,
                    "group_by": ["alertname", "env"],
                    "group_wait": timers["group_wait"],
                    "group_interval": timers["group_interval"],
                    "repeat_interval": timers["repeat_interval"],
                }
            ],
        },
        "receivers": [
            {"name": "blackhole"},
            {
                "name": "rollback-controller",
                "webhook_configs": [
                    {
                        "url": webhook_url,
                        "send_resolved": True,
                        "http_config": {"authorization": {"type": "Bearer", "credentials_file": str(token_file)}},
                    }
                ],
            },
        ],
    }
    with (work / "alertmanager.yml").open("w") as fh:
        y.dump(am_cfg, fh)
    with (work / "rules.yml").open("w") as fh:
        y.dump(rules, fh)
    prom_cfg = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": eval_interval},
        "rule_files": [str(work / "rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": scrape_configs
        or [{"job_name": "gateway", "static_configs": [{"targets": gateway_targets, "labels": target_labels}]}],
    }
    with (work / "prometheus.yml").open("w") as fh:
        y.dump(prom_cfg, fh)
    subprocess.run([require("promtool"), "check", "rules", str(work / "rules.yml")], check=True, capture_output=True)
    am_argv = [
        require("prometheus-alertmanager"),
        f"--config.file={work / 'alertmanager.yml'}",
        f"--storage.path={work / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{am_port}",
        "--cluster.listen-address=",
    ]
    prom_argv = [
        require("prometheus"),
        f"--config.file={work / 'prometheus.yml'}",
        f"--storage.tsdb.path={work / 'prom-data'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
    ]
    am_url, prom_url = f"http://127.0.0.1:{am_port}", f"http://127.0.0.1:{prom_port}"
    with (
        running("alertmanager", am_argv, work / "logs" / "alertmanager.log", ready_url=f"{am_url}/-/ready"),
        running("prometheus", prom_argv, work / "logs" / "prometheus.log", ready_url=f"{prom_url}/-/ready"),
    ):
        yield prom_url, am_url


def alert_state(prom_url: str, alerts: tuple[str, ...] = (ALERT,)) -> str:
    r = httpx.get(f"{prom_url}/api/v1/alerts", timeout=5).json()
    states = [a["state"] for a in r["data"]["alerts"] if a["labels"].get("alertname") in alerts]
    return "firing" if "firing" in states else ("pending" if states else "inactive")
