"""Locust: OpenAI-style users streaming chat completions through the gateway, judged by an SLO file.

    locust -f loadtests/locustfile.py --headless -H http://127.0.0.1:8080 -u 8 -t 20s \\
        --slo-file loadtests/slo/dev.yaml --llm-out-dir out/ --token-file tokens.txt

Distributed: the same flags on `--master` (gate, abort, evidence) and `--worker` processes
(per-request samples travel to the master in the worker reports).
Debug one user: `LOADTEST_HOST=http://127.0.0.1:8080 python loadtests/locustfile.py`.

Custom metrics appear in Locust's stats as request types TTFT, ITL, TPOT (ms), TOKENS
(output tokens per request, a count) and TOKENS/S; the POST row's time is the full E2E.
"""

from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any, TypeVar

import gevent
from locust import LoadTestShape, constant, events, run_single_user, task
from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

try:
    import loadtests  # noqa: F401
except ModuleNotFoundError:  # run straight from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests import gate
from loadtests.metrics import Sample, StreamError, StreamParser
from loadtests.slo import SLO
from loadtests.slo import load as load_slo
from loadtests.workload import Distribution, PromptFactory, load_prompts

log = logging.getLogger("loadtests")

CHAT_NAME = "chat/stream"

F = TypeVar("F", bound=Callable[..., Any])


def on(hook: Any) -> Callable[[F], F]:
    """`@on(events.x)`: Locust's own `add_listener` decorator is untyped; this keeps mypy strict."""

    def deco(fn: F) -> F:
        hook.add_listener(fn)
        return fn

    return deco


@on(events.init_command_line_parser)
def _add_flags(parser: Any) -> None:
    g = parser.add_argument_group("LLM load test")
    g.add_argument("--slo-file", default="", help="SLO YAML to gate on (no gate when empty)")
    g.add_argument("--llm-out-dir", default="", help="write slo.json and samples.jsonl here")
    g.add_argument("--shape", choices=["steady", "ramp", "spike"], default="", help="load shape (default: SLO file)")
    g.add_argument("--warmup-s", type=float, default=-1.0, help="seconds excluded from the gate (default: SLO file)")
    g.add_argument("--model", default=os.environ.get("LOADTEST_MODEL", "sim-llama"), help="served model name")
    g.add_argument("--token-file", default="", help="JWTs, one per line; user i sends token i mod n")
    g.add_argument("--prompt-tokens", default="", help="prompt length distribution (default: SLO file)")
    g.add_argument("--output-tokens", default="", help="output length distribution (default: SLO file)")
    g.add_argument("--seed", type=int, default=0, help="random seed for prompts and lengths")
    g.add_argument("--chat-path", default="/v1/chat/completions", help="chat completions path")
    g.add_argument("--request-timeout", type=float, default=60.0, help="per-request network timeout (s)")


class Run:
    """Per-process state: the SLO, the samples (master/local), the run window, abort reason."""

    slo: SLO | None = None
    samples: list[Sample] = []
    outbox: list[dict[str, Any]] = []  # worker side: samples not yet sent to the master
    t_start: float = 0.0
    t_end: float = 0.0
    warmup_s: float = 0.0
    aborted: str = ""
    tokens: list[str] = []
    prompt_dist = Distribution("uniform", 32, 128)
    output_dist = Distribution("uniform", 16, 64)
    prompts: list[str] = []


def _opt(env: Environment, name: str, default: Any = None) -> Any:
    opts = env.parsed_options
    return getattr(opts, name, default) if opts is not None else default


@on(events.init)
def _init(environment: Environment, **_: Any) -> None:
    slo_file = _opt(environment, "slo_file", "")
    Run.slo = load_slo(Path(slo_file)) if slo_file else None
    wl = Run.slo.workload if Run.slo else None
    Run.prompt_dist = Distribution.parse(
        _opt(environment, "prompt_tokens") or (wl.prompt_tokens if wl else "uniform:32:128")
    )
    Run.output_dist = Distribution.parse(
        _opt(environment, "output_tokens") or (wl.output_tokens if wl else "uniform:16:64")
    )
    warm = _opt(environment, "warmup_s", -1.0)
    Run.warmup_s = warm if warm is not None and warm >= 0 else (Run.slo.run.warmup_s if Run.slo else 0.0)
    Run.prompts = load_prompts()
    token_file = _opt(environment, "token_file", "")
    if token_file:
        Run.tokens = [t.strip() for t in Path(token_file).read_text().splitlines() if t.strip()]
    elif os.environ.get("LOADTEST_TOKEN"):
        Run.tokens = [os.environ["LOADTEST_TOKEN"]]
    Run.samples, Run.outbox, Run.aborted = [], [], ""
    if isinstance(environment.runner, WorkerRunner):
        on(environment.events.report_to_master)(_ship_samples)
    elif isinstance(environment.runner, MasterRunner):
        on(environment.events.worker_report)(_receive_samples)


def _ship_samples(client_id: str, data: dict[str, Any]) -> None:
    data["llm_samples"], Run.outbox = Run.outbox, []


def _receive_samples(client_id: str, data: dict[str, Any]) -> None:
    Run.samples.extend(Sample.from_dict(d) for d in data.get("llm_samples", []))


def _record(environment: Environment, sample: Sample) -> None:
    if isinstance(environment.runner, WorkerRunner):
        Run.outbox.append(sample.to_dict())
    else:
        Run.samples.append(sample)


@on(events.test_start)
def _test_start(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    Run.t_start = time.time()
    gevent.spawn(_warmup_reset, environment)
    if Run.slo is not None and Run.slo.abort is not None:
        gevent.spawn(_abort_monitor, environment)


def _warmup_reset(environment: Environment) -> None:
    # Locust's own CSV/HTML numbers then match the gate's window (warm-up excluded).
    if Run.warmup_s > 0:
        gevent.sleep(Run.warmup_s)
        if environment.runner is not None:
            environment.runner.stats.reset_all()
            log.info("warm-up of %.1fs over: Locust stats reset", Run.warmup_s)


def _abort_monitor(environment: Environment) -> None:
    """k6-style abortOnFail: stop early when the recent error rate explodes, after a grace period."""
    assert Run.slo is not None and Run.slo.abort is not None
    ab = Run.slo.abort
    while environment.runner is not None and environment.runner.state not in ("stopped", "quitting"):
        gevent.sleep(0.5)
        now = time.time()
        if now - Run.t_start < ab.grace_s:
            continue
        recent = [s for s in Run.samples if s.start + s.e2e_ms / 1000.0 >= now - ab.window_s]
        if len(recent) < ab.min_requests:
            continue
        rate = sum(1 for s in recent if not s.ok) / len(recent)
        if rate >= ab.error_rate:
            Run.aborted = (
                f"error rate {rate:.1%} over the last {ab.window_s:g}s >= abort.error_rate {ab.error_rate:.1%} "
                f"(after {now - Run.t_start:.1f}s, grace {ab.grace_s:g}s)"
            )
            log.error("ABORT: %s", Run.aborted)
            environment.runner.quit()
            return


@on(events.test_stop)
def _test_stop(environment: Environment, **_: Any) -> None:
    if not isinstance(environment.runner, WorkerRunner):
        Run.t_end = time.time()


@on(events.quitting)
def _quitting(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    t_end = Run.t_end or time.time()
    out = _opt(environment, "llm_out_dir", "")
    out_dir = Path(out) if out else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        import json

        with (out_dir / "samples.jsonl").open("w") as f:
            for s in Run.samples:
                f.write(json.dumps(s.to_dict()) + "\n")
    if Run.slo is None:
        return
    slo = Run.slo.model_copy(update={"run": Run.slo.run.model_copy(update={"warmup_s": Run.warmup_s})})
    report = gate.evaluate(slo, Run.samples, t_start=Run.t_start, t_end=t_end, aborted=Run.aborted)
    if out_dir is not None:
        report.write(out_dir / "slo.json")
    log.info("SLO gate\n%s", report.table())
    environment.process_exit_code = 0 if report.passed else 1


_user_ids = count()


class ChatUser(FastHttpUser):
    """One simulated client: streams a chat completion, back to back (closed loop, like vLLM's max-concurrency)."""

    wait_time = constant(0)
    host = os.environ.get("LOADTEST_HOST", "http://127.0.0.1:8080")
    # Streams hold the connection; one per user is what a client SDK does.
    concurrency = 1

    def on_start(self) -> None:
        self.uid = next(_user_ids)
        seed = int(_opt(self.environment, "seed", 0) or 0)
        self.rng = random.Random(seed * 100_003 + self.uid)  # noqa: S311 - workload sampling, not secrets
        self.prompts = PromptFactory(Run.prompts or load_prompts(), self.rng)
        self.headers = {"Accept": "text/event-stream"}
        if Run.tokens:
            self.headers["Authorization"] = f"Bearer {Run.tokens[self.uid % len(Run.tokens)]}"
        self.model = _opt(self.environment, "model", "sim-llama")
        self.path = _opt(self.environment, "chat_path", "/v1/chat/completions")
        self.timeout = float(_opt(self.environment, "request_timeout", 60.0) or 60.0)

    @task
    def chat(self) -> None:
        prompt_len = Run.prompt_dist.sample(self.rng)
        max_tokens = Run.output_dist.sample(self.rng)
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": self.prompts.make(prompt_len)}],
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        parser = StreamParser()
        started = time.time()
        t0 = time.perf_counter()
        status = 0
        error = ""
        nbytes = 0
        with self.client.post(
            self.path, json=body, headers=self.headers, name=CHAT_NAME, stream=True, catch_response=True
        ) as resp:
            status = int(resp.status_code or 0)
            try:
                if getattr(resp, "error", None) is not None and status == 0:
                    raise StreamError(f"connection error: {resp.error}")
                if status != 200:
                    raise StreamError(f"HTTP {status}: {(resp.text or '')[:120]}")
                ctype = (resp.headers or {}).get("content-type", "") if resp.headers is not None else ""
                if "text/event-stream" not in ctype:
                    raise StreamError(f"HTTP 200 but content-type {ctype!r}, not an SSE stream")
                nbytes = self._consume(resp, parser, t0)
                parser.finish()
            except StreamError as exc:
                error = str(exc)
            except Exception as exc:  # a socket reset mid-stream is a failed request, not a crash
                error = f"{type(exc).__name__}: {exc}"
            e2e_ms = (time.perf_counter() - t0) * 1000.0
            # Locust measured up to the headers; the request row should show the whole stream.
            resp.request_meta["response_time"] = e2e_ms
            resp.request_meta["response_length"] = nbytes
            if error:
                resp.failure(error)
            else:
                resp.success()
        sample = Sample(
            start=started,
            ok=not error,
            e2e_ms=e2e_ms,
            ttft_ms=parser.ttft_ms,
            itl_ms=parser.itl_ms if not error else [],
            output_tokens=parser.output_tokens if not error else 0,
            prompt_tokens=parser.usage_prompt_tokens or prompt_len,
            status=status,
            error=error,
        )
        _record(self.environment, sample)
        if not error:
            self._fire_metrics(sample)

    def _consume(self, resp: Any, parser: StreamParser, t0: float) -> int:
        raw = getattr(resp, "_response", None)
        if raw is None:
            raise StreamError("no streaming body to read")
        # readline returns as soon as one SSE line is in; iter_content(n) would wait for n bytes and
        # batch tokens, which hides the real TTFT/ITL.
        nbytes = 0
        deadline = t0 + self.timeout
        while True:
            line: bytes = raw.readline(b"\n")
            if not line:
                break
            nbytes += len(line)
            parser.feed(line.decode("utf-8", errors="replace"), (time.perf_counter() - t0) * 1000.0)
            if time.perf_counter() > deadline:
                raise StreamError(f"stream exceeded {self.timeout:g}s")
        return nbytes

    def _fire_metrics(self, s: Sample) -> None:
        fire = self.environment.events.request.fire
        common: dict[str, Any] = {"name": CHAT_NAME, "response_length": 0, "exception": None, "context": {}}
        if s.ttft_ms is not None:
            fire(request_type="TTFT", response_time=s.ttft_ms, **common)
        for gap in s.itl_ms:
            fire(request_type="ITL", response_time=gap, **common)
        if (tpot := s.tpot_ms) is not None:
            fire(request_type="TPOT", response_time=tpot, **common)
        fire(request_type="TOKENS", response_time=s.output_tokens, **common)
        fire(request_type="TOKENS/S", response_time=s.tokens_per_s, **common)


class LLMShape(LoadTestShape):
    """steady: -u users for -t; ramp: 1 -> -u over the first 60%, then hold; spike: -u/4 with a burst to -u
    in the middle fifth. Reads Locust's common options (-u, -r, -t) and --shape."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        env = self.runner.environment
        users = int(_opt(env, "num_users", 0) or (Run.slo.run.users if Run.slo else 1))
        run_time = float(_opt(env, "run_time", 0) or (Run.slo.run.duration_s if Run.slo else 60))
        shape = _opt(env, "shape", "") or (Run.slo.run.shape if Run.slo else "steady")
        rate = float(_opt(env, "spawn_rate", 0) or users)
        t = time.perf_counter() - float(self.start_time)
        if t >= run_time or Run.aborted:
            return None
        if shape == "ramp":
            frac = min(1.0, t / max(run_time * 0.6, 1e-9))
            return max(1, math.ceil(users * frac)), max(rate, users)
        if shape == "spike":
            base = max(1, users // 4)
            in_spike = 0.4 * run_time <= t < 0.6 * run_time
            return (users if in_spike else base), max(rate, users)
        return users, rate


if __name__ == "__main__":
    run_single_user(ChatUser)
