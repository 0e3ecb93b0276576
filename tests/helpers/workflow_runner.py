"""Run a GitHub Actions workflow's job graph on this machine, the way a runner would, for tests.

What it mirrors, and where the behaviour is defined upstream (docs.github.com, "Workflow syntax for GitHub
Actions", "Evaluate expressions", "Store information in variables", "Workflow commands"):

- jobs in an order their `needs` allow (graphlib: an unknown job or a cycle is refused); a job runs when its `if`
  (default `success()`: every needed job succeeded) holds, else it is skipped, and so are the jobs needing it;
- `${{ }}` expressions over the contexts github, env, vars, secrets, needs, steps, runner, job and the operators
  `== != && || !` with literals and the status functions; string comparison is case-insensitive, a missing
  property is null (rendered ""), `a || b` yields the first truthy operand. Anything else is REFUSED by name,
  never guessed;
- `run:` steps with GitHub's Linux default shell `bash --noprofile --norc -eo pipefail {0}` in the job's
  workspace, the env of workflow + job + step and GitHub's default variables; GITHUB_OUTPUT, GITHUB_ENV and
  GITHUB_STEP_SUMMARY files (`name=value` and the `name<<DELIMITER` form) become step outputs, env and summary;
- `actions/checkout`: the workspace gets the checkout's tracked files (`git ls-files` of the repository);
- `actions/upload-artifact` v4+ (actions/toolkit packages/artifact): name (default `artifact`), multi-line `path`,
  `if-no-files-found` (default warn), hidden files left out, the common root of the paths stripped, and a second
  upload of one name in a run FAILS; `actions/download-artifact`: by name into `path` (default the workspace),
  an unknown name fails;
- `dagger/dagger-for-github` with `verb: call`: the action runs `dagger call <args>` in a shell; here the args are
  split like a shell and handed to the `dagger` callable the caller supplies (see DaggerCall).

Any other action, and any expression feature not listed, is refused. A step the caller cannot let run here (it
needs a cluster, say) is replaced only through `step_substitutes`, and every replacement is recorded in
`Runner.substitutions`, as is every other deviation the caller asks for.
"""

from __future__ import annotations

import graphlib
import os
import re
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# -- expressions ---------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>==|!=|&&|\|\||!|\(|\)|\.|,)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*))"
)
STATUS_FUNCTIONS = ("success", "always", "failure", "cancelled")


class ExpressionError(ValueError):
    """An expression this runner does not evaluate (it never guesses)."""


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        if expr[pos:].strip() == "":
            break
        m = _TOKEN_RE.match(expr, pos)
        if m is None or m.end() == pos:
            raise ExpressionError(f"cannot read {expr[pos:]!r} in expression {expr!r}")
        kind = next(k for k, v in m.groupdict().items() if v is not None)
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def truthy(value: Any) -> bool:
    """GitHub's truthiness: false, 0, -0, "", null are falsy."""
    return value not in (None, False, 0, "")


def render(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class _Parser:
    tokens: list[tuple[str, str]]
    contexts: Mapping[str, Any]
    status: Callable[[str], bool]
    expr: str
    i: int = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise ExpressionError(f"expected {value or 'more'} in {self.expr!r}")
        self.i += 1
        return tok

    def parse(self) -> Any:
        value = self.or_()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()[1]!r} in {self.expr!r}")  # type: ignore[index]
        return value

    def or_(self) -> Any:
        value = self.and_()
        while self.peek() == ("op", "||"):
            self.take()
            right = self.and_()
            value = value if truthy(value) else right
        return value

    def and_(self) -> Any:
        value = self.cmp()
        while self.peek() == ("op", "&&"):
            self.take()
            right = self.cmp()
            value = right if truthy(value) else value
        return value

    def cmp(self) -> Any:
        left = self.unary()
        tok = self.peek()
        if tok in (("op", "=="), ("op", "!=")):
            self.take()
            right = self.unary()
            same = _loose_equal(left, right)
            return same if tok == ("op", "==") else not same
        return left

    def unary(self) -> Any:
        if self.peek() == ("op", "!"):
            self.take()
            return not truthy(self.unary())
        return self.primary()

    def primary(self) -> Any:
        kind, text = self.take()
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if kind == "num":
            return float(text) if "." in text else int(text)
        if (kind, text) == ("op", "("):
            value = self.or_()
            self.take(")")
            return value
        if kind != "name":
            raise ExpressionError(f"unexpected {text!r} in {self.expr!r}")
        if text in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[text]
        if self.peek() == ("op", "("):
            if text not in STATUS_FUNCTIONS:
                raise ExpressionError(f"function {text}() is not evaluated here (only {', '.join(STATUS_FUNCTIONS)})")
            self.take()
            self.take(")")
            return self.status(text)
        if text not in self.contexts:
            raise ExpressionError(f"context {text!r} is not available here ({', '.join(sorted(self.contexts))})")
        found: Any = self.contexts[text]
        while self.peek() == ("op", "."):
            self.take()
            _, prop = self.take()
            found = found.get(prop) if isinstance(found, Mapping) else None
        return found


def _loose_equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.casefold() == b.casefold()
    return bool(a == b)


def evaluate(expr: str, contexts: Mapping[str, Any], status: Callable[[str], bool] | None = None) -> Any:
    """The value of one expression (the text inside `${{ }}`, or an `if:` condition)."""

    def no_status(name: str) -> bool:
        raise ExpressionError(f"{name}() is only valid in an `if:` condition")

    return _Parser(_tokens(expr), contexts, status or no_status, expr).parse()


_EXPR_RE = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)


def substitute(text: str, contexts: Mapping[str, Any]) -> str:
    """`text` with every `${{ expr }}` replaced by its rendered value."""
    return _EXPR_RE.sub(lambda m: render(evaluate(m.group(1), contexts)), text)


def condition(text: Any, contexts: Mapping[str, Any], status: Callable[[str], bool]) -> bool:
    """An `if:` value (with or without `${{ }}`); a condition without a status function implies success()."""
    if isinstance(text, bool):
        return text
    expr = str(text).strip()
    m = re.fullmatch(r"\$\{\{(.*)\}\}", expr, re.DOTALL)
    expr = m.group(1) if m else expr
    if not any(re.search(rf"\b{f}\s*\(", expr) for f in STATUS_FUNCTIONS):
        expr = f"success() && ({expr})"
    return truthy(evaluate(expr, contexts, status))


# -- the run ---------------------------------------------------------------------------------------------------


@dataclass
class JobContext:
    """What a step of one job sees: its workspace, temp dir, env, and the clock offset of its environment."""

    name: str
    environment: str | None
    workspace: Path
    temp: Path
    env: dict[str, str]
    clock_offset: float = 0.0

    def command(self, argv: list[str]) -> list[str]:
        """`argv` under the job's clock (libfaketime, relative offset) when the job starts later than now."""
        if not self.clock_offset:
            return argv
        return ["faketime", "-f", f"+{int(self.clock_offset)}", *argv]


# `dagger` callable: (args of `dagger call`, the step's env, the job) → exit code.
DaggerCall = Callable[[list[str], dict[str, str], JobContext], int]
StepSubstitute = Callable[[JobContext], None]


@dataclass
class StepRun:
    job: str
    name: str
    outcome: str  # success | failure | skipped
    outputs: dict[str, str] = field(default_factory=dict)
    log: str = ""
    env: dict[str, str] = field(default_factory=dict)  # what the step wrote to GITHUB_ENV


@dataclass
class Runner:
    """One workflow run for one event. `vars`/`secrets`/`github` are the caller's stated table; `secrets` may hold a
    mapping per GitHub environment under `environments` (environment secrets win over repository secrets)."""

    workflow: Path
    work: Path
    repo: Path
    github: dict[str, Any]
    vars: dict[str, str]
    secrets: dict[str, str]
    environment_secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    environment_vars: dict[str, dict[str, str]] = field(default_factory=dict)
    dagger: DaggerCall | None = None
    step_substitutes: dict[tuple[str, str], StepSubstitute] = field(default_factory=dict)
    clock: Callable[[str, str | None], float] = lambda job, environment: 0.0
    base_env: dict[str, str] = field(default_factory=dict)
    substitutions: list[str] = field(default_factory=list)
    results: dict[str, str] = field(default_factory=dict)  # job → success | failure | skipped
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    steps: list[StepRun] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    artifacts: Path = field(init=False)

    def __post_init__(self) -> None:
        self.artifacts = self.work / "artifacts"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        data = yaml.safe_load(self.workflow.read_text())
        data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads `on:` as True
        self.data: dict[str, Any] = data

    # -- graph -------------------------------------------------------------------------------------------------

    def job_order(self) -> list[str]:
        """Jobs in an order their `needs` allow (a job after every job it needs); the workflow's order breaks ties."""
        jobs: dict[str, Any] = self.data["jobs"]
        graph: dict[str, list[str]] = {}
        for name, spec in jobs.items():
            needs = spec.get("needs", [])
            needs = [needs] if isinstance(needs, str) else list(needs)
            unknown = [n for n in needs if n not in jobs]
            if unknown:
                raise ValueError(f"job {name} needs unknown job(s) {unknown}")
            graph[name] = needs
        sorter = graphlib.TopologicalSorter(graph)
        sorter.prepare()  # raises graphlib.CycleError naming the cycle
        order: list[str] = []
        position = {name: i for i, name in enumerate(jobs)}
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=position.__getitem__)
            order += ready
            sorter.done(*ready)
        return order

    def needs_of(self, job: str) -> list[str]:
        needs = self.data["jobs"][job].get("needs", [])
        return [needs] if isinstance(needs, str) else list(needs)

    # -- contexts ----------------------------------------------------------------------------------------------

    def _contexts(
        self, job: str, env: Mapping[str, str], steps: Mapping[str, Any], jc: JobContext | None
    ) -> dict[str, Any]:
        environment = self.data["jobs"][job].get("environment")
        secrets = {**self.secrets, **self.environment_secrets.get(str(environment), {})}
        variables = {**self.vars, **self.environment_vars.get(str(environment), {})}
        needs = {n: {"result": self.results.get(n), "outputs": self.outputs.get(n, {})} for n in self.needs_of(job)}
        runner = {"os": "Linux", "arch": "X64", "temp": str(jc.temp) if jc else "", "name": "workflow-runner"}
        return {
            "github": {**self.github, "workspace": str(jc.workspace) if jc else ""},
            "env": dict(env),
            "vars": variables,
            "secrets": secrets,
            "needs": needs,
            "steps": dict(steps),
            "runner": runner,
            "job": {"status": "success"},
        }

    # -- run -----------------------------------------------------------------------------------------------------

    def run(self) -> dict[str, str]:
        """Run every job in order; returns job → result."""
        self.order = self.job_order()
        for job in self.order:
            self.results[job] = self._run_job(job)
        return self.results

    def _run_job(self, job: str) -> str:
        spec = self.data["jobs"][job]
        needed = [self.results[n] for n in self.needs_of(job)]

        def job_status(fn: str) -> bool:
            return {
                "success": all(r == "success" for r in needed),
                "always": True,
                "failure": any(r == "failure" for r in needed),
                "cancelled": False,
            }[fn]

        ctx0 = self._contexts(job, {}, {}, None)
        if not condition(spec.get("if", "success()"), ctx0, job_status):
            return "skipped"
        workspace = self.work / "jobs" / job / "workspace"
        temp = self.work / "jobs" / job / "temp"
        for d in (workspace, temp):
            d.mkdir(parents=True)
        environment = spec.get("environment")
        environment = environment.get("name") if isinstance(environment, dict) else environment
        jc = JobContext(job, environment, workspace, temp, {}, self.clock(job, environment))
        if jc.clock_offset:
            self.substitutions.append(
                f"job {job}: runs {jc.clock_offset:.0f} s after now (libfaketime): environment {environment}'s wait timer"
            )
        env: dict[str, str] = {}
        for layer in (self.data.get("env") or {}, spec.get("env") or {}):
            for k, v in layer.items():
                env[k] = substitute(str(v), self._contexts(job, env, {}, jc))
        steps: dict[str, Any] = {}
        failed = False
        for index, step in enumerate(spec["steps"]):
            name = str(step.get("name") or step.get("id") or step.get("uses") or f"step {index}")
            ctx = self._contexts(job, env, steps, jc)

            def step_status(fn: str, failed: bool = failed) -> bool:
                return {"success": not failed, "always": True, "failure": failed, "cancelled": False}[fn]

            if not condition(step.get("if", "success()"), ctx, step_status):
                self.steps.append(StepRun(job, name, "skipped"))
                continue
            step_env = dict(env)
            for k, v in (step.get("env") or {}).items():
                step_env[k] = substitute(str(v), ctx)
            run = self._run_step(job, step, name, step_env, ctx, jc)
            self.steps.append(run)
            if "id" in step:
                steps[str(step["id"])] = {"outputs": run.outputs, "outcome": run.outcome, "conclusion": run.outcome}
            env |= run.env
            if run.outcome == "failure":
                failed = True
        ctx = self._contexts(job, env, steps, jc)
        self.outputs[job] = {k: substitute(str(v), ctx) for k, v in (spec.get("outputs") or {}).items()}
        return "failure" if failed else "success"

    def _run_step(
        self, job: str, step: dict[str, Any], name: str, env: dict[str, str], ctx: Mapping[str, Any], jc: JobContext
    ) -> StepRun:
        key = (job, str(step.get("id") or name))
        if key in self.step_substitutes:
            self.substitutions.append(f"job {job}, step {key[1]}: replaced (cannot run here)")
            try:
                self.step_substitutes[key](jc)
            except Exception as exc:  # a failed substitute is a failed step, as the real one would be
                return StepRun(job, name, "failure", log=f"{type(exc).__name__}: {exc}")
            return StepRun(job, name, "success")
        if "run" in step:
            return self._shell(job, name, substitute(str(step["run"]), ctx), env, jc)
        uses = str(step["uses"])
        action = uses.split("@", 1)[0]
        with_ = {k: substitute(str(v), ctx) for k, v in (step.get("with") or {}).items()}
        if action == "actions/checkout":
            self._checkout(jc.workspace)
            return StepRun(job, name, "success")
        if action == "actions/upload-artifact":
            return self._upload(job, name, with_, jc)
        if action == "actions/download-artifact":
            return self._download(job, name, with_, jc)
        if action == "dagger/dagger-for-github":
            if with_.get("verb") != "call":
                raise ValueError(f"{job}/{name}: dagger verb {with_.get('verb')!r}: only `call` is run here")
            if self.dagger is None:
                raise ValueError(f"{job}/{name}: a dagger call, and no dagger executor given")
            code = self.dagger(shlex.split(with_["args"]), env, jc)
            return StepRun(job, name, "success" if code == 0 else "failure", log=f"dagger call exit {code}")
        raise ValueError(f"{job}/{name}: action {uses} is not run here")

    # -- run steps ----------------------------------------------------------------------------------------------

    def _default_env(self, jc: JobContext) -> dict[str, str]:
        g = self.github
        return {
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(jc.workspace),
            "GITHUB_REPOSITORY": str(g["repository"]),
            "GITHUB_RUN_ID": str(g["run_id"]),
            "GITHUB_SHA": str(g["sha"]),
            "GITHUB_REF": str(g["ref"]),
            "GITHUB_EVENT_NAME": str(g["event_name"]),
            "GITHUB_ACTOR": str(g["actor"]),
            "GITHUB_API_URL": str(g["api_url"]),
            "GITHUB_JOB": jc.name,
            "RUNNER_TEMP": str(jc.temp),
            "RUNNER_OS": "Linux",
        }

    def _shell(self, job: str, name: str, script: str, env: dict[str, str], jc: JobContext) -> StepRun:
        files = {k: jc.temp / f"{k.lower()}-{uuid.uuid4().hex[:8]}" for k in ("GITHUB_OUTPUT", "GITHUB_ENV")}
        summary = jc.temp / "step_summary.md"
        for f in files.values():
            f.touch()
        script_file = jc.temp / f"step-{uuid.uuid4().hex[:8]}.sh"
        script_file.write_text(script)
        full_env = {
            **self.base_env,
            **self._default_env(jc),
            **env,
            **{k: str(v) for k, v in files.items()},
            "GITHUB_STEP_SUMMARY": str(summary),
        }
        argv = jc.command(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script_file)])
        timeout = 60.0 * float(self.data["jobs"][job].get("timeout-minutes", 360))
        proc = subprocess.run(
            argv, cwd=jc.workspace, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
        )
        outputs = parse_env_file(files["GITHUB_OUTPUT"].read_text())
        new_env = parse_env_file(files["GITHUB_ENV"].read_text())
        outcome = "success" if proc.returncode == 0 else "failure"
        return StepRun(job, name, outcome, outputs, proc.stdout + proc.stderr, new_env)

    # -- actions ------------------------------------------------------------------------------------------------

    def _checkout(self, workspace: Path) -> None:
        """The repository's tracked files at their working-tree content (what this checkout's commit holds)."""
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=self.repo, capture_output=True, text=True, check=True
        ).stdout
        for rel in filter(None, listed.split("\0")):
            src = self.repo / rel
            if src.is_file():
                dest = workspace / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)

    def _upload(self, job: str, name: str, with_: dict[str, str], jc: JobContext) -> StepRun:
        artifact = with_.get("name") or "artifact"
        dest = self.artifacts / artifact
        if dest.exists():
            # upload-artifact v4+: "it is no longer possible to upload to the same named Artifact multiple times"
            return StepRun(job, name, "failure", log=f"an artifact named {artifact} was already uploaded in this run")
        paths = [p.strip() for p in with_.get("path", "").splitlines() if p.strip()]
        files: list[Path] = []
        for p in paths:
            src = (jc.workspace / p).resolve()
            if src.is_dir():
                files += [f for f in src.rglob("*") if f.is_file()]
            elif src.is_file():
                files.append(src)
        # Hidden files and files in hidden directories are excluded by default (include-hidden-files: false).
        files = [f for f in files if not any(part.startswith(".") for part in f.relative_to(jc.workspace).parts)]
        if not files:
            mode = with_.get("if-no-files-found", "warn")
            if mode == "error":
                return StepRun(job, name, "failure", log=f"no files found at {paths}")
            return StepRun(job, name, "success", log=f"no files found at {paths} ({mode})")
        # The least common ancestor of the search paths is the artifact's root.
        roots = [(jc.workspace / p).resolve() for p in paths]
        root = Path(os.path.commonpath([r if r.is_dir() else r.parent for r in roots]))
        for f in files:
            target = dest / f.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
        return StepRun(job, name, "success", log=f"uploaded {len(files)} file(s) as {artifact}")

    def _download(self, job: str, name: str, with_: dict[str, str], jc: JobContext) -> StepRun:
        artifact = with_.get("name")
        if not artifact:
            raise ValueError(f"{job}/{name}: download-artifact without `name` is not run here")
        src = self.artifacts / artifact
        if not src.is_dir():
            return StepRun(job, name, "failure", log=f"Artifact not found: {artifact}")
        dest = jc.workspace / (with_.get("path") or ".")
        shutil.copytree(src, dest, dirs_exist_ok=True)
        return StepRun(job, name, "success")


def parse_env_file(text: str) -> dict[str, str]:
    """GITHUB_OUTPUT / GITHUB_ENV: `name=value` lines and `name<<DELIMITER` ... `DELIMITER` blocks."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delim = line.split("<<", 1)
            body: list[str] = []
            while i < len(lines) and lines[i] != delim:
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                raise ValueError(f"{key}: no closing delimiter {delim!r}")
            i += 1
            out[key] = "\n".join(body)
        elif "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
        else:
            raise ValueError(f"invalid line in a GitHub file command: {line!r}")
    return out


# -- `dagger call` on this machine -----------------------------------------------------------------------------


@dataclass
class FinalExec:
    """A function's last exec (`python -m pipeline --run-dir /runs/<verb> <verb> ...`), in host terms."""

    function: str
    argv: list[str]  # the CLI command, container paths mapped to host paths
    env: dict[str, str]  # the container's env (withEnvVariable, secret variables), paths mapped
    run_dir: Path  # the host directory `report export --path` names
    services: dict[str, Any]  # alias → the service's recorded chain


ExecOverride = Callable[[FinalExec, JobContext], int]
# services(host exec, job) → replacements: text in the command (e.g. http://vllm:8000, /run/smoke/token) → host text.
ServiceStandIn = Callable[[FinalExec, JobContext], dict[str, str]]


@dataclass
class DaggerHost:
    """`dagger call <fn> <flags> report export --path=DIR` with the function run by the Dagger SDK (the harness:
    tests/helpers/dagger_harness.py, no engine) and its planned container's LAST exec run on this machine.

    Flags are read as the Dagger CLI reads them (dagger/dagger cmd/dagger/flags.go): `--name=value` or `--name value`
    per the function's registered argument types; a Boolean alone is true; list arguments are CSV (quotes removed,
    repeated flags append); a Secret is `env:NAME` (an unset variable fails) or `file:PATH`; File/Directory are host
    paths relative to the working directory and must exist. An unknown flag or chain fails.

    The last exec runs with the repository's venv in the repository (the function's `source`) instead of the
    container: its argv and env come from the recorded chain, the container paths of mounted host inputs
    (/inputs/...), mounted secrets and the run directory mapped to host paths. Setup execs (apt, uv, tools) are the
    container's preparation: the venv stands in for them (recorded once). Bound services cannot start here: a call
    with services needs `services` (a stand-in) or an `overrides` entry, and each use is recorded.
    """

    harness: Any  # tests.helpers.dagger_harness.Harness
    repo: Path
    base_env: dict[str, str]
    substitutions: list[str]
    services: ServiceStandIn | None = None
    overrides: dict[str, ExecOverride] = field(default_factory=dict)
    timeout: float = 1800.0
    calls: list[FinalExec] = field(default_factory=list)

    def __call__(self, args: list[str], env: dict[str, str], jc: JobContext) -> int:
        from tests.helpers.dagger_harness import chain, secret_id

        fn, inputs, export = self.parse(args, env, jc)
        registry = self._secrets
        run = self.harness.call(fn, **inputs)
        argv = [str(a) for a in run.execs()[-1]]
        # plan.REPORT_SH: sh -c SCRIPT report <run dir> <command...>
        if argv[:2] != ["sh", "-c"] or argv[3] != "report":
            raise ValueError(f"dagger call {fn}: the last exec is not the reported CLI run: {argv[:6]}")
        container_run_dir, command = argv[4], argv[5:]
        mapping: dict[str, str] = {container_run_dir: str(export)}
        cenv: dict[str, str] = {}
        for c in run.final:
            if c.name == "withEnvVariable":
                cenv[str(c.args["name"])] = str(c.args["value"])
            elif c.name == "withSecretVariable":
                cenv[str(c.args["name"])] = registry[secret_id(c.args["secret"])]
            elif c.name in ("withMountedFile", "withMountedDirectory"):
                ids = [str(x.args["id"]) for x in chain(c.args["source"]) if "id" in x.args]
                host = next((self._paths[i] for i in ids if i in self._paths), None)
                if host is not None:
                    mapping[str(c.args["path"])] = str(host)
            elif c.name == "withMountedSecret":
                secret = jc.temp / f"secret-{len(mapping)}"
                secret.write_text(registry[secret_id(c.args["source"])])
                secret.chmod(0o400)
                mapping[str(c.args["path"])] = str(secret)
        services = run.services()
        final = FinalExec(fn, command, cenv, export, services)
        if fn in self.overrides:
            self.substitutions.append(f"dagger call {fn}: its last exec replaced by the test (see the test's table)")
            self.calls.append(final)
            return self._write_code(export, self.overrides[fn](final, jc), run)
        if services:
            if self.services is None:
                raise ValueError(f"dagger call {fn}: services {sorted(services)} cannot start here and no stand-in")
            mapping |= self.services(final, jc)
            self.substitutions.append(f"dagger call {fn}: services {sorted(services)} → the test's stand-ins")
        note = "dagger call: the container's last exec runs in this repository with its venv (setup execs: the venv)"
        if note not in self.substitutions:
            self.substitutions.append(note)
        final.argv = [_mapped(a, mapping) for a in command]
        final.env = {k: _mapped(v, mapping) for k, v in cenv.items()}
        self.calls.append(final)
        export.mkdir(parents=True, exist_ok=True)
        argv_host = [str(self.repo / a) if a.startswith(".venv/") else a for a in final.argv]
        proc = subprocess.run(
            jc.command(argv_host),
            cwd=self.repo,
            env={**self.base_env, **final.env},
            capture_output=True,
            text=True,
            timeout=self.timeout,
            check=False,
        )
        (export.parent / f"{export.name}.log").write_text(proc.stdout + proc.stderr)
        return self._write_code(export, proc.returncode, run)

    @staticmethod
    def _write_code(export: Path, code: int, run: Any) -> int:
        """REPORT_SH's exit-code file, then the files the function adds to the returned directory (withNewFile)."""
        from tests.helpers.dagger_harness import chain

        export.mkdir(parents=True, exist_ok=True)
        (export / "exit-code").write_text(f"{code}\n")
        for c in chain(run.result.report):
            if c.name == "withNewFile":
                (export / str(c.args["path"])).write_text(str(c.args["contents"]))
        return 0  # the function returned its report; the job's Gate step reads exit-code

    def parse(self, args: list[str], env: Mapping[str, str], jc: JobContext) -> tuple[str, dict[str, Any], Path]:
        """`<fn> --flags... report export --path=DIR` → (function, raw inputs with object IDs, host export dir)."""
        self._secrets: dict[str, str] = getattr(self, "_secrets", {})
        self._paths: dict[str, Path] = getattr(self, "_paths", {})
        registered = self.harness.register()
        fn, rest = args[0], args[1:]
        if fn not in registered:
            raise ValueError(f"dagger call: no function {fn} ({', '.join(sorted(registered))})")
        try:
            at = rest.index("report")
        except ValueError:
            raise ValueError(f"dagger call {fn}: expected `report export --path=DIR` after the flags") from None
        flags, tail = rest[:at], rest[at:]
        if len(tail) != 3 or tail[1] != "export" or not tail[2].startswith("--path="):
            raise ValueError(f"dagger call {fn}: unsupported chain {tail}")
        types = registered[fn].args
        inputs: dict[str, Any] = {}
        i = 0
        while i < len(flags):
            flag = flags[i]
            if not flag.startswith("--"):
                raise ValueError(f"dagger call {fn}: unexpected argument {flag!r}")
            name, eq, value = flag[2:].partition("=")
            arg = name.replace("-", "_")
            if arg not in types:
                raise ValueError(f"dagger call {fn}: unknown flag --{name}")
            kind = types[arg].rstrip("?")
            if not eq:
                if kind == "BOOLEAN":
                    value = "true"
                else:
                    i += 1
                    value = flags[i]
            i += 1
            inputs[arg] = self._value(fn, name, kind, value, inputs.get(arg), env, jc)
        return fn, inputs, (jc.workspace / tail[2].removeprefix("--path=")).resolve()

    def _value(
        self, fn: str, name: str, kind: str, value: str, prev: Any, env: Mapping[str, str], jc: JobContext
    ) -> Any:
        import csv

        if kind.startswith("["):
            items = next(csv.reader([re.sub("[\"'`]", "", value)]), [])
            one = kind[1:-1]
            return [*(prev or []), *(self._value(fn, name, one, s.strip(), None, env, jc) for s in items)]
        if kind == "BOOLEAN":
            if value not in ("true", "false"):
                raise ValueError(f"dagger call {fn}: --{name} takes true or false, got {value!r}")
            return value == "true"
        if kind == "INTEGER":
            return int(value)
        if kind == "FLOAT":
            return float(value)
        if kind == "STRING":
            return value
        if kind == "Secret":
            scheme, _, ref = value.partition(":")
            if scheme == "env":
                if ref not in env:
                    raise ValueError(f"dagger call {fn}: --{name}: environment variable {ref} is not set")
                plain = env[ref]
            elif scheme == "file":
                plain = (jc.workspace / ref).read_text()
            else:
                raise ValueError(f"dagger call {fn}: --{name}: a secret is env:NAME or file:PATH here, got {value!r}")
            sid = f"secret-{len(self._secrets)}"
            self._secrets[sid] = plain
            return sid
        if kind in ("File", "Directory"):
            path = (jc.workspace / value).resolve()
            if not (path.is_file() if kind == "File" else path.is_dir()):
                raise ValueError(f"dagger call {fn}: --{name}: no {kind.lower()} {value} (in {jc.workspace})")
            oid = f"{kind.lower()}-{len(self._paths)}"
            self._paths[oid] = path
            return oid
        raise ValueError(f"dagger call {fn}: --{name}: argument type {kind} is not read here")


def _mapped(text: str, mapping: Mapping[str, str]) -> str:
    """`text` with each container path / service URL of `mapping` replaced (longest first, at path boundaries)."""
    for src in sorted(mapping, key=len, reverse=True):
        text = re.sub(re.escape(src) + r"(?=$|[/,\s=:])", mapping[src].replace("\\", "\\\\"), text)
    return text
