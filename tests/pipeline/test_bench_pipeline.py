"""`make bench-pipeline`'s fast parts: the README's measured table, the comparison it prints, the
timing loop (runner and clock injected), the clone with a new commit (real git), and the `make ci`
stages end to end on a stand-in checkout (real make, git and embedded registry). The benchmark's
figures themselves are printed, never asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from pipeline.commands import bench_pipeline as bench
from pipeline.runtime import registry

TABLE = """\
# Project

## Measured on this machine (2 cores)

Numbers from quiet runs.

| what | command | result |
|---|---|---|
| `make ci`, first run of a commit | `time make ci` | **253 s wall**: test 127 s |
| `make ci`, warm (unchanged tree) | `time make ci` | 1.5 s wall (`ci` 0.8 s) |
| render + validate all three envs, cold | `time python -m pipeline render --env all` | 4.4\u20134.9 s wall (stage 3.2 s) |
| smoke | `python -m pipeline smoke` | ready in 45 s |

## Next section

| what | command | result |
|---|---|---|
| not measured here | `x` | 99 s wall |
"""


def test_the_measured_table_is_read_from_its_section_only() -> None:
    rows = bench.measured_rows(TABLE)
    assert [r.what for r in rows] == [
        "`make ci`, first run of a commit",
        "`make ci`, warm (unchanged tree)",
        "render + validate all three envs, cold",
        "smoke",
    ]
    assert [r.wall() for r in rows] == ["253 s", "1.5 s", "4.4\u20134.9 s", None]


def test_a_readme_without_the_section_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="Measured on this machine"):
        bench.measured_rows("# Project\n\n## Other\n\n| a | b | c |\n|---|---|---|\n| 1 | 2 | 3 |\n")
    with pytest.raises(ValueError, match="expected 3"):
        bench.measured_rows("## Measured on this machine\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")


def test_every_stage_of_the_benchmark_has_a_figure_in_the_real_readme(repo_root: Path) -> None:
    rows = bench.measured_rows((repo_root / "README.md").read_text())
    for stage in [*bench.render_stages("python"), *bench.ci_stages()]:
        figure = bench.previous_figure(rows, stage)
        assert figure.endswith(" s"), f"{stage.name}: README row matching {stage.row_match!r} gives {figure}"


def test_the_report_puts_each_time_beside_the_readme_figure() -> None:
    rows = bench.measured_rows(TABLE)
    stages = [
        bench.Stage("render (cold)", ("r",), "all three envs, cold"),
        bench.Stage("make ci (new commit)", ("m",), "first run of a commit"),
        bench.Stage("drill", ("d",), "no such row"),
    ]
    timings = [
        bench.Timing(stages[0], 3.14159, 0, 0.52),
        bench.Timing(stages[1], 301.0, 2, 6.0),
        bench.Timing(stages[2], 1.0, 0),
    ]
    cells = [re.split(r"\s{2,}", line) for line in bench.format_report(timings, rows).splitlines()]
    assert cells == [
        ["stage", "now", "load", "README"],
        ["render (cold)", "3.1 s", "0.5", "4.4\u20134.9 s"],
        ["make ci (new commit)", "301.0 s (exit 2)", "6.0", "253 s"],
        ["drill", "1.0 s", "-", "(not in the README)"],
    ]


def test_repeated_runs_of_a_stage_give_one_line_median_range_and_load() -> None:
    rows = bench.measured_rows(TABLE)
    cold, warm = bench.render_stages("py")
    timings = [
        bench.Timing(cold, 5.0, 0, 1.0),
        bench.Timing(warm, 2.0, 0, 1.2),
        bench.Timing(cold, 9.0, 1, 4.0),
        bench.Timing(warm, 2.0, 0, 3.5),
        bench.Timing(cold, 4.0, 0, 0.5),
        bench.Timing(warm, 2.04, 0, 0.4),
    ]
    cells = [re.split(r"\s{2,}", line) for line in bench.format_report(timings, rows).splitlines()]
    assert cells == [
        ["stage", "now", "load", "README"],
        ["render --env all (cold)", "5.0 s median (4.0\u20139.0 s, 3 runs) (exit 1)", "0.5\u20134.0", "4.4\u20134.9 s"],
        ["render --env all (warm)", "2.0 s median (2.0 s, 3 runs)", "0.4\u20133.5", "(not in the README)"],
    ]


def test_stages_run_in_order_each_timed_by_the_clock(tmp_path: Path) -> None:
    calls: list[tuple[tuple[str, ...], Path, str]] = []
    ticks = iter([0.0, 2.5, 10.0, 10.25])

    def runner(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> int:
        calls.append((tuple(argv), cwd, env["MARK"]))
        return len(calls) - 1

    stages = bench.render_stages("py")
    loads = iter([0.5, 3.0])
    timings = bench.time_stages(
        stages, tmp_path, {"MARK": "x"}, runner, clock=lambda: next(ticks), load=lambda: next(loads)
    )
    assert [(t.stage.name, t.seconds, t.exit_code, t.load) for t in timings] == [
        ("render --env all (cold)", 2.5, 0, 0.5),
        ("render --env all (warm)", 0.25, 1, 3.0),
    ]
    assert calls == [(("py", "-m", "pipeline", "render", "--env", "all"), tmp_path, "x")] * 2


def test_make_ci_takes_its_install_targets_as_done() -> None:
    (new, unchanged) = bench.ci_stages()
    assert new.argv == unchanged.argv
    assert new.argv[-1] == "ci" and {f"-o{t}" for t in bench.INSTALL_TARGETS} <= set(new.argv)


def test_the_clone_has_one_new_commit_and_shares_the_installs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / ".venv").mkdir(parents=True)
    (src / ".tools").mkdir()
    (src / "README.md").write_text("x\n")
    env = bench.base_env(**bench.GIT_ENV)
    for argv in (["init", "-q", "-b", "main"], ["add", "README.md"], ["commit", "-q", "-m", "first"]):
        subprocess.run(["git", *argv], cwd=src, check=True, env=env)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, env=env).stdout
    with bench.new_commit_clone(src, tmp_path / "work") as clone:
        log = subprocess.run(
            ["git", "log", "--format=%P %s"], cwd=clone, capture_output=True, text=True, check=True, env=env
        ).stdout.splitlines()
        assert log == [f"{head.strip()} bench: a new commit", " first"]
        assert (clone / ".venv").resolve() == (src / ".venv").resolve()
        assert (clone / ".tools").is_symlink()


# A stand-in for the checkout's Makefile (Makefile: `ci: tools vllm`, its install targets, then
# `python -m pipeline ci`), at least as strict: an install recipe that runs fails the benchmark
# (they must be taken as done), and its `ci` starts the embedded registry under the checkout's
# `.cache/registry` as the real `ci` stages leave it serving (pipeline.runtime.registry).
STANDIN_MAKEFILE = """\
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ci: .venv/.synced .tools/.ensured .tools/vllm-venv/.vllm-ready.json
\tPIPELINE_STATE_DIR=$(CURDIR)/.cache PYTHONPATH=$(BENCH_PACKAGE_ROOT) $(BENCH_PYTHON) -m pipeline.runtime.registry start
\techo "$$(git log -1 --format=%s) $$(python3 -c 'import json; print(json.load(open(".cache/registry/state.json"))["pid"])')" >> $(BENCH_EVIDENCE)
.venv/.synced .tools/.ensured .tools/vllm-venv/.vllm-ready.json:
\techo "would reinstall $@ into the checkout's shared installs" >&2; exit 1
"""


def test_the_make_ci_stages_run_in_a_clone_whose_registry_is_stopped_before_it_goes(
    tmp_path: Path, repo_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src, evidence = tmp_path / "src", tmp_path / "ci-runs.txt"
    (src / ".venv").mkdir(parents=True)
    (src / ".tools").mkdir()
    (src / "Makefile").write_text(STANDIN_MAKEFILE)
    (src / "README.md").write_text(TABLE)
    (src / ".gitignore").write_text(".cache/\n")
    env = bench.base_env(**bench.GIT_ENV)
    for argv in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "first"]):
        subprocess.run(["git", *argv], cwd=src, check=True, env=env)
    monkeypatch.setenv("BENCH_PYTHON", sys.executable)
    monkeypatch.setenv("BENCH_PACKAGE_ROOT", str(repo_root))
    monkeypatch.setenv("BENCH_EVIDENCE", str(evidence))
    pids: list[int] = []
    try:
        code = bench.main(["--only", "ci", "--repo", str(src), "--readme", str(src / "README.md")])
        runs = evidence.read_text().splitlines() if evidence.exists() else []
        pids = [int(line.rsplit(" ", 1)[1]) for line in runs]
        out = capsys.readouterr()
        assert code == 0, out.err
        # Both runs in the clone, on its new commit; the second finds the first one's registry serving.
        assert [line.rsplit(" ", 1)[0] for line in runs] == ["bench: a new commit"] * 2
        assert len(set(pids)) == 1
        assert not registry._alive(pids[0]), "the clone's registry outlived the benchmark"
        lines = out.out.splitlines()
        assert re.fullmatch(r"make ci \(new commit\)\s+\d+\.\d s\s+(\d+\.\d|-)\s+253 s", lines[1]), lines
        assert re.fullmatch(r"make ci \(unchanged tree\)\s+\d+\.\d s\s+(\d+\.\d|-)\s+1\.5 s", lines[2]), lines
    finally:
        for pid in set(pids):
            registry._terminate(pid, grace=2.0)
