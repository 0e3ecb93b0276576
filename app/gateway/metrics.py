"""Prometheus metrics. Several workers: set PROMETHEUS_MULTIPROC_DIR to an empty directory
before start-up (`python -m app.gateway --workers N` does it for you) and /metrics
aggregates every worker's values through prometheus-client's multiprocess collector."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

# `release`: the release id this process runs (GATEWAY_RELEASE, rendered by the chart from the env's
# release pins), constant per process. `cause`: who is responsible for a 5xx -- `release` (the gateway
# or its vLLM, i.e. what a rollback fixes) or a dependency (`idp`); `none` for every status below 500.
# The error-SLO burn-rate alerts (the rollback trigger) count only cause="release", per release.
CAUSE_NONE, CAUSE_RELEASE, CAUSE_IDP = "none", "release", "idp"
# Error kinds (GatewayError.kind) that are a dependency's failure, not the release's.
DEPENDENCY_CAUSES = {"jwks_unavailable": CAUSE_IDP}

REQUESTS = Counter(
    "gateway_requests_total",
    "Requests by route, model, HTTP status, release and cause of a 5xx.",
    ["route", "model", "status", "release", "cause"],
)
LATENCY = Histogram(
    "gateway_request_duration_seconds",
    "Request latency until the last byte.",
    ["route", "release"],
    buckets=LATENCY_BUCKETS,
)
TTFT = Histogram(
    "gateway_time_to_first_token_seconds",
    "Streaming: time from request to the first forwarded chunk.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
PROMPT_TOKENS = Counter("gateway_prompt_tokens_total", "Prompt tokens (as reported by the upstream).", ["model"])
COMPLETION_TOKENS = Counter(
    "gateway_completion_tokens_total", "Completion tokens (as reported by the upstream).", ["model"]
)
RATE_LIMITED = Counter("gateway_rate_limited_total", "Requests refused by the rate limiter.", ["reason"])
RATELIMIT_BACKEND_ERRORS = Counter(
    "gateway_ratelimit_backend_errors_total", "Rate-limit store (Redis) errors; local limits were used."
)
AUTH_FAILURES = Counter("gateway_auth_failures_total", "Rejected credentials by reason.", ["reason"])
UPSTREAM_ERRORS = Counter("gateway_upstream_errors_total", "Upstream failures by kind.", ["kind"])
IN_FLIGHT = Gauge("gateway_in_flight_requests", "Requests being served.", multiprocess_mode="livesum")
READY = Gauge("gateway_ready", "1 when the readiness probe passes.", multiprocess_mode="livemin")


def cause(status: int, error: str | None) -> str:
    """The `cause` label of a request: bounded to none / release / the DEPENDENCY_CAUSES values."""
    if status < 500:
        return CAUSE_NONE
    return DEPENDENCY_CAUSES.get(error or "", CAUSE_RELEASE)


def render() -> tuple[bytes, str]:
    """The exposition text for /metrics (aggregated over workers in multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
