"""The rollback controller's Prometheus metrics (served on its HTTP port at /metrics).

Series the alerts of charts/rollback-controller (templates/prometheusrule-controller.yaml) are built on:

- `rollback_controller_webhooks_total{result}`: accepted, unauthorized, invalid, error (a webhook the
  controller answered 5xx so Alertmanager retries it);
- `rollback_controller_rollbacks_total{env,outcome}`: rolled_back, duplicate, rate_limited, error, ...;
- `rollback_controller_syncs_total{env,state}`: requested, held (a sync window), failed, not_configured;
- `rollback_controller_argocd_token_expiry_timestamp_seconds{token}`: the `exp` claim of each Argo CD
  token file, read at scrape time (a rotated Secret shows at once); no series for a token without `exp`
  (Argo CD issues project tokens without one unless `--expires-in` is given) or one that is not a JWT.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# Label values started at 0 (init_series): those the alerts select, and the ones beside them on dashboards.
WEBHOOK_RESULTS = ("accepted", "unauthorized", "invalid", "error")
ROLLBACK_OUTCOMES = ("rolled_back", "error")
SYNC_STATES = ("requested", "held", "failed", "not_configured")
EXPIRY_METRIC = "rollback_controller_argocd_token_expiry_timestamp_seconds"


def token_expiry(path: Path) -> float | None:
    """The `exp` claim (Unix seconds) of the JWT in `path`; None if the file is missing, not a JWT, or has no exp.

    The signature is not verified: argocd-server does that; this only reads when the token stops working.
    """
    try:
        token = path.read_text().strip()
    except OSError:
        return None
    try:
        claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": False})
    except jwt.InvalidTokenError:
        return None
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


class TokenExpiryCollector(Collector):
    """`exp` of each named token file, evaluated on every scrape."""

    def __init__(self, tokens: dict[str, Path]) -> None:
        self.tokens = tokens

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            EXPIRY_METRIC,
            "Unix time the Argo CD token expires (its JWT exp claim), by token (service, root).",
            labels=["token"],
        )
        for name, path in sorted(self.tokens.items()):
            exp = token_expiry(path)
            if exp is not None:
                family.add_metric([name], exp)
        yield family


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.rollbacks = Counter(
            "rollback_controller_rollbacks",
            "Rollback decisions by env and outcome (rolled_back, duplicate, rate_limited, error, ...).",
            ["env", "outcome"],
            registry=self.registry,
        )
        self.webhooks = Counter(
            "rollback_controller_webhooks",
            "Webhook requests by result (accepted, unauthorized, invalid, error).",
            ["result"],
            registry=self.registry,
        )
        self.syncs = Counter(
            "rollback_controller_syncs",
            "Argo CD sync requests after a rollback by env and state (requested, held, failed, not_configured).",
            ["env", "state"],
            registry=self.registry,
        )
        self.last_rollback = Gauge(
            "rollback_controller_last_rollback_timestamp_seconds",
            "Unix time of the last rollback commit pushed, by env.",
            ["env"],
            registry=self.registry,
        )

    def init_series(self, envs: tuple[str, ...]) -> None:
        """Start the series the alerts read at 0: `increase()` misses a counter's first sample, so a
        first error on a series born at 1 would never fire."""
        for result in WEBHOOK_RESULTS:
            self.webhooks.labels(result=result)
        for env in envs:
            for outcome in ROLLBACK_OUTCOMES:
                self.rollbacks.labels(env=env, outcome=outcome)
            for state in SYNC_STATES:
                self.syncs.labels(env=env, state=state)

    def watch_tokens(self, tokens: dict[str, Path]) -> None:
        """Export the expiry of these Argo CD token files (name -> path)."""
        if tokens:
            self.registry.register(TokenExpiryCollector(tokens))
