"""Run the locustfile headless as child processes (one local runner, or a master + N workers).

Locust patches the interpreter with gevent, so the pipeline never imports it: it starts
`python -m locust`, bounds it by a timeout, stops it by PID, and reads what it wrote.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.metrics import Sample, read_samples
from pipeline.runtime.procs import ManagedProcess, free_port

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
# Start-up, worker hand-shake and report writing on a busy 2-core machine.
STARTUP_MARGIN_S = 45.0


@dataclass
class LocustSpec:
    host: str
    out_dir: Path
    users: int
    duration_s: float
    slo_file: Path | None = None
    shape: str = ""
    warmup_s: float | None = None
    spawn_rate: float | None = None
    token_file: Path | None = None
    model: str = "sim-llama"
    workers: int = 0
    seed: int = 0
    prompt_tokens: str = ""
    output_tokens: str = ""
    extra_args: Sequence[str] = ()
    timeout_s: float | None = None


@dataclass
class LocustRun:
    exit_code: int | None
    out_dir: Path
    timed_out: bool
    gate: dict[str, Any] | None
    samples: list[Sample] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def artifacts(self) -> list[Path]:
        names = ("locust.html", "locust.json", "locust_stats.csv", "locust_stats_history.csv", "locust_failures.csv")
        return [p for p in (self.out_dir / n for n in names) if p.exists()]


def _llm_flags(spec: LocustSpec) -> list[str]:
    flags = ["--llm-out-dir", str(spec.out_dir), "--model", spec.model, "--seed", str(spec.seed)]
    if spec.slo_file:
        flags += ["--slo-file", str(spec.slo_file)]
    if spec.shape:
        flags += ["--shape", spec.shape]
    if spec.warmup_s is not None:
        flags += ["--warmup-s", str(spec.warmup_s)]
    if spec.token_file:
        flags += ["--token-file", str(spec.token_file)]
    if spec.prompt_tokens:
        flags += ["--prompt-tokens", spec.prompt_tokens]
    if spec.output_tokens:
        flags += ["--output-tokens", spec.output_tokens]
    return flags


def run_locust(spec: LocustSpec) -> LocustRun:
    """Run Locust to completion (or the timeout), then collect slo.json and samples.jsonl."""
    out = spec.out_dir
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("slo.json", "samples.jsonl"):
        (out / stale).unlink(missing_ok=True)
    base = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
    llm = _llm_flags(spec)
    rate = spec.spawn_rate or float(spec.users)
    main_argv = [
        *base,
        "--headless",
        "-H",
        spec.host,
        "-u",
        str(spec.users),
        "-r",
        f"{rate:g}",
        "-t",
        f"{math.ceil(spec.duration_s)}s",
        "--csv",
        str(out / "locust"),
        "--csv-full-history",
        "--json-file",
        str(out / "locust"),
        "--html",
        str(out / "locust.html"),
        "--only-summary",
        "--loglevel",
        "INFO",
        *llm,
        *spec.extra_args,
    ]
    workers: list[ManagedProcess] = []
    if spec.workers > 0:
        port = free_port()
        main_argv += ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port)]
        main_argv += ["--expect-workers", str(spec.workers), "--expect-workers-max-wait", "30"]
        for i in range(spec.workers):
            argv = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port), *llm]
            workers.append(ManagedProcess(f"locust-worker-{i}", argv, out / f"locust-worker-{i}.log"))
    main = ManagedProcess("locust", main_argv, out / "locust.log")
    timeout = spec.timeout_s or spec.duration_s + STARTUP_MARGIN_S
    timed_out = False
    try:
        main.start()
        for w in workers:
            w.start()
        assert main.proc is not None
        try:
            main.proc.wait(timeout=timeout)
        except Exception:
            # Over the bound: SIGTERM lets Locust still write its reports and the quitting gate.
            timed_out = True
            main.stop(grace=15.0)
    finally:
        main.stop()
        for w in workers:
            w.stop()
    code = main.proc.returncode if main.proc is not None else None
    gate_path = out / "slo.json"
    gate = json.loads(gate_path.read_text()) if gate_path.exists() else None
    samples_path = out / "samples.jsonl"
    samples = read_samples(samples_path.read_text().splitlines()) if samples_path.exists() else []
    return LocustRun(
        exit_code=code,
        out_dir=out,
        timed_out=timed_out,
        gate=gate,
        samples=samples,
        logs=[main.log_path, *(w.log_path for w in workers)],
    )
