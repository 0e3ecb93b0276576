"""`canary_gate` (a ci stage, not a verb): the canary drill with a bad canary and a good one, judged by issue 23's
targets (pipeline.rollout.targets): fault `errors` aborted within 60 s with ≤ 5 % of requests exposed, fault
`none` promoted with no failed request, model pods ≤ replicas in both.

The drill runs as its own command, `python -m pipeline drill --canary --fault F --processes --json` (stages
never import pipeline.controller): processes, because the working tree's gateway and simulator are this
commit's code, while pods would run a promoted release's images (recorded as a substitution). Its verdict
commit goes to a throwaway GitOps remote under the stage's directory, never the user's remote before
promotion. Cached by ci like any stage: an unchanged drill (chart, env values, drill code, app, locustfile,
lock) is not run again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.cache import Extra
from pipeline.core.context import RunContext
from pipeline.core.environments import env_names
from pipeline.core.result import Check, StageResult, Status
from pipeline.gitops.repo import ENV_VAR as GITOPS_ENV_VAR
from pipeline.gitops.repo import ensure_local_remote
from pipeline.rollout import analysis as ra
from pipeline.rollout import targets
from pipeline.runtime import tools

NAME = "canary_gate"  # not `canary`: pipeline/checks/canary.py (render's static checks) has that file name
HELP = "canary drill: a bad canary aborted (≤ 60 s, ≤ 5 % exposed), a good one promoted (0 failed requests)"
FAULTS = ("errors", "none")  # the bad canary (5 % 5xx) and the good one
# What the drill starts besides the venv (pipeline.runtime.haproxy, pipeline.controller.drill_monitoring).
DRILL_TOOLS = ("haproxy", "prometheus", "promtool", "prometheus-alertmanager")
# What the drill's outcome depends on: the import closure of `drill --canary` (a test checks it against
# sys.modules), the app it serves, the locustfile, the chart's rollout values, the lock; the env's delta
# comes from cache_extra. Not the rest of environments/: pins and evidence change with every promotion.
CACHE_INPUTS = (
    "pipeline/__init__.py",
    "pipeline/__main__.py",
    "pipeline/cli.py",
    "pipeline/commands/__init__.py",
    "pipeline/commands/drill.py",
    "pipeline/commands/drill_canary.py",
    "pipeline/controller",
    "pipeline/artifacts",
    "pipeline/checks",
    "pipeline/core",
    "pipeline/gitops",
    "pipeline/rollout",
    "pipeline/runtime",
    "pipeline/stages/canary_gate.py",
    "app",
    "loadtests",
    "charts/llm-service",
    "platform.yaml",
    "pyproject.toml",
    "uv.lock",
)
CACHE_TOOLS = DRILL_TOOLS
# The model record: the drill's model pods serve the simulator, so a model-only commit does not re-run it.
CACHE_EXCLUDE = ("app/model.yaml",)
GRACE_S = 180.0  # setup and teardown around the drill's own --timeout (processes, Prometheus, the evidence commit)


@dataclass
class CanaryOptions:
    env: str = field(default_factory=lambda: env_names()[1])  # the drill's default: the env after dev
    faults: tuple[str, ...] = FAULTS
    timeout: float = 240.0  # the drill's --timeout; the command gets GRACE_S more


@dataclass
class Completed:
    returncode: int | None  # None: killed at the timeout
    stdout: str
    stderr: str


# (argv, env, timeout seconds, cwd) → Completed. Injectable: tests record the call and answer as the drill does.
Runner = Callable[[Sequence[str], Mapping[str, str], float, Path], Completed]


def run_process(argv: Sequence[str], env: Mapping[str, str], timeout: float, cwd: Path) -> Completed:
    """The drill in its own session, so a timeout stops it with every process it started (by process group)."""
    proc = subprocess.Popen(
        list(argv), cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
        return Completed(proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                out, err = proc.communicate(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                out, err = "", ""
        return Completed(None, out or "", (err or "") + f"\nkilled after {timeout:.0f}s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default=env_names()[1], choices=env_names(), help="whose chart values (steps)")
    parser.add_argument(
        "--fault", dest="faults", action="append", choices=sorted(targets.EXPECTED_VERDICT), help="(repeatable)"
    )
    parser.add_argument("--timeout", type=float, default=240.0, help="each drill's --timeout (default %(default)s)")


def options_from_args(args: argparse.Namespace) -> CanaryOptions:
    """ci's `--stage-args canary_gate='--fault errors'`: these faults only."""
    return CanaryOptions(env=args.env, faults=tuple(args.faults or FAULTS), timeout=args.timeout)


def run_from_args(args: argparse.Namespace, ctx: RunContext) -> StageResult:
    return run(options_from_args(args), ctx)


def ci_options(upstream: dict[str, StageResult], ctx: RunContext) -> CanaryOptions:
    return CanaryOptions()


def cache_extra(opts: CanaryOptions, root: Path) -> Extra:
    """The env's values delta (its rollout steps, analysis, replicas)."""
    return Extra(paths=(ra.ENV_VALUES.format(env=opts.env),))


def drill_argv(fault: str, opts: CanaryOptions, run_dir: Path, remote: Path) -> list[str]:
    return [
        sys.executable, "-m", "pipeline", "--run-dir", str(run_dir), "drill", "--canary", "--fault", fault,
        "--processes", "--json", "--env", opts.env, "--timeout", f"{opts.timeout:g}", "--gitops-repo", str(remote),
    ]  # fmt: skip


def drill_env(remote: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment with the throwaway remote as the GitOps remote (whatever reads it)."""
    return {**(os.environ if base is None else base), GITOPS_ENV_VAR: str(remote)}


def parse_result(stdout: str) -> dict[str, Any] | None:
    """The drill's JSON object: the last stdout line that is one with a `verdict`."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and "verdict" in data:
            return data
    return None


NUMBER_KEYS = ("abort_seconds", "exposed_fraction", "failed_requests", "broken_streams", "max_model_pods", "replicas")


def judge(fault: str, done: Completed, remote: Path) -> tuple[Check, dict[str, Any] | None]:
    """One Check for one drill run: its targets, the exit code, and where its evidence went."""
    name = f"drill:{fault}"
    data = parse_result(done.stdout)
    tail = "\n".join(done.stderr.strip().splitlines()[-15:])
    if data is None:
        how = "was killed at its timeout" if done.returncode is None else f"exited {done.returncode}"
        return Check(
            name=name, status=Status.FAILED, detail=f"the drill {how} with no JSON result; stderr:\n{tail}"
        ), None
    missed = targets.misses(fault, data)
    if not missed and done.returncode != 0:
        missed.append(f"the drill exited {done.returncode}; stderr:\n{tail}")
    where = (data.get("evidence") or {}).get("remote")
    if where is not None and Path(str(where)) != remote:
        missed.append(f"the drill committed its evidence to {where}, not the throwaway remote {remote}")
    numbers = {k: float(data[k]) for k in NUMBER_KEYS if isinstance(data.get(k), int | float)}
    numbers["seconds"] = float(data.get("seconds") or 0.0)
    facts = ", ".join(f"{k} {data.get(k)}" for k in NUMBER_KEYS)
    detail = f"{data.get('verdict')}: {facts}" + (f"; MISSED: {'; '.join(missed)}" if missed else "")
    return Check(name=name, status=Status.FAILED if missed else Status.PASSED, detail=detail, numbers=numbers), data


def run(
    opts: CanaryOptions,
    ctx: RunContext,
    runner: Runner = run_process,
    find: Callable[[str], str | None] = tools.find,
) -> StageResult:
    missing = [t for t in DRILL_TOOLS if find(t) is None]
    if missing:
        fix = f"run `make tools` (or `python -m pipeline.runtime.tools ensure {' '.join(missing)}`)"
        return StageResult(
            stage=NAME, status=Status.FAILED, error=True, summary=f"{', '.join(missing)} not installed: {fix}",
            checks=[Check(name="tools", status=Status.FAILED, detail=f"the canary drill needs {', '.join(missing)}; {fix}")],
        )  # fmt: skip
    work = ctx.stage_dir(NAME)
    remote = ensure_local_remote(work / "gitops.git", ctx.repo_root)
    checks: list[Check] = []
    results: dict[str, Any] = {}
    for fault in opts.faults:
        ctx.progress(f"canary drill, fault {fault} (env {opts.env}, processes)")
        run_dir = work / fault
        done = runner(
            drill_argv(fault, opts, run_dir, remote), drill_env(remote), opts.timeout + GRACE_S, ctx.repo_root
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "drill.stdout").write_text(done.stdout)
        (run_dir / "drill.stderr").write_text(done.stderr)
        check, data = judge(fault, done, remote)
        checks.append(check)
        results[fault] = data
    result = StageResult.from_checks(
        NAME,
        checks,
        evidence={
            "drills": results,
            "targets": {"abort_within_s": targets.ABORT_WITHIN_S, "max_exposed_fraction": targets.MAX_EXPOSED_FRACTION},
            "substitution": "model pods as gateway + simulator processes of this tree (--processes): pods would "
            "run a promoted release's images, not this commit's",
            "gitops_remote": "throwaway, under the stage's directory",
        },
        logs=str(work),
    )
    result.numbers = {f"{c.name.split(':', 1)[1]}_{k}": v for c in checks for k, v in c.numbers.items()}
    failed = result.failures()
    result.summary = (
        "; ".join(f"{c.name}: {c.detail}" for c in failed)
        if failed
        else "; ".join(_headline(f, results[f]) for f in results if results[f] is not None)
    )
    return result


def _headline(fault: str, data: Mapping[str, Any]) -> str:
    if data.get("verdict") == "aborted":
        return (
            f"bad canary ({fault}) aborted in {data.get('abort_seconds')}s, {float(data.get('exposed_fraction') or 0):.1%} "
            f"exposed"
        )
    return f"good canary ({fault}) promoted, {data.get('failed_requests')} failed requests"
