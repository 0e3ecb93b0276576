"""`python -m app.simulator --host H --port P --model NAME [...]`: serve the simulator with uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import uvicorn
from prometheus_client import disable_created_metrics
from pydantic import ValidationError

from app.simulator.config import Faults, SimulatorConfig
from app.simulator.server import create_app

log = logging.getLogger("app.simulator")

ADMIN_TOKEN_ENV = "SIM_ADMIN_TOKEN"  # noqa: S105 - the variable name, not a value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app.simulator", description=__doc__)
    d = SimulatorConfig()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", default=d.model, help="served model name (vLLM's --served-model-name)")
    p.add_argument("--seed", type=int, default=d.seed, help="seeds output text and fault decisions")
    p.add_argument("--max-num-seqs", type=_positive_int, default=d.max_num_seqs, help="batch capacity; the rest wait")
    p.add_argument("--max-model-len", type=_positive_int, default=d.max_model_len, help="prompt + max_tokens limit")
    p.add_argument("--ttft-ms", type=_non_negative, default=d.ttft_ms, help="time to first token for a lone request")
    p.add_argument("--itl-ms", type=_non_negative, default=d.itl_ms, help="time per further output token")
    p.add_argument(
        "--load-factor",
        type=_non_negative,
        default=d.load_factor,
        help="latency multiplier = 1 + F * (running - 1) / max-num-seqs",
    )
    p.add_argument("--kv-cache-tokens", type=int, default=d.kv_cache_tokens, help="KV capacity (0: seqs * len)")
    p.add_argument("--default-max-tokens", type=_positive_int, default=d.default_max_tokens)
    p.add_argument("--eos-rate", type=float, default=d.eos_rate, help="per-token chance of finish_reason stop")
    p.add_argument(
        "--admin-token",
        default=os.environ.get(ADMIN_TOKEN_ENV),
        help=f"protects /admin/* (Bearer); default ${ADMIN_TOKEN_ENV}; unset = admin open",
    )
    f = Faults()
    g = p.add_argument_group("fault injection (also at run time: PUT /admin/faults)")
    g.add_argument("--error-rate", type=float, default=f.error_rate)
    g.add_argument("--error-status", type=int, default=f.error_status)
    g.add_argument("--added-latency-ms", type=float, default=f.added_latency_ms)
    g.add_argument("--hang-rate", type=float, default=f.hang_rate)
    g.add_argument("--crash-after-requests", type=int, default=None, help="exit when request N+1 arrives")
    g.add_argument("--stream-cutoff-tokens", type=int, default=None, help="streams fail after K tokens")
    g.add_argument("--stream-cutoff-rate", type=float, default=f.stream_cutoff_rate)
    g.add_argument("--stream-cutoff-mode", choices=["drop", "error"], default=f.stream_cutoff_mode)
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return p


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    faults = Faults(
        error_rate=args.error_rate,
        error_status=args.error_status,
        added_latency_ms=args.added_latency_ms,
        hang_rate=args.hang_rate,
        crash_after_requests=args.crash_after_requests,
        stream_cutoff_tokens=args.stream_cutoff_tokens,
        stream_cutoff_rate=args.stream_cutoff_rate,
        stream_cutoff_mode=args.stream_cutoff_mode,
    )
    return SimulatorConfig(
        model=args.model,
        seed=args.seed,
        max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len,
        ttft_ms=args.ttft_ms,
        itl_ms=args.itl_ms,
        load_factor=args.load_factor,
        kv_cache_tokens=args.kv_cache_tokens,
        default_max_tokens=args.default_max_tokens,
        eos_rate=args.eos_rate,
        admin_token=args.admin_token or None,
        faults=faults,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # vLLM exports no *_created series; keep the scrape the same shape (process-wide, so only here).
    disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except ValidationError as exc:
        parser.error(str(exc))
    log.warning(
        "simulator serving %s on %s:%d (max_num_seqs=%d ttft_ms=%g itl_ms=%g seed=%d admin=%s)",
        config.model,
        args.host,
        args.port,
        config.max_num_seqs,
        config.ttft_ms,
        config.itl_ms,
        config.seed,
        "token" if config.admin_token else "open",
    )
    uvicorn.run(
        create_app(config),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,  # per-request log lines would dominate the benchmark baseline
        timeout_graceful_shutdown=2,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
