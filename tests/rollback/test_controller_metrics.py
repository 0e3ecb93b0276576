"""The controller's /metrics on a live process: what a webhook moves, and what the chart's alerts read.

The controller runs as the chart runs it (`python -m pipeline rollback-controller`, uvicorn on a free
loopback port) with Argo CD token files; argocd-server is a loopback port nobody listens on, so the
sync request of a rollback fails as it does when argocd-server is unreachable.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import jwt
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pipeline.checks import manifests
from pipeline.gitops.release import Release
from pipeline.runtime.procs import free_port
from pipeline.runtime.tools import require
from tests.helpers.promql import selectors
from tests.rollback.conftest import LiveController, alert_payload

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# Labels Prometheus adds to every series it scrapes through the chart's ServiceMonitor (target labels).
TARGET_LABELS = {"namespace", "service", "pod", "job", "instance", "container", "endpoint"}
APP_VALUES = Path("environments/argocd/rollback-controller-values.yaml")


def scrape(url: str) -> Samples:
    resp = httpx.get(f"{url}/metrics", timeout=10)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(resp.text)
        for s in fam.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def token(path: Path, exp: int | None) -> Path:
    claims = {"iss": "argocd", "sub": "proj:llm-service:rollback-controller", "iat": 1_700_000_000}
    if exp is not None:
        claims["exp"] = exp
    path.write_text(jwt.encode(claims, "test-signing-key-not-a-secret-0123456789", algorithm="HS256") + "\n")
    return path


@pytest.fixture
def live(remote: str, tmp_path: Path, v1_v2: tuple[Release, Release]) -> LiveController:
    """A controller over v1 → v2 in staging, with an expiring service token and a root token."""
    env = {
        "ARGOCD_SERVER": f"http://127.0.0.1:{free_port()}",  # nobody listens: the sync request fails
        "ARGOCD_AUTH_TOKEN_FILE": str(token(tmp_path / "argocd-token", exp=int(time.time()) + 3 * 86400)),
        "ARGOCD_ROOT_TOKEN_FILE": str(token(tmp_path / "argocd-root-token", exp=1_800_000_000)),
        "ARGOCD_SPEC_WAIT": "1",
    }
    return LiveController(remote, tmp_path, extra_env=env)


def test_a_webhook_moves_the_counters_the_alerts_read(live: LiveController) -> None:
    live.start()
    try:
        before = scrape(live.url)
        # Started at 0 (increase() misses a counter's first sample).
        for result in ("accepted", "unauthorized", "invalid", "error"):
            assert ("rollback_controller_webhooks_total", frozenset({("result", result)})) in before
        assert live.post(alert_payload(), token="wrong").status_code == 401
        resp = live.post(alert_payload(), timeout=60)
        assert resp.status_code == 200, resp.text
        assert [r["outcome"] for r in resp.json()["results"]] == ["rolled_back"]
        assert resp.json()["results"][0]["sync"]["state"] == "failed"
        after = scrape(live.url)
    finally:
        live.stop()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("rollback_controller_webhooks_total", result="unauthorized") == 1
    assert delta("rollback_controller_webhooks_total", result="accepted") == 1
    assert delta("rollback_controller_webhooks_total", result="error") == 0
    assert delta("rollback_controller_rollbacks_total", env="staging", outcome="rolled_back") == 1
    assert delta("rollback_controller_syncs_total", env="staging", state="failed") == 1
    assert delta("rollback_controller_syncs_total", env="staging", state="requested") == 0
    assert value(after, "rollback_controller_last_rollback_timestamp_seconds", env="staging") > time.time() - 120
    # exp of each token file, read at scrape time.
    service_exp = jwt.decode((live.tmp_path / "argocd-token").read_text().strip(), options={"verify_signature": False})[
        "exp"
    ]
    expiry = "rollback_controller_argocd_token_expiry_timestamp_seconds"
    assert value(after, expiry, token="service") == service_exp
    assert value(after, expiry, token="root") == 1_800_000_000


def test_a_rotated_token_shows_at_the_next_scrape_and_a_token_without_exp_has_no_series(
    live: LiveController,
) -> None:
    live.start()
    try:
        expiry = "rollback_controller_argocd_token_expiry_timestamp_seconds"
        token(live.tmp_path / "argocd-token", exp=1_900_000_000)
        assert value(scrape(live.url), expiry, token="service") == 1_900_000_000
        token(live.tmp_path / "argocd-token", exp=None)  # argocd proj role create-token without --expires-in
        (live.tmp_path / "argocd-root-token").write_text("not-a-jwt\n")
        assert not [key for key in scrape(live.url) if key[0] == expiry]
    finally:
        live.stop()


def _alert_rules(repo_root: Path) -> list[dict[str, object]]:
    """The chart's alerts as the rollback-controller Application renders them."""
    argv = [require("helm"), "template", "rollback-controller", str(repo_root / "charts/rollback-controller")]
    argv += ["--namespace", "llm-rollback", "-f", str(repo_root / APP_VALUES)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    rules = manifests.extract_rules([d for d in yaml.safe_load_all(proc.stdout) if d])
    assert rules is not None
    return manifests.alert_rules(rules)


def test_every_alert_reads_series_the_live_controller_exports(repo_root: Path, live: LiveController) -> None:
    live.start()
    try:
        # One rollback, so every series family the alerts read exists on the scrape.
        assert live.post(alert_payload(), timeout=60).status_code == 200
        exported = scrape(live.url)
    finally:
        live.stop()
    alerts = _alert_rules(repo_root)
    assert len(alerts) == 6
    problems = []
    for rule in alerts:
        for sel in selectors(str(rule["expr"])):
            series = [dict(labels) for name, labels in exported if name == sel.name]
            if not series:
                problems.append(f"{rule['alert']}: {sel.name} is not exported")
                continue
            own = [m for m in sel.matchers if m.label not in TARGET_LABELS]
            # Some exported series satisfies every matcher on the metric's own labels.
            if not any(all(m.matches(s.get(m.label, "")) for m in own) for s in series):
                problems.append(f"{rule['alert']}: no exported {sel.name} series matches {own}")
            for m in own:
                if not any(m.label in s for s in series):
                    problems.append(f"{rule['alert']}: {sel.name} has no label {m.label}")
            # Regex alternatives each name a value the controller exports (a typo would match nothing ever).
            for m in own:
                if m.op == "=~":
                    values = {s.get(m.label, "") for s in series}
                    problems += [
                        f"{rule['alert']}: {sel.name}{{{m.label}={alt!r}}} is never exported"
                        for alt in m.value.split("|")
                        if alt not in values
                    ]
            target = {m.label for m in sel.matchers if m.label in TARGET_LABELS}
            if target != {"namespace", "service"}:
                problems.append(f"{rule['alert']}: {sel.name} is not scoped to this release's target: {target}")
    assert not problems, "\n".join(problems)
