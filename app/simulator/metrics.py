"""Prometheus metrics under vLLM's own names, types, labels and buckets (V1 engine, 0.11+).

Dashboards, alerts and autoscalers written against real vLLM must work unchanged
against the simulator, so nothing here is renamed or simplified.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# vLLM's V1 bucket boundaries (vllm/v1/metrics/loggers.py).
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
    50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip

FINISHED_REASONS = ("stop", "length", "abort")

# (attribute, vLLM name, help, buckets), in vLLM's registration order. Buckets `None`: the
# 1-2-5 token buckets up to max_model_len.
HISTOGRAMS: tuple[tuple[str, str, str, tuple[float, ...] | None], ...] = (
    ("request_prompt_tokens", "vllm:request_prompt_tokens", "Number of prefill tokens processed.", None),
    ("request_generation_tokens", "vllm:request_generation_tokens", "Number of generation tokens processed.", None),
    ("request_max_tokens", "vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.", None),
    ("ttft", "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS),
    ("itl", "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", ITL_BUCKETS),
    ("tpot", "vllm:request_time_per_output_token_seconds", "Histogram of time_per_output_token_seconds per request.", ITL_BUCKETS),
    ("e2e", "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", REQUEST_LATENCY_BUCKETS),
    ("queue_time", "vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", REQUEST_LATENCY_BUCKETS),
    ("inference_time", "vllm:request_inference_time_seconds", "Histogram of time spent in RUNNING phase for request.", REQUEST_LATENCY_BUCKETS),
    ("prefill_time", "vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.", REQUEST_LATENCY_BUCKETS),
    ("decode_time", "vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.", REQUEST_LATENCY_BUCKETS),
)  # fmt: skip


def _one_two_five_buckets(limit: int) -> list[float]:
    """vLLM's build_1_2_5_buckets: 1, 2, 5, 10, 20, 50, ... up to `limit`."""
    out: list[float] = []
    exp = 0
    while True:
        for m in (1, 2, 5):
            v = m * 10**exp
            if v > limit:
                return out
            out.append(float(v))
        exp += 1


class SimMetrics:
    """One registry per app, so several simulators can live in one test process."""

    # Set from HISTOGRAMS in __init__ (labelled children).
    request_prompt_tokens: Histogram
    request_generation_tokens: Histogram
    request_max_tokens: Histogram
    ttft: Histogram
    itl: Histogram
    tpot: Histogram
    e2e: Histogram
    queue_time: Histogram
    inference_time: Histogram
    prefill_time: Histogram
    decode_time: Histogram

    def __init__(self, model_name: str, max_model_len: int, engine: str = "0") -> None:
        self.registry = CollectorRegistry()
        names = ["model_name", "engine"]
        values = (model_name, engine)
        r = self.registry
        self._running = Gauge(
            "vllm:num_requests_running", "Number of requests in model execution batches.", names, registry=r
        )
        self._waiting = Gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed.", names, registry=r
        )
        self._kv = Gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", names, registry=r)
        self.running = self._running.labels(*values)
        self.waiting = self._waiting.labels(*values)
        self.kv_usage = self._kv.labels(*values)

        self.preemptions = Counter(
            "vllm:num_preemptions", "Cumulative number of preemption from the engine.", names, registry=r
        ).labels(*values)
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", names, registry=r
        ).labels(*values)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Number of generation tokens processed.", names, registry=r
        ).labels(*values)
        success = Counter(
            "vllm:request_success", "Count of successfully processed requests.", [*names, "finished_reason"], registry=r
        )
        self.success = {reason: success.labels(*values, reason) for reason in FINISHED_REASONS}

        tok_buckets = _one_two_five_buckets(max_model_len)
        for attr, name, doc, buckets in HISTOGRAMS:
            hist = Histogram(name, doc, names, buckets=tok_buckets if buckets is None else buckets, registry=r)
            setattr(self, attr, hist.labels(*values))

    def bind_gauges(self, running: Callable[[], float], waiting: Callable[[], float], kv: Callable[[], float]) -> None:
        """Gauges read the engine's live counters at scrape time: no per-request gauge writes."""
        self.running.set_function(running)
        self.waiting.set_function(waiting)
        self.kv_usage.set_function(kv)
