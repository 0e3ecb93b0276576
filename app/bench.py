"""Gateway overhead benchmark: an upstream directly vs through the gateway.

    python -m app.bench [--duration 10] [--concurrency 16] [--out .runs/bench/gateway.json]

Starts the simulator (zero latency) and the gateway (JWT auth, RBAC, rate limits with
high limits, audit log to a file: everything a production request pays for) with
`pipeline.runtime.local_stack.local_stack`, then drives each target from a separate load-generator
process (a minimal keep-alive HTTP/1.1 client on uvloop, so the generator costs as
little CPU as possible) at fixed concurrency: unary chat completions and streams.
The same comparison runs a second time against a static upstream (canned replies, next to no
CPU), so its added latency and CPU per request are the gateway's alone. Each gateway run is made
with both upstream clients in the same run (`h1`, the default, and `aiohttp`): the measured
reason the default is what it is (app/gateway/h1.py).
Prints the RPS ratio, the added p50/p99 latency and first-chunk latency for streams,
and writes the numbers as JSON. Targets (2 cores, 16 concurrent): ratio >= 0.70,
added p50 <= 1 ms, added p99 <= 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

TARGETS = {"rps_ratio": 0.70, "added_p50_ms": 1.0, "added_p99_ms": 5.0}
WARMUP_SECONDS = 0.5  # per load-generator run: connections opened, caches warm


# --------------------------------------------------------------------------- load generator
async def _one_connection(
    host: str, port: int, request: bytes, stop_at: float, lat: list[float], first: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lower = head.lower()
            t_first: float | None = None
            if b"transfer-encoding: chunked" in lower:
                while True:
                    size = int((await reader.readline()).strip(), 16)
                    if size == 0:
                        await reader.readline()
                        break
                    await reader.readexactly(size + 2)
                    if t_first is None:
                        t_first = time.perf_counter() - t0
            else:
                i = lower.find(b"content-length:")
                n = int(lower[i + 15 : lower.find(b"\r\n", i)]) if i >= 0 else 0
                await reader.readexactly(n)
            lat.append(time.perf_counter() - t0)
            if t_first is not None:
                first.append(t_first)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


async def _load(
    url: str, path: str, body: bytes, token: str | None, concurrency: int, duration: float
) -> dict[str, Any]:
    u = urlparse(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    request = head.encode() + b"\r\n" + body
    # Warm-up (connections, caches), then the measured window.
    for window, keep in ((WARMUP_SECONDS, False), (duration, True)):
        lat: list[float] = []
        first: list[float] = []
        errors: list[int] = []
        stop_at = time.perf_counter() + window
        t0 = time.perf_counter()
        await asyncio.gather(
            *(_one_connection(host, port, request, stop_at, lat, first, errors) for _ in range(concurrency))
        )
        elapsed = time.perf_counter() - t0
        if keep:
            return {"requests": len(lat), "seconds": elapsed, "latency": lat, "first_chunk": first, "errors": errors}
    raise AssertionError("unreachable")


def loadgen_main(args: argparse.Namespace) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        pass
    body = Path(args.body).read_bytes()
    res = asyncio.run(_load(args.url, args.path, body, os.environ.get("BENCH_TOKEN"), args.concurrency, args.duration))
    # A file, not stdout: the event loop may leave stdout non-blocking and truncate large writes.
    Path(args.out).write_text(json.dumps(res))
    return 0


# --------------------------------------------------------------------------- static upstream
_STATIC_CHAT = (
    b'{"id":"static","object":"chat.completion","created":0,"model":"bench-model","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"static reply"},"finish_reason":"length"}],'
    b'"usage":{"prompt_tokens":10,"completion_tokens":16,"total_tokens":26}}'
)


def _static_stream(tokens: int) -> bytes:
    ev = (
        b'data: {"id":"static","object":"chat.completion.chunk","created":0,"model":"bench-model",'
        b'"choices":[{"index":0,"delta":{"content":" tok"},"finish_reason":null}]}\n\n'
    )
    usage = (
        b'data: {"id":"static","object":"chat.completion.chunk","created":0,"model":"bench-model","choices":[],'
        b'"usage":{"prompt_tokens":10,"completion_tokens":%d,"total_tokens":%d}}\n\n' % (tokens, tokens + 10)
    )
    body = ev * tokens + usage + b"data: [DONE]\n\n"
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


class _StaticProtocol(asyncio.Protocol):
    """Replies canned bytes (a chat completion, an SSE stream, the model list): an upstream that
    costs next to no CPU, so direct-vs-gateway through it measures the gateway alone."""

    def __init__(self, replies: dict[str, bytes]) -> None:
        import httptools

        self.replies = replies
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception:  # a broken request: drop the connection
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        self.body.clear()
        if self.url.startswith(b"/v1/models"):
            key = "models"
        elif self.url == b"/health":
            key = "health"
        elif b'"stream":true' in body.replace(b" ", b""):
            key = "stream"
        else:
            key = "chat"
        assert self.transport is not None
        self.transport.write(self.replies[key])


def static_main(args: argparse.Namespace) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass

    def reply(body: bytes, ctype: bytes = b"application/json") -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (ctype, len(body), body)

    models = json.dumps(
        {"object": "list", "data": [{"id": args.model, "object": "model", "max_model_len": 4096}]}
    ).encode()
    replies = {
        "models": reply(models),
        "health": reply(b""),
        "chat": reply(_STATIC_CHAT),
        "stream": b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        + _static_stream(args.tokens),
    }

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _StaticProtocol(replies), "127.0.0.1", args.port)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())
    return 0


# --------------------------------------------------------------------------- driver
def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _summary(raw: dict[str, Any]) -> dict[str, Any]:
    lat = raw["latency"]
    first = raw["first_chunk"]
    out = {
        "requests": raw["requests"],
        "errors": len(raw["errors"]),
        "rps": raw["requests"] / raw["seconds"],
        "p50_ms": _pct(lat, 0.50) * 1000,
        "p99_ms": _pct(lat, 0.99) * 1000,
        "mean_ms": statistics.fmean(lat) * 1000 if lat else float("nan"),
    }
    if first:
        out["first_chunk_p50_ms"] = _pct(first, 0.50) * 1000
        out["first_chunk_p99_ms"] = _pct(first, 0.99) * 1000
    return out


def _cpu_seconds(pid: int) -> float:
    """User+system CPU of a process (Linux /proc); NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def _tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its live descendants (gateway workers are children of uvicorn's supervisor)."""
    total = _cpu_seconds(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return total
    return total + sum(_tree_cpu_seconds(int(c)) for c in children)


def _run_load(
    url: str, body: Path, token: str | None, concurrency: int, duration: float, pids: dict[str, int]
) -> dict[str, Any]:
    """One load-generator run; raw latencies, request count, seconds and CPU seconds per process."""
    argv = [sys.executable, "-m", "app.bench", "loadgen", "--url", url, "--path", "/v1/chat/completions"]
    raw = body.with_suffix(".result.json")
    argv += ["--body", str(body), "--concurrency", str(concurrency), "--duration", str(duration), "--out", str(raw)]
    # The token goes through the environment, not argv (visible in ps).
    env = {**os.environ, "BENCH_TOKEN": token or ""}
    before = {name: _tree_cpu_seconds(pid) for name, pid in pids.items()}
    lg0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, env=env, check=True, timeout=duration + 120)
    lg1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = {name: _tree_cpu_seconds(pid) for name, pid in pids.items()}
    before["loadgen"] = lg0.ru_utime + lg0.ru_stime
    after["loadgen"] = lg1.ru_utime + lg1.ru_stime
    out: dict[str, Any] = json.loads(raw.read_text())
    # CPU covers the warm-up too: counted as requests at the measured rate.
    out["cpu_requests"] = out["requests"] * (1 + WARMUP_SECONDS / duration)
    out["cpu"] = {name: after[name] - before[name] for name in before}
    return out


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Slices of one target (interleaved with the other targets) as one measurement."""
    out = _summary(
        {
            "requests": sum(r["requests"] for r in runs),
            "seconds": sum(r["seconds"] for r in runs),
            "latency": [x for r in runs for x in r["latency"]],
            "first_chunk": [x for r in runs for x in r["first_chunk"]],
            "errors": [x for r in runs for x in r["errors"]],
        }
    )
    total = sum(r["cpu_requests"] for r in runs)
    for name in runs[0]["cpu"]:
        cpu = sum(r["cpu"][name] for r in runs)
        # CPU per request is far less noisy than RPS on a shared machine.
        out[f"{name}_cpu_ms_per_request"] = cpu * 1000 / total if total else float("nan")
    return out


def _interleaved(
    targets: dict[str, tuple[str, str | None, dict[str, int]]], body: Path, args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Every target in turn, `rounds` times (slices of duration/rounds): background load on a
    shared machine then falls on all of them alike instead of on whichever ran during it."""
    slices: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    for _ in range(args.rounds):
        for name, (url, token, pids) in targets.items():
            slices[name].append(_run_load(url, body, token, args.concurrency, args.duration / args.rounds, pids))
    return {name: _merge(runs) for name, runs in slices.items()}


def _compare(direct: dict[str, Any], gw: dict[str, Any], stream: bool) -> dict[str, Any]:
    cmp = {
        "rps_ratio": gw["rps"] / direct["rps"] if direct["rps"] else float("nan"),
        "added_p50_ms": gw["p50_ms"] - direct["p50_ms"],
        "added_p99_ms": gw["p99_ms"] - direct["p99_ms"],
    }
    if stream:
        cmp["added_first_chunk_p50_ms"] = gw["first_chunk_p50_ms"] - direct["first_chunk_p50_ms"]
        cmp["added_first_chunk_p99_ms"] = gw["first_chunk_p99_ms"] - direct["first_chunk_p99_ms"]
    return cmp


ALT_CLIENT = "aiohttp"  # the library client, measured beside the default in every run


@contextlib.contextmanager
def _alt_gateway(args: argparse.Namespace, work: Path, upstream_url: str, model: str) -> Iterator[Any]:
    """A second gateway on the same upstream, with the other upstream client (or None)."""
    if args.no_alt_client:
        yield None
        return
    from pipeline.runtime.local_stack import local_stack

    env = {"GATEWAY_UPSTREAM_CLIENT": ALT_CLIENT}
    with local_stack(work, upstream_url=upstream_url, model=model, workers=args.workers, gateway_env=env) as alt:
        yield alt


def _kind(
    args: argparse.Namespace, body: Path, stream: bool, upstream_url: str, upstream_pid: int, stack: Any, alt: Any
) -> dict[str, Any]:
    """Direct, through the gateway (default client) and through the alternative client, interleaved."""
    targets: dict[str, tuple[str, str | None, dict[str, int]]] = {
        "direct": (upstream_url, None, {"simulator": upstream_pid, "gateway": stack.gateway.pid}),
        "gateway": (
            stack.gateway_url,
            stack.mint(sub="bench", ttl=3600),
            {"simulator": upstream_pid, "gateway": stack.gateway.pid},
        ),
    }
    if alt is not None:
        pids = {"simulator": upstream_pid, "gateway": alt.gateway.pid}
        targets[f"gateway_{ALT_CLIENT}"] = (alt.gateway_url, alt.mint(sub="bench", ttl=3600), pids)
    out: dict[str, Any] = _interleaved(targets, body, args)
    out["compare"] = _compare(out["direct"], out["gateway"], stream)
    if alt is not None:
        out[f"compare_{ALT_CLIENT}"] = _compare(out["direct"], out[f"gateway_{ALT_CLIENT}"], stream)
    return out


def bench_main(args: argparse.Namespace) -> int:
    from pipeline.runtime.local_stack import local_stack

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # readiness polls are noise here
    model = "bench-model"
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    sim_args = ["--ttft-ms", "0", "--itl-ms", "0", "--max-num-seqs", "256", "--seed", "1"]
    result: dict[str, Any] = {
        "concurrency": args.concurrency,
        "duration_seconds": args.duration,
        "rounds": args.rounds,
        "max_tokens": args.max_tokens,
        "gateway_workers": args.workers,
        "cpus": os.cpu_count(),
        "targets": TARGETS,
    }
    msgs = [{"role": "user", "content": "Say something about delivery pipelines."}]
    bodies = {}
    for stream in (False, True):
        p = work / f"body-{stream}.json"
        p.write_text(json.dumps({"model": model, "messages": msgs, "max_tokens": args.max_tokens, "stream": stream}))
        bodies[stream] = p
    audit_lines = 0
    with (
        local_stack(work, model=model, simulator_args=sim_args, workers=args.workers) as stack,
        _alt_gateway(args, work / "alt", stack.upstream_url, model) as alt,
    ):
        assert stack.simulator is not None
        upstream_pid = stack.simulator.pid
        for stream in (False, True):
            kind = "stream" if stream else "unary"
            log.info(
                "%s: simulator direct, gateway (h1), gateway (%s): %d concurrent, %.0fs each",
                kind,
                ALT_CLIENT,
                args.concurrency,
                args.duration,
            )
            result[kind] = _kind(args, bodies[stream], stream, stack.upstream_url, upstream_pid, stack, alt)
        audit_lines += sum(1 for _ in stack.audit_log.open())
    if not args.no_static:
        # The static upstream: the same comparison with an upstream that costs ~nothing, so the
        # ratio and the added latency are the gateway's alone (the simulator's own cost no longer
        # hides it, nor can its scheduling make the gateway look faster than direct).
        from pipeline.runtime.procs import free_port, running

        port = free_port()
        static_url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "app.bench", "static", "--port", str(port), "--model", model]
        argv += ["--tokens", str(args.max_tokens)]
        with (
            running("static-upstream", argv, work / "static.log", ready_url=f"{static_url}/health") as static,
            local_stack(work / "static-stack", upstream_url=static_url, model=model, workers=args.workers) as stack,
            _alt_gateway(args, work / "static-alt", static_url, model) as alt,
        ):
            for stream in (False, True):
                kind = "static_stream" if stream else "static_unary"
                log.info("%s: static upstream direct, gateway (h1), gateway (%s)", kind, ALT_CLIENT)
                result[kind] = _kind(args, bodies[stream], stream, static_url, static.pid, stack, alt)
            audit_lines += sum(1 for _ in stack.audit_log.open())
    result["audit_lines"] = audit_lines
    u = result["unary"]["compare"]
    result["meets_targets"] = (
        u["rps_ratio"] >= TARGETS["rps_ratio"]
        and u["added_p50_ms"] <= TARGETS["added_p50_ms"]
        and u["added_p99_ms"] <= TARGETS["added_p99_ms"]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    _print(result)
    print(f"\nwritten: {args.out}")
    return 0


def _print(r: dict[str, Any]) -> None:
    print(f"\ngateway benchmark: {r['concurrency']} concurrent, {r['duration_seconds']:.0f}s per run, {r['cpus']} CPUs")
    print(f"{'':13} {'target':8} {'RPS':>9} {'p50 ms':>8} {'p99 ms':>8} {'1st p50':>8} {'1st p99':>8} {'errors':>6}")
    kinds = [k for k in ("unary", "stream", "static_unary", "static_stream") if k in r]
    for kind in kinds:
        for target in ("direct", "gateway", f"gateway_{ALT_CLIENT}"):
            if target not in r[kind]:
                continue
            s = r[kind][target]
            fc = f"{s.get('first_chunk_p50_ms', float('nan')):8.2f} {s.get('first_chunk_p99_ms', float('nan')):8.2f}"
            label = target.replace("gateway_", "gw/")
            print(f"{kind:13} {label:8} {s['rps']:9.1f} {s['p50_ms']:8.2f} {s['p99_ms']:8.2f} {fc} {s['errors']:6d}")
    for kind in kinds:
        c = r[kind]["compare"]
        line = f"{kind}: RPS ratio {c['rps_ratio']:.2f}, added p50 {c['added_p50_ms']:+.2f} ms, added p99 {c['added_p99_ms']:+.2f} ms"
        g = r[kind]["gateway"]
        line += (
            f"; CPU/request: gateway {g['gateway_cpu_ms_per_request']:.3f} ms, simulator "
            f"{g['simulator_cpu_ms_per_request']:.3f} ms, load generator {g['loadgen_cpu_ms_per_request']:.3f} ms"
            f" (direct: simulator {r[kind]['direct']['simulator_cpu_ms_per_request']:.3f} ms, "
            f"load generator {r[kind]['direct']['loadgen_cpu_ms_per_request']:.3f} ms)"
        )
        if "added_first_chunk_p50_ms" in c:
            line += f", added first-chunk p50 {c['added_first_chunk_p50_ms']:+.2f} ms / p99 {c['added_first_chunk_p99_ms']:+.2f} ms"
        print(line)
        alt = r[kind].get(f"compare_{ALT_CLIENT}")
        if alt is not None:
            g2 = r[kind][f"gateway_{ALT_CLIENT}"]
            print(
                f"  with {ALT_CLIENT}: RPS ratio {alt['rps_ratio']:.2f}, added p50 {alt['added_p50_ms']:+.2f} ms, "
                f"added p99 {alt['added_p99_ms']:+.2f} ms; gateway CPU/request {g2['gateway_cpu_ms_per_request']:.3f} ms "
                f"(h1: {g['gateway_cpu_ms_per_request']:.3f} ms)"
            )
    t = r["targets"]
    verdict = "MET" if r["meets_targets"] else "NOT met"
    print(
        f"targets (unary): ratio >= {t['rps_ratio']}, added p50 <= {t['added_p50_ms']} ms, "
        f"added p99 <= {t['added_p99_ms']} ms: {verdict} (shared/noisy machines skew this; re-run to confirm)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.bench", description="Gateway overhead benchmark.")
    sub = parser.add_subparsers(dest="cmd")
    lg = sub.add_parser("loadgen", help="(internal) run the load generator and print raw JSON")
    lg.add_argument("--url", required=True)
    lg.add_argument("--path", default="/v1/chat/completions")
    lg.add_argument("--body", required=True)
    lg.add_argument("--concurrency", type=int, default=16)
    lg.add_argument("--duration", type=float, default=10.0)
    lg.add_argument("--out", required=True, help="where to write the raw JSON")
    st = sub.add_parser("static", help="(internal) run the static upstream")
    st.add_argument("--port", type=int, required=True)
    st.add_argument("--model", default="bench-model")
    st.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved slices per target (duration split)")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    parser.add_argument("--out", type=Path, default=Path(".runs/bench/gateway.json"))
    parser.add_argument("--no-static", action="store_true", help="skip the static-upstream baseline")
    parser.add_argument(
        "--no-alt-client", action="store_true", help=f"skip the gateway runs with the {ALT_CLIENT} upstream client"
    )
    args = parser.parse_args(argv)
    if args.cmd == "loadgen":
        return loadgen_main(args)
    if args.cmd == "static":
        return static_main(args)
    return bench_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
