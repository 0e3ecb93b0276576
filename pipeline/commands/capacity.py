"""`capacity`: sweep concurrency against one replica, find the max SLO-meeting load, plan replicas and cost.

Without `--target` one replica = the simulator (started with the model's max_num_seqs) behind
the gateway, on this machine: the numbers then describe the simulator on this CPU, which is
what CI can prove; point `--target` at a real GPU replica for numbers to provision from.
Writes capacity.json, capacity.md and goodput_vs_concurrency.png into the run directory;
`--write` puts the suggested autoscaling bounds into environments/<env>/values.yaml after
printing the diff.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from rich.table import Table
from ruamel.yaml import YAML

from loadtests import gate as gate_mod
from loadtests import slo as slo_mod
from loadtests.runner import LocustSpec, run_locust
from pipeline.core.context import RunContext
from pipeline.core.environments import env_names
from pipeline.probes import capacity_plan as cap_mod
from pipeline.probes.load_profile import DEFAULT_MODEL, DEFAULT_SIMULATOR_ARGS, TOKEN_ROLES
from pipeline.runtime.procs import ProcessFailed

NAME = "capacity"
HELP = "concurrency sweep against one replica -> max goodput per replica, replicas, GPUs, HPA bounds, monthly cost"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env", default=env_names()[0], choices=env_names(), help="SLO + capacity inputs (default: %(default)s)"
    )
    parser.add_argument("--target", help="URL of one replica (default: simulator + gateway started locally)")
    parser.add_argument("--levels", help="comma-separated concurrency levels (default: SLO file capacity.concurrency)")
    parser.add_argument("--step-duration", type=float, help="measured seconds per level (default: SLO file)")
    parser.add_argument("--target-rps", type=float, help="planned steady request rate (default: SLO file)")
    parser.add_argument("--peak-rps", type=float, help="planned peak request rate (default: SLO file)")
    parser.add_argument("--gpu", help="force a GPU type from the prices file (default: cheapest that fits)")
    parser.add_argument(
        "--prices", type=Path, default=cap_mod.PRICES_PATH, help="prices file (default: loadtests/prices.yaml)"
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="served model name (default: %(default)s)")
    parser.add_argument("--token-file", type=Path, help="with --target: JWTs, one per line (else $LOADTEST_TOKEN)")
    parser.add_argument(
        "--full", action="store_true", help="run every level (default: stop after the first failing one)"
    )
    parser.add_argument(
        "--write", action="store_true", help="write autoscaling min/max into environments/ENV/values.yaml"
    )
    parser.add_argument("--sim-arg", action="append", default=[], metavar="ARG", help="extra simulator flag")


def model_from_values(model: slo_mod.ModelSpec, values_path: Path) -> tuple[slo_mod.ModelSpec, list[str]]:
    """The env's deployed engine limits win over the SLO file's (what runs is what is planned)."""
    if not values_path.exists():
        return model, []
    values = YAML(typ="safe").load(values_path.read_text()) or {}
    engine = ((values.get("vllm") or {}).get("engine")) or {}
    update: dict[str, Any] = {}
    notes = []
    for key, field in (("maxModelLen", "max_model_len"), ("maxNumSeqs", "max_num_seqs")):
        if isinstance(engine.get(key), int) and engine[key] != getattr(model, field):
            update[field] = engine[key]
            notes.append(f"{field}={engine[key]} from {values_path.name} vllm.engine.{key}")
    return model.model_copy(update=update), notes


def sweep(
    ctx: RunContext,
    slo: slo_mod.SLO,
    slo_path: Path,
    host: str,
    levels: list[int],
    step_s: float,
    token_file: Path | None,
    model: str,
    full: bool,
) -> list[cap_mod.Step]:
    steps: list[cap_mod.Step] = []
    for c in levels:
        ctx.progress(f"level {c}: {step_s:g}s measured after {slo.run.warmup_s:g}s warm-up")
        run = run_locust(
            LocustSpec(
                host=host,
                out_dir=ctx.run_dir / f"level-{c:03d}",
                users=c,
                duration_s=slo.run.warmup_s + step_s,
                slo_file=slo_path,
                shape="steady",
                token_file=token_file,
                model=model,
            )
        )
        if run.gate is None:
            steps.append(
                cap_mod.Step(c, 0, 0, 0, 0, 0, math.nan, math.nan, math.nan, math.nan, 0, False, ["locust failed"])
            )
        else:
            # Re-judged without the service-wide throughput minimums: one replica at low load is not a breach.
            rep = gate_mod.evaluate(
                slo,
                run.samples,
                t_start=run.gate["t_start"],
                t_end=run.gate["t_end"],
                aborted=run.gate["aborted"],
                include_throughput=False,
            )
            s, lat = rep.summary, rep.summary.latency_ms
            steps.append(
                cap_mod.Step(
                    concurrency=c,
                    requests=s.requests,
                    rps=s.rps,
                    output_tokens_per_s=s.output_tokens_per_s,
                    goodput_ratio=s.goodput_ratio,
                    goodput_rps=s.goodput_rps,
                    error_rate=s.error_rate,
                    ttft_p95_ms=lat["ttft_ms"]["p95"],
                    itl_p95_ms=lat["itl_ms"]["p95"],
                    e2e_p95_ms=lat["e2e_ms"]["p95"],
                    mean_output_tokens=s.mean_output_tokens,
                    passed=rep.passed,
                    breached=[r.name for r in rep.failures()],
                )
            )
        last = steps[-1]
        ctx.progress(
            f"level {c}: {'meets SLOs' if last.passed else 'BREACHED ' + ','.join(last.breached)}; "
            f"goodput {last.goodput_rps:.2f} req/s ({last.goodput_ratio:.0%})"
        )
        if not last.passed and any(s.passed for s in steps) and not full:
            break  # latency only grows with concurrency once a level breaches
    return steps


def _step_table(steps: list[cap_mod.Step], best: cap_mod.Step | None) -> Table:
    # Compact: CI logs are 80 columns wide; every number is in capacity.json.
    t = Table(title="Sweep (one replica)", show_edge=False, pad_edge=False)
    for col in ("users", "req/s", "good/s", "good%", "err%", "TTFT95", "ITL95", "E2E95"):
        t.add_column(col, justify="right")
    t.add_column("SLOs", no_wrap=True)
    for s in steps:
        mark = " <- best" if best is not None and s.concurrency == best.concurrency else ""
        t.add_row(
            str(s.concurrency),
            f"{s.rps:.1f}",
            f"{s.goodput_rps:.1f}",
            f"{s.goodput_ratio * 100:.0f}",
            f"{s.error_rate * 100:.1f}",
            f"{s.ttft_p95_ms:.0f}",
            f"{s.itl_p95_ms:.0f}",
            f"{s.e2e_p95_ms:.0f}",
            ("ok" if s.passed else f"FAIL {len(s.breached)}: " + ",".join(s.breached[:2])) + mark,
        )
    return t


def _plan_lines(p: cap_mod.Plan) -> list[str]:
    cur = p.currency
    return [
        f"best level: {p.best_concurrency} concurrent users -> {p.per_replica_good_rps_measured:.2f} good req/s per replica",
        f"per replica (token mix {p.mix_factor:.3f}) {p.per_replica_good_rps:.2f} req/s; planned at headroom -> {p.usable_rps_per_replica:.2f} req/s",
        f"target {p.target_rps:g} req/s -> min replicas {p.min_replicas}; peak {p.peak_rps:g} req/s -> max replicas {p.max_replicas}",
        f"GPU {p.gpu} x TP {p.tp}: {p.gpus_min}..{p.gpus_max} GPUs",
        f"monthly on-demand {cur} {p.monthly_on_demand_min:,.0f} (min) .. {p.monthly_on_demand_max:,.0f} (max)",
        f"monthly spot      {cur} {p.monthly_spot_min:,.0f} (min) .. {p.monthly_spot_max:,.0f} (max)",
        f"per 1M output tokens at target rate: {cur} {p.cost_per_million_output_tokens_on_demand:.2f} on-demand, "
        f"{p.cost_per_million_output_tokens_spot:.2f} spot",
        *p.notes,
    ]


def main(args: argparse.Namespace, ctx: RunContext) -> int:
    slo_path = slo_mod.path_for(args.env)
    try:
        slo = slo_mod.load(slo_path)
    except slo_mod.SLOFileError as exc:
        ctx.console.print(f"[red]{exc}[/red]")
        return 2
    if slo.capacity is None:
        ctx.console.print(f"[red]{slo_path}: no capacity section; nothing to plan[/red]")
        return 2
    cap = slo.capacity.model_copy(
        update={k: v for k, v in (("target_rps", args.target_rps), ("peak_rps", args.peak_rps)) if v is not None}
    )
    values_path = ctx.repo_root / "environments" / args.env / "values.yaml"
    model, notes = model_from_values(cap.model, values_path)
    prices = cap_mod.load_prices(args.prices)
    est = cap_mod.memory_estimate(model)
    fits = cap_mod.placements(model, prices, [args.gpu] if args.gpu else cap.gpu_types)
    ctx.console.print(
        f"model {model.name}: weights {est.weights_gib:.1f} GiB ({model.weight_precision}), KV cache {est.kv_cache_gib:.1f} GiB "
        f"({est.kv_bytes_per_token / 1024:.0f} KiB/token x {model.max_model_len} x {model.max_num_seqs}), overhead {est.overhead_gib:g} GiB "
        f"= {est.total_gib:.1f} GiB"
    )
    for n in notes:
        ctx.console.print(f"  [dim]{n}[/dim]")
    if not fits:
        ctx.console.print("[red]no GPU type in the prices file fits this model at TP <= 8[/red]")
        return 1
    place = fits[0]
    ctx.console.print(
        "placements (cheapest first): "
        + ", ".join(
            f"{p.gpu} x{p.tp} ({p.per_gpu_need_gib:.1f}/{p.per_gpu_usable_gib:.1f} GiB, {p.replica_on_demand_hourly:.2f}/h)"
            for p in fits
        )
    )

    levels = [int(x) for x in args.levels.split(",")] if args.levels else cap.concurrency
    step_s = args.step_duration or cap.step_duration_s
    try:
        if args.target:
            source = f"target {args.target}"
            steps = sweep(
                ctx, slo, slo_path, args.target.rstrip("/"), levels, step_s, args.token_file, args.model, args.full
            )
        else:
            from pipeline.runtime.local_stack import local_stack

            sim_args = (*DEFAULT_SIMULATOR_ARGS, "--max-num-seqs", str(model.max_num_seqs), *args.sim_arg)
            source = "simulator (" + " ".join(sim_args) + ") behind the gateway, on this machine"
            with local_stack(ctx.run_dir / "stack", model=args.model, simulator_args=sim_args) as stack:
                token_file = ctx.run_dir / "tokens.txt"
                token_file.touch(mode=0o600)
                token_file.write_text(
                    "".join(
                        stack.mint(sub=f"capacity-{i}", roles=TOKEN_ROLES, ttl=3600) + "\n" for i in range(max(levels))
                    )
                )
                try:
                    steps = sweep(
                        ctx,
                        slo,
                        slo_path,
                        stack.gateway_url.rstrip("/"),
                        levels,
                        step_s,
                        token_file,
                        args.model,
                        args.full,
                    )
                finally:
                    token_file.unlink(missing_ok=True)
    except ProcessFailed as exc:
        ctx.console.print(f"[red]could not start the replica: {exc}[/red]")
        return 1

    best = cap_mod.best_step(steps)
    ctx.console.print(_step_table(steps, best))
    from loadtests.plots import goodput_vs_concurrency

    plot = goodput_vs_concurrency(
        [s.concurrency for s in steps],
        [s.goodput_rps for s in steps],
        [s.goodput_ratio for s in steps],
        slo.goodput.target,
        best.concurrency if best else None,
        ctx.run_dir / "goodput_vs_concurrency.png",
    )
    out: dict[str, Any] = {
        "env": args.env,
        "source": source,
        "slo_file": str(slo_path.relative_to(ctx.repo_root))
        if slo_path.is_relative_to(ctx.repo_root)
        else str(slo_path),
        "steps": [vars(s) for s in steps],
        "memory": {**vars(est), "total_gib": est.total_gib, "model": model.model_dump()},
        "placements": [vars(p) for p in fits],
        "plan": None,
    }
    lines: list[str] = []
    rc = 0
    if best is None:
        lines.append("no concurrency level met the SLOs: one replica cannot serve this SLO; no plan")
        rc = 1
    else:
        p = cap_mod.plan(best, cap, place, prices)
        p.notes = notes + p.notes
        out["plan"] = p.to_dict()
        lines = _plan_lines(p)
        if args.write:
            new, diff, edit_notes = cap_mod.autoscaling_edit(
                values_path, p.min_replicas, p.max_replicas, f"environments/{args.env}/values.yaml"
            )
            ctx.console.print(diff or "values.yaml already has these bounds")
            for n in edit_notes:
                ctx.console.print(f"[yellow]{n}[/yellow]")
            if diff:
                values_path.write_text(new)
                lines.append(
                    f"wrote autoscaling.minReplicas={p.min_replicas}, maxReplicas={p.max_replicas} to {values_path.name}"
                )
        else:
            _, diff, _ = cap_mod.autoscaling_edit(
                values_path, p.min_replicas, p.max_replicas, f"environments/{args.env}/values.yaml"
            )
            if diff:
                lines.append("suggested values change (run with --write to apply):\n" + diff)
    for line in lines:
        ctx.console.print(line)
    (ctx.run_dir / "capacity.json").write_text(json.dumps(gate_mod.nan_to_none(out), indent=2) + "\n")
    md = ["# Capacity plan", "", f"Source: {source}", "", "![goodput vs concurrency](goodput_vs_concurrency.png)", ""]
    md += ["```", *lines, "```"]
    (ctx.run_dir / "capacity.md").write_text("\n".join(md) + "\n")
    ctx.console.print(f"[dim]results: {ctx.run_dir} (capacity.json, capacity.md, {plot.name})[/dim]")
    return rc
