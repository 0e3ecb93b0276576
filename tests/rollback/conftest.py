"""Fixtures: a GitOps remote with v1 then v2 promoted into staging, and a live controller."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.core.context import RunContext
from pipeline.gitops.release import Release
from pipeline.runtime.procs import ManagedProcess, free_port
from pipeline.stages import promote
from tests.promotion.conftest import ci_evidence, ctx, make_release, prod_local_options, remote, source_tree  # noqa: F401

# A Wednesday outside every prod deny window: prod promotions of the tests must not depend on the day they run.
WEEKDAY = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def to_prod(remote: str, tmp_path: Path, rel: Release, n: int) -> None:  # noqa: F811
    """Promote `rel` ci → dev → staging → prod (local profile), the prod step evaluated on WEEKDAY."""
    c = RunContext(run_dir=tmp_path / f"prod{n}")
    dev = promote.PromoteOptions(to="dev", release=rel, evidence=ci_evidence(rel=rel), gitops_repo=remote)
    assert promote.run(dev, c).ok
    assert promote.run(promote.PromoteOptions(to="staging", gitops_repo=remote, policy_profile="local"), c).ok
    res = promote.run(prod_local_options(remote, now=WEEKDAY), c)
    assert res.ok, res.checks


TOKEN = "test-token-not-a-secret"


def promote_chain(remote: str, tmp_path: Path, releases: list[Release], env: str = "staging") -> None:  # noqa: F811
    for i, rel in enumerate(releases):
        c = RunContext(run_dir=tmp_path / f"p{i}")
        assert promote.run(
            promote.PromoteOptions(to="dev", release=rel, evidence=ci_evidence(rel=rel), gitops_repo=remote), c
        ).ok
        if env != "dev":
            r = promote.run(promote.PromoteOptions(to=env, gitops_repo=remote, policy_profile="local"), c)
            assert r.ok, r.checks


@pytest.fixture
def v1_v2(remote: str, tmp_path: Path, make_release: Callable[..., Release]) -> tuple[Release, Release]:  # noqa: F811
    v1, v2 = make_release(1), make_release(2)
    promote_chain(remote, tmp_path, [v1, v2])
    return v1, v2


def alert_payload(
    env: str = "staging",
    status: str = "firing",
    starts_at: str | None = None,
    fingerprint: str = "a1b2c3d4e5f60718",
    rollback: str = "true",
    group_key: str = '{}/{rollback="true"}:{alertname="LLMServiceHighErrorRate", env="staging"}',
) -> dict[str, Any]:
    """What Alertmanager POSTs (v0.25+): notify/webhook/webhook.go `Message` = template/template.go `Data`
    (receiver, status, alerts, groupLabels, commonLabels, commonAnnotations, externalURL) + version "4",
    groupKey, truncatedAlerts; each alert is template.go `Alert` (status, labels, annotations, startsAt,
    endsAt — Go's zero time "0001-01-01T00:00:00Z" while firing — generatorURL, fingerprint)."""
    starts = starts_at or (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    labels = {"alertname": "LLMServiceHighErrorRate", "severity": "critical", "rollback": rollback, "env": env}
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "rollback-controller",
        "groupLabels": {"alertname": "LLMServiceHighErrorRate"},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.invalid",
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": {"summary": "error ratio above SLO"},
                "startsAt": starts,
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.invalid/graph",
                "fingerprint": fingerprint,
            }
        ],
    }


class LiveController:
    def __init__(self, remote: str, tmp_path: Path, extra_env: dict[str, str] | None = None) -> None:  # noqa: F811
        self.remote, self.tmp_path, self.extra_env = remote, tmp_path, extra_env or {}
        self.audit = tmp_path / "audit.jsonl"
        self.proc: ManagedProcess | None = None
        self.url = ""

    def start(self) -> LiveController:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        argv = [
            sys.executable,
            "-m",
            "pipeline",
            "--run-dir",
            str(self.tmp_path / "ctl-run"),
            "rollback-controller",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--gitops-repo",
            self.remote,
            "--audit-file",
            str(self.audit),
            "--work-dir",
            str(self.tmp_path / "ctl-work"),
        ]
        env = {"ROLLBACK_CONTROLLER_TOKEN": TOKEN, **self.extra_env}
        self.proc = ManagedProcess(
            "rollback-controller",
            argv,
            self.tmp_path / "controller.log",
            env=env,
            cwd=Path(__file__).resolve().parents[2],
        ).start()
        self.proc.wait_http(f"{self.url}/healthz", timeout=30)
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()

    def post(self, payload: dict[str, Any], token: str | None = TOKEN, timeout: float = 30) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.post(f"{self.url}/webhook", json=payload, headers=headers, timeout=timeout)

    def audit_lines(self) -> list[dict[str, Any]]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines() if line.strip()]


@pytest.fixture
def controller(remote: str, tmp_path: Path) -> Iterator[LiveController]:  # noqa: F811
    ctl = LiveController(remote, tmp_path).start()
    try:
        yield ctl
    finally:
        ctl.stop()
