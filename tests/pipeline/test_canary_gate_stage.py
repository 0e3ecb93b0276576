"""ci's canary_gate stage: the drill's JSON judged by issue 23's targets, the drill command it runs (argv, env, a
throwaway GitOps remote), its place in ci, its cache key and the tools it needs. The drill itself is not run
here (tests/drill/test_canary_drill.py and the README walkthrough run it); a runner answers as the drill's
command does: `asdict(CanaryReport)` as one JSON line on stdout."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import types
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from pipeline.controller.canary_drill import CanaryReport
from pipeline.core.cache import InputHasher
from pipeline.core.context import RunContext
from pipeline.core.result import Check, StageResult, Status
from pipeline.gitops.repo import ENV_VAR
from pipeline.rollout import targets
from pipeline.stages import canary_gate as canary
from pipeline.stages import ci

REPO = Path(__file__).resolve().parents[2]


def report(fault: str, **kw: Any) -> dict[str, Any]:
    """A drill result as `drill --canary --json` prints it: a bad canary aborted within targets, a good one promoted."""
    base: dict[str, Any] = {"fault": fault, "replicas": 2, "max_model_pods": 2, "total_requests": 900, "seconds": 95.0}
    if fault == "none":
        base |= {"verdict": "promoted", "exposed_fraction": 0.41}
    else:
        base |= {"verdict": "aborted", "abort_seconds": 31.4, "exposed_fraction": 0.021}
        base["failing"] = {"metric": "error-rate", "phase": "Failed", "query": "q", "values": [0.06]}
    return asdict(CanaryReport(**(base | kw)))


# -- the targets ----------------------------------------------------------------------------------


def test_a_bad_canary_aborted_within_targets_and_a_good_one_promoted_meet_them() -> None:
    assert targets.misses("errors", report("errors")) == []
    assert targets.misses("none", report("none")) == []


@pytest.mark.parametrize(
    ("fault", "change", "missed"),
    [
        ("errors", {"abort_seconds": 61.0}, "abort_seconds 61.0, target ≤ 60"),
        ("errors", {"abort_seconds": None}, "abort_seconds None"),
        ("errors", {"exposed_fraction": 0.051}, "exposed_fraction 0.051"),
        ("errors", {"exposed_fraction": 0.0}, "exposed_fraction 0.0"),  # no canary traffic: the abort proves nothing
        ("errors", {"verdict": "promoted", "failing": None}, "verdict promoted, expected aborted"),
        ("none", {"failed_requests": 3}, "failed_requests 3, target 0"),
        ("none", {"broken_streams": 1}, "broken_streams 1, target 0"),
        ("none", {"verdict": "aborted"}, "verdict aborted"),
        ("none", {"max_model_pods": 3}, "max_model_pods 3, target 1 ≤ pods ≤ replicas 2"),
        ("errors", {"max_model_pods": 0}, "max_model_pods 0"),
        ("none", {"problems": ["Locust recorded no request"]}, "problem: Locust recorded no request"),
    ],
)
def test_each_missed_target_is_named_with_its_number(fault: str, change: dict[str, Any], missed: str) -> None:
    out = targets.misses(fault, report(fault, **change))
    assert any(missed in m for m in out), out


def test_a_paused_canary_misses_with_the_inconclusive_metric() -> None:
    paused = report("none", verdict="paused", paused=True, failing={"metric": "ttft-p95", "values": [None]})
    out = targets.misses("none", paused)
    assert out and out[0].startswith("paused: analysis ttft-p95 was Inconclusive"), out


def test_a_drill_error_and_an_unknown_fault_are_refused() -> None:
    assert targets.misses("errors", {"verdict": "error", "error": "haproxy died"}) == [
        "the drill could not run: haproxy died"
    ]
    with pytest.raises(ValueError, match="fault must be one of"):
        targets.misses("slow", report("none"))


# -- the stage, with a runner answering as the drill's command ---------------------------------------


class Drill:
    """Records each call; answers per fault with (exit code, stdout, stderr); by default the drill's JSON line
    with its evidence committed to the remote `--gitops-repo` named."""

    def __init__(self, answers: Mapping[str, tuple[int | None, str | dict[str, Any], str]] | None = None) -> None:
        self.calls: list[tuple[list[str], dict[str, str], float, Path]] = []
        self.answers = dict(answers or {})

    def __call__(self, argv: Sequence[str], env: Mapping[str, str], timeout: float, cwd: Path) -> canary.Completed:
        argv = list(argv)
        self.calls.append((argv, dict(env), timeout, cwd))
        fault = argv[argv.index("--fault") + 1]
        remote = argv[argv.index("--gitops-repo") + 1]
        code, out, err = self.answers.get(fault, (0, report(fault), ""))
        if isinstance(out, dict):
            out.setdefault("evidence", {}).setdefault("remote", remote)
            out = "progress on stderr, not here\n" + json.dumps(out) + "\n"
        return canary.Completed(code, out, err)


def present(name: str) -> str | None:
    return f"/opt/tools/{name}"


def test_stage_runs_both_drills_as_processes_into_a_throwaway_remote(
    ctx: RunContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, "ssh://git@git.example.com/llm/gitops.git")  # the user's remote: never the drill's
    drill = Drill()
    result = canary.run(canary.CanaryOptions(env="staging", timeout=200), ctx, runner=drill, find=present)
    assert result.status is Status.PASSED, result.summary
    work = ctx.run_dir / "canary_gate"
    remote = work / "gitops.git"
    assert (remote / "HEAD").is_file()  # a bare repo the stage created
    assert [c[0][c[0].index("--fault") + 1] for c in drill.calls] == ["errors", "none"]
    for (argv, env, timeout, cwd), fault in zip(drill.calls, ("errors", "none"), strict=True):
        assert argv == [
            sys.executable, "-m", "pipeline", "--run-dir", str(work / fault), "drill", "--canary", "--fault", fault,
            "--processes", "--json", "--env", "staging", "--timeout", "200", "--gitops-repo", str(remote),
        ]  # fmt: skip
        assert env[ENV_VAR] == str(remote)
        assert timeout == 200 + canary.GRACE_S and cwd == ctx.repo_root
        assert json.loads((work / fault / "drill.stdout").read_text().splitlines()[-1])["fault"] == fault
    assert [c.name for c in result.checks] == ["drill:errors", "drill:none"]
    assert result.numbers["errors_abort_seconds"] == 31.4 and result.numbers["errors_exposed_fraction"] == 0.021
    assert result.numbers["none_failed_requests"] == 0
    assert {f: d["verdict"] for f, d in result.evidence["drills"].items()} == {"errors": "aborted", "none": "promoted"}
    assert "aborted in 31.4s, 2.1% exposed" in result.summary and "promoted, 0 failed" in result.summary


@pytest.mark.parametrize(
    ("fault", "answer", "said"),
    [
        ("errors", (1, report("errors", abort_seconds=75.2, problems=[]), ""), "abort_seconds 75.2, target ≤ 60"),
        ("none", (1, report("none", verdict="paused", paused=True), ""), "paused: analysis"),
        ("none", (0, report("none", failed_requests=2), ""), "failed_requests 2, target 0"),
        ("errors", (3, "", "boot\nToolMissing: haproxy is not installed"), "exited 3 with no JSON result"),
        ("errors", (0, "{not json", "last words"), "last words"),
        ("none", (None, "", "still walking steps\nkilled after 420s"), "killed at its timeout"),
        ("none", (1, report("none"), "a teardown problem"), "the drill exited 1; stderr:\na teardown problem"),
        (
            "errors",
            (0, report("errors", evidence={"remote": "ssh://git@git.example.com/llm/gitops.git"}), ""),
            "not the throwaway remote",
        ),
    ],
)
def test_a_missed_target_or_a_broken_drill_fails_the_gate(
    ctx: RunContext, fault: str, answer: tuple[int | None, Any, str], said: str
) -> None:
    result = canary.run(canary.CanaryOptions(), ctx, runner=Drill({fault: answer}), find=present)
    assert result.status is Status.FAILED
    failed = result.failures()
    assert [c.name for c in failed] == [f"drill:{fault}"]
    assert said in failed[0].detail and said in result.summary
    assert len(result.checks) == 2  # both drills ran: the evidence carries both


def test_stage_args_pick_the_faults_and_the_env(ctx: RunContext) -> None:
    parser = argparse.ArgumentParser()
    canary.add_arguments(parser)
    opts = canary.options_from_args(parser.parse_args(["--fault", "errors", "--env", "prod", "--timeout", "300"]))
    assert (opts.faults, opts.env, opts.timeout) == (("errors",), "prod", 300.0)
    assert canary.options_from_args(parser.parse_args([])).faults == canary.FAULTS
    drill = Drill()
    assert canary.run(opts, ctx, runner=drill, find=present).status is Status.PASSED
    assert [argv[argv.index("--fault") + 1] for argv, *_ in drill.calls] == ["errors"]


def test_missing_tools_fail_the_stage_naming_them_and_the_fix(ctx: RunContext) -> None:
    drill = Drill()
    result = canary.run(
        canary.CanaryOptions(), ctx, runner=drill, find=lambda n: None if n in ("haproxy", "promtool") else present(n)
    )
    assert result.status is Status.FAILED and result.error and drill.calls == []
    assert result.summary.startswith("haproxy, promtool not installed") and "make tools" in result.summary


def test_a_drill_over_its_timeout_is_stopped_with_the_processes_it_started(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(child.pid, flush=True)
        time.sleep(60)
        """
    )
    started = time.monotonic()
    done = canary.run_process([sys.executable, "-c", script], dict(os.environ), 2.0, tmp_path)
    assert done.returncode is None and "killed after 2s" in done.stderr
    assert time.monotonic() - started < 30
    child = int(done.stdout.split()[0])
    status = Path(f"/proc/{child}/status")
    deadline = time.monotonic() + 5
    while status.exists() and "State:\tZ" not in status.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not status.exists() or "State:\tZ" in status.read_text()  # gone, or a zombie awaiting its reaper


# -- the stage in ci -------------------------------------------------------------------------------


def test_ci_runs_the_canary_gate_after_loadtest_and_before_promote_and_skip_leaves_it_out(ctx: RunContext) -> None:
    assert ci.ORDER.index("loadtest") < ci.ORDER.index("canary_gate") == ci.ORDER.index("promote") - 1
    assert "canary_gate" in ci.GATES
    calls: list[str] = []

    def stub(name: str) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.CACHEABLE = False  # type: ignore[attr-defined]
        mod.add_arguments = lambda parser: None  # type: ignore[attr-defined]

        def run_from_args(args: argparse.Namespace, ctx: RunContext) -> StageResult:
            calls.append(name)
            return StageResult.from_checks(name, [Check(name=name, status=Status.PASSED)])

        mod.run_from_args = run_from_args  # type: ignore[attr-defined]
        return mod

    def loader(name: str) -> types.ModuleType | None:
        return None if name == "promote" else stub(name)

    ci.run(ci.CiOptions(no_promote=True), ctx, loader=loader)
    assert calls == list(ci.GATES)
    calls.clear()
    result = ci.run(ci.CiOptions(skip=["canary_gate"], no_promote=True), ctx, loader=loader)
    assert "canary_gate" not in calls and calls == [s for s in ci.GATES if s != "canary_gate"]
    assert next(c for c in result.checks if c.name == "canary_gate").detail == "left out (--only/--skip)"


def _key(ctx: RunContext) -> str:
    opts = canary.ci_options({}, ctx)
    return ci.stage_cache_key(
        "canary_gate", canary, opts, ci._jsonable(opts), ctx, InputHasher(ctx.run_dir / "idx"), "h"
    )


@pytest.mark.parametrize(
    ("path", "edit", "moves"),
    [
        ("charts/llm-service/values.yaml", "weight: 5", True),  # the canary steps
        ("environments/staging/values.yaml", "stagingSteps: 1", True),  # the drill env's delta
        ("pipeline/controller/canary_drill.py", "# changed", True),
        ("environments/staging/release.yaml", "pinned: other", False),  # a promotion's pins
        ("environments/dev/values.yaml", "devOnly: 1", False),  # another env
        ("docs/rollout.md", "more prose", False),
        ("app/model.yaml", "steps: 700", False),  # a model-only commit: the drill serves the simulator
    ],
)
def test_cache_key_moves_with_the_drills_inputs_only(ctx: RunContext, path: str, edit: str, moves: bool) -> None:
    root = ctx.repo_root
    for rel in ("charts/llm-service/values.yaml", "environments/staging/values.yaml", "environments/dev/values.yaml"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    for rel in (
        "pipeline/controller/canary_drill.py",
        "environments/staging/release.yaml",
        "docs/rollout.md",
        "app/model.yaml",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("original\n")
    before = _key(ctx)
    assert _key(ctx) == before
    with (root / path).open("a") as fh:
        fh.write(f"\n{edit}\n")
    assert (_key(ctx) != before) is moves


def test_cache_inputs_cover_every_module_the_drill_command_imports() -> None:
    probe = (
        "import sys, json\n"
        "import pipeline.cli, pipeline.commands.drill, pipeline.commands.drill_canary\n"
        "import pipeline.controller.canary_drill, pipeline.controller.drill_pods, pipeline.runtime.local_stack\n"
        "print(json.dumps(sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, '__file__', None)})))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True).stdout
    ours = [Path(f).resolve().relative_to(REPO) for f in json.loads(out) if Path(f).resolve().is_relative_to(REPO)]
    ours = [p for p in ours if ".venv" not in p.parts]
    assert any(p.parts[0] == "app" for p in ours)  # the probe saw the tree's modules
    uncovered = [str(p) for p in ours if not any(p == Path(i) or Path(i) in p.parents for i in canary.CACHE_INPUTS)]
    assert uncovered == []


def test_the_dagger_ci_container_installs_the_drills_tools() -> None:
    sys.path.insert(0, str(REPO / "pipeline" / "dagger" / "src"))
    try:
        plan = importlib.import_module("pipeline_dagger.plan")
    finally:
        sys.path.remove(str(REPO / "pipeline" / "dagger" / "src"))
    assert set(canary.DRILL_TOOLS) <= set(plan.TOOLS["ci"])
    assert set(canary.CACHE_TOOLS) == set(canary.DRILL_TOOLS)
