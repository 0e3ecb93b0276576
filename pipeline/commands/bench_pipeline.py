"""`make bench-pipeline`: the developer loop's wall times beside the README's measured figures.

Runs `python -m pipeline render --env all` cold (empty pipeline cache) and warm (that cache
again), `--repeat` times (each cold run on a fresh cache), then `make ci` in a temporary clone
for a new commit and again for the unchanged tree, and prints each wall time (the median and
range when repeated) and the machine's 1-minute load average when it ran next to the figure the
README's "Measured on this machine" table records for it (parsed from README.md, never copied
here), so a regression is seen the day it lands; on 2 shared cores the load says how far a
figure is from a quiet machine's. A benchmark that prints numbers, not a test: nothing here
passes or fails on a time.

    python -m pipeline.commands.bench_pipeline [--only render|ci] [--repeat N] [--readme README.md] [--repo CHECKOUT]

The clone gets the checkout's `.venv` and `.tools` as symlinks and its install targets are taken
as done (`make -o`), so it never reinstalls into them; its registry, GitOps repo, runs and caches
stay inside the clone, whose registry is stopped before the clone is removed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parents[2]
SECTION = "Measured on this machine"
# `make ci`'s install prerequisites, taken as up to date in the clone (they are the checkout's).
INSTALL_TARGETS = (".venv/.synced", ".tools/.ensured", ".tools/vllm-venv/.vllm-ready.json")
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


@dataclass(frozen=True)
class Row:
    """One row of the README's measured table."""

    what: str
    command: str
    result: str

    def wall(self) -> str | None:
        """The wall-time figure of the result (`253 s wall`, a range `4.4-4.9 s wall` with an en dash), as written."""
        m = re.search(r"(\d+(?:\.\d+)?(?:\s*[\u2013-]\s*\d+(?:\.\d+)?)?)\s*s wall", self.result.replace("*", ""))
        return f"{m.group(1)} s" if m else None


@dataclass(frozen=True)
class Stage:
    """A timed command and how to find its previous figure: the first row whose `what` or
    `command` cell contains `row_match`."""

    name: str
    argv: tuple[str, ...]
    row_match: str


@dataclass(frozen=True)
class Timing:
    stage: Stage
    seconds: float
    exit_code: int
    load: float | None = None  # the 1-minute load average when it started


Runner = Callable[[Sequence[str], Path, Mapping[str, str]], int]


def measured_rows(readme_text: str) -> list[Row]:
    """The table under `## Measured on this machine…`; ValueError if the section or table is missing."""
    tokens = MarkdownIt("commonmark").enable("table").parse(readme_text)
    in_section = False
    rows: list[Row] = []
    cells: list[str] = []
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open" and tok.tag == "h2":
            if in_section and rows:
                break
            in_section = tokens[i + 1].content.startswith(SECTION)
        elif in_section and tok.type == "tr_open":
            cells = []
        elif in_section and tok.type in ("td_open", "th_open"):
            cells.append(tokens[i + 1].content if tokens[i + 1].type == "inline" else "")
        elif in_section and tok.type == "tr_close" and tokens[i - 1].type == "td_close":
            if len(cells) != 3:
                raise ValueError(f"README table '{SECTION}': row with {len(cells)} cells, expected 3: {cells}")
            rows.append(Row(*cells))
    if not rows:
        raise ValueError(f"README has no table under a '## {SECTION}' heading")
    return rows


def previous_figure(rows: Sequence[Row], stage: Stage) -> str:
    for row in rows:
        if stage.row_match in row.what or stage.row_match in row.command:
            return row.wall() or "(no wall time in the row)"
    return "(not in the README)"


def _span(values: Sequence[float], unit: str = "") -> str:
    low, high = min(values), max(values)
    return f"{low:.1f}{unit}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}\u2013{high:.1f}{unit}"


def format_report(timings: Sequence[Timing], rows: Sequence[Row]) -> str:
    """One line per stage (its runs together): name, wall time now (the median and range of
    repeated runs; exit codes if not 0), the load average it ran at, the README's figure."""
    runs: dict[str, list[Timing]] = {}
    for t in timings:
        runs.setdefault(t.stage.name, []).append(t)
    header = ("stage", "now", "load", "README")
    lines = []
    for name, ts in runs.items():
        seconds = [t.seconds for t in ts]
        now = f"{seconds[0]:.1f} s"
        if len(ts) > 1:
            now = f"{statistics.median(seconds):.1f} s median ({_span(seconds, ' s')}, {len(ts)} runs)"
        failed = sorted({t.exit_code for t in ts} - {0})
        now += f" (exit {', '.join(map(str, failed))})" if failed else ""
        loads = [t.load for t in ts if t.load is not None]
        lines.append((name, now, _span(loads) if loads else "-", previous_figure(rows, ts[0].stage)))
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *lines])


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def render_stages(python: str) -> list[Stage]:
    argv = (python, "-m", "pipeline", "render", "--env", "all")
    return [
        Stage("render --env all (cold)", argv, "all three envs, cold"),
        Stage("render --env all (warm)", argv, "all three envs, warm"),
    ]


def ci_stages() -> list[Stage]:
    argv = ("make", *(f"-o{t}" for t in INSTALL_TARGETS), "ci")
    return [
        Stage("make ci (new commit)", argv, "first run of a commit"),
        Stage("make ci (unchanged tree)", argv, "unchanged tree"),
    ]


def run_logged(log_dir: Path) -> Runner:
    """A runner that keeps each command's output in `log_dir` (a benchmark prints numbers, not logs)."""
    counter = iter(range(1, 1000))

    def run(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> int:
        log = log_dir / f"{next(counter):02d}-{Path(argv[0]).name}.log"
        with log.open("w") as out:
            return subprocess.run(list(argv), cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT).returncode

    return run


def time_stages(
    stages: Sequence[Stage],
    cwd: Path,
    env: Mapping[str, str],
    runner: Runner,
    clock: Callable[[], float] = time.monotonic,
    report: Callable[[str], None] = lambda line: None,
    load: Callable[[], float | None] = load_average,
) -> list[Timing]:
    timings = []
    for stage in stages:
        busy = load()
        start = clock()
        code = runner(stage.argv, cwd, env)
        timings.append(Timing(stage, clock() - start, code, busy))
        report(
            f"{stage.name}: {timings[-1].seconds:.1f} s (exit {code}, load {'-' if busy is None else f'{busy:.1f}'})"
        )
    return timings


def base_env(**extra: str) -> dict[str, str]:
    """The caller's environment without the pipeline's own settings (each stage sets what it uses)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    return env | extra


@contextmanager
def new_commit_clone(repo: Path, work: Path) -> Iterator[Path]:
    """A clone of `repo`'s HEAD plus one new (empty) commit, sharing `.venv` and `.tools`; its
    embedded registry is stopped when it goes."""
    from pipeline.runtime import registry

    clone = work / "clone"
    git = ["git", "-c", "advice.detachedHead=false"]
    subprocess.run(
        [*git, "clone", "--quiet", "--no-hardlinks", str(repo), str(clone)], check=True, env=base_env(**GIT_ENV)
    )
    subprocess.run(
        [*git, "commit", "--quiet", "--allow-empty", "-m", "bench: a new commit"],
        cwd=clone,
        check=True,
        env=base_env(**GIT_ENV),
    )
    for name in (".venv", ".tools"):
        (clone / name).symlink_to(repo / name)
    try:
        yield clone
    finally:
        registry.stop(clone / ".cache" / "registry")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.commands.bench_pipeline", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--only", choices=["render", "ci"], help="run only these stages")
    parser.add_argument(
        "--repeat", type=int, default=3, help="render runs, each cold (fresh cache) then warm (default 3)"
    )
    parser.add_argument("--readme", type=Path, default=REPO / "README.md", help="README with the measured table")
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout to time (its HEAD is cloned for `make ci`)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    try:
        rows = measured_rows(args.readme.read_text())
    except (OSError, ValueError) as exc:
        print(f"bench-pipeline: {exc}", file=sys.stderr)
        return 2

    def progress(line: str) -> None:
        print(f"· {line}", file=sys.stderr, flush=True)

    timings: list[Timing] = []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        work = Path(tmp)
        (work / "logs").mkdir()
        runner = run_logged(work / "logs")
        if args.only in (None, "render"):
            python = str(args.repo / ".venv/bin/python")
            for i in range(args.repeat):
                # Cold: an empty pipeline cache (stage results, promtool passes); warm: the one it filled.
                env = base_env(PIPELINE_CACHE_DIR=str(work / f"cache-{i}"), PIPELINE_RUNS_DIR=str(work / "runs"))
                timings += time_stages(render_stages(python), args.repo, env, runner, report=progress)
        if args.only in (None, "ci"):
            with new_commit_clone(args.repo.resolve(), work) as clone:
                timings += time_stages(ci_stages(), clone, base_env(**GIT_ENV), runner, report=progress)
        print(format_report(timings, rows))
        failed = [t for t in timings if t.exit_code != 0]
        if failed:
            kept = Path(tempfile.mkdtemp(prefix="bench-pipeline-logs-"))
            shutil.copytree(work / "logs", kept, dirs_exist_ok=True)
            print(f"bench-pipeline: {len(failed)} stage(s) failed; their logs: {kept}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
