"""render: chart + environment -> checked manifests.

For each environment: `helm lint --strict` and `helm template` (chart values + env delta +
release pins), strict schema validation of core kinds, custom resources against the CRD JSON
schemas (directory or URL template), Rego policies, yamllint; alert rules extracted from the
PrometheusRule go through `promtool check rules` and `promtool test rules`; `trivy config`
scans the rendered output of every env in one process, gated like `scan` (pipeline.checks.trivy_ignore:
the root `.trivyignore.yaml`, every entry with a reason and an unexpired date). Every policy
must have a test (`policies/x_test.rego`); the Rego tests themselves run in the `test` stage.
The Argo CD objects (environments/argocd/, plus the Applications the
ApplicationSet generates) are validated and policy-checked as target `argocd`; a chart of this repo a
static Application deploys (the rollback controller) is rendered with that Application's values and gets
lint, schemas, policies, runbooks and its chart's promtool cases (`charts/<chart>/tests`). Check `prerequisites`
(pipeline.checks.prerequisites) holds everything rendered against `policies/prerequisites.yaml`: each
apiVersion/kind provided by a listed component, each version-gated field in the CRD schemas, the
Kubernetes minimum equal to the charts' kubeVersion.

Every independent step runs concurrently; only helm, trivy and promtool are subprocesses
(one per env for helm, one in total for trivy and `promtool check rules`; `promtool test rules`
one per core over the test groups of every file, each group on only the rules it reads, passes
of unchanged files reused: pipeline.checks.promtool_tests; trivy's report of byte-identical
manifests reused, its gate applied every run: pipeline.checks.trivy_config). On 2 cores the
run is CPU-bound, so the order matters: every `helm template` first, then promtool and trivy
(the longest steps) as soon as the files they read are written, the in-process checks once
promtool's processes are running.

Each env is rendered from the chart Argo CD will deploy: the version pinned in its release.yaml
(`release.chartVersion`, the OCI chart's targetRevision). That is the tree's chart only when the
versions match; otherwise a packaged `llm-service-<version>.tgz` from --charts-dir or this run's
build output. Check `chart-pin:<env>` says which, or why the env could not be rendered (FAILED for
pinned envs like prod: an unverifiable prod config never passes; SKIPPED elsewhere).

Rendering an env (`pipeline.artifacts.chart_render`) and the checks over its manifests
(`pipeline.checks.manifests`) live below this stage; this module holds the options and the
orchestration.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yamllint.config import YamlLintConfig

from pipeline.artifacts import chart as chart_artifact
from pipeline.artifacts.chart_render import (
    CHART,
    discover_envs,
    helm_template_argv,
    resolve_chart,
    values_args,
)
from pipeline.checks import canary, policy, prerequisites, trivy_config, trivy_ignore, validate
from pipeline.checks.manifests import (
    ChartApp,
    argocd_docs,
    chart_apps,
    check_manifests,
    check_runbooks,
    extract_rules,
    load_docs,
    write_alert_tests,
    yamllint_problems,
)
from pipeline.checks.promtool_tests import run_tests as run_promtool_tests
from pipeline.core.cache import Extra, cache_dir
from pipeline.core.context import RunContext
from pipeline.core.environments import env_names
from pipeline.core.result import Check, StageResult, Status, Timer
from pipeline.core.shell import run_capture, tail
from pipeline.platform_config import derived
from pipeline.runtime.tools import ToolMissing, require

NAME = "render"
HELP = "Render the chart per environment and check it: helm lint, schemas, CRDs, prerequisites, policies, trivy, promtool, yamllint."

POLICY_DIRS = (Path("policies/manifests"), Path("policies/lib"))
POLICY_ROOT = Path("policies")
PARAMS = Path("policies/params.yaml")
TRIVY_IGNORE = trivy_ignore.DEFAULT_PATH
YAMLLINT_CONFIG = Path("policies/yamllint-rendered.yaml")
ALERT_TESTS = CHART / "tests"
# What the result depends on (for the ci cache): the chart, env deltas + pins, Argo CD objects,
# policies + params + yamllint config, runbooks, the ignore file, and the stage's own code.
# The CRD schema location and today's date (ignore entries expire) come from cache_extra().
CACHE_INPUTS = ("charts", "environments", "policies", "docs/runbooks", str(TRIVY_IGNORE), "pipeline")
CACHE_TOOLS = ("helm", "trivy", "promtool")


# trivy's walk skips a directory named dev, proc or sys right under its target (default skip dirs,
# pkg/fanal/walker/walk.go; aquasecurity/trivy#6651, fix PR #10975 open): the dev env's rendered
# manifests were never scanned. It scans copies under `env-<name>/` instead.
TRIVY_VIEW_PREFIX = "env-"


def trivy_view(out: Path, targets: list[str], view: Path) -> Path:
    """Copies of each target's rendered directory under `view/env-<target>/` (a name trivy walks)."""
    for name in targets:
        if (out / name).is_dir():
            shutil.copytree(out / name, view / f"{TRIVY_VIEW_PREFIX}{name}")
    return view


@dataclass
class RenderOptions:
    """Inputs of the render stage (the CLI, the ci stage and the Dagger function build this)."""

    envs: list[str] = field(default_factory=lambda: ["all"])
    # Where rendered YAML goes; default <run dir>/rendered.
    out: Path | None = None
    # Directory or kubeconform-style URL template; default $PIPELINE_CRD_SCHEMAS or the repository's policies/crd-schemas
    # (the Dagger functions pass a mounted directory or nothing).
    crd_schemas: str | None = None
    kube_version: str = validate.DEFAULT_KUBE_VERSION
    # Tree holding charts/, environments/, policies/, docs/ (tests point this at a tmp copy).
    repo_root: Path | None = None
    # Fail on trivy findings of these severities (the scan gate's by default).
    trivy_severities: tuple[str, ...] = trivy_ignore.GATE_SEVERITIES
    # Tools not to run ("trivy", "promtool", "lint"): reported as SKIPPED, never as passed.
    # For callers that re-check one aspect (tests of planted violations); the CLI never skips.
    skip: frozenset[str] = frozenset()
    # Directories with packaged charts (llm-service-<version>.tgz) for envs pinned to a chart
    # version other than the tree's; <run dir>/build/chart/ (this run's build) is searched too.
    charts_dirs: list[Path] = field(default_factory=list)


def cache_extra(opts: RenderOptions | argparse.Namespace, root: Path) -> Extra:
    """Key material outside CACHE_INPUTS: the CRD schemas (directory contents or URL) and today's date."""
    location = validate.resolve_crd_location(getattr(opts, "crd_schemas", None), root)
    paths: tuple[str, ...] = (location,) if "://" not in location and Path(location).is_dir() else ()
    # Packaged charts of pinned envs may live outside the tree.
    paths += tuple(str(d) for d in getattr(opts, "charts_dirs", None) or [])
    facts = {
        "crd_schemas": location,
        validate.CRD_SCHEMAS_ENV: os.environ.get(validate.CRD_SCHEMAS_ENV, ""),
        "today": dt.datetime.now(dt.UTC).date().isoformat(),
    }
    return Extra(paths=paths, facts=facts)


class _Collector:
    """Thread-safe list of checks."""

    def __init__(self) -> None:
        self.checks: list[Check] = []
        self._lock = threading.Lock()

    def add(self, name: str, problems: list[str], seconds: float, ok_detail: str = "", **numbers: float) -> None:
        status = Status.FAILED if problems else Status.PASSED
        detail = "\n".join(problems) if problems else ok_detail
        with self._lock:
            self.checks.append(Check(name=name, status=status, detail=detail, seconds=seconds, numbers=numbers))

    def skip(self, name: str, why: str) -> None:
        with self._lock:
            self.checks.append(Check(name=name, status=Status.SKIPPED, detail=why))

    def extend(self, items: Iterable[Check]) -> None:
        with self._lock:
            self.checks.extend(items)


# --- the stage --------------------------------------------------------------------------------


def run(opts: RenderOptions, ctx: RunContext) -> StageResult:
    root = (opts.repo_root or ctx.repo_root).resolve()
    out = (opts.out or ctx.run_dir / "rendered").resolve()
    available = discover_envs(root)
    envs = available if opts.envs in (["all"], []) else opts.envs
    unknown = [e for e in envs if e not in available]
    if unknown:
        return StageResult(
            stage=NAME,
            status=Status.FAILED,
            summary=f"unknown environment(s) {', '.join(unknown)}; have {', '.join(available)}",
        )
    out.mkdir(parents=True, exist_ok=True)
    checks = _Collector()

    with Timer() as total:
        try:
            helm = require("helm")
            promtool = require("promtool")
            trivy = require("trivy")
        except ToolMissing as exc:
            return StageResult(stage=NAME, status=Status.FAILED, summary=str(exc))
        crd_location = validate.resolve_crd_location(opts.crd_schemas, root)
        try:
            crds = validate.CrdSchemas(crd_location)
        except FileNotFoundError as exc:
            return StageResult(stage=NAME, status=Status.FAILED, summary=str(exc))
        core = validate.CoreValidator(opts.kube_version)
        ignores = trivy_ignore.load(root / TRIVY_IGNORE)
        checks.add(
            "trivy ignorefile",
            ignores.problems,
            0.0,
            ok_detail=f"{len(ignores.entries)} valid entries in {TRIVY_IGNORE}",
        )
        yl_conf = YamlLintConfig(file=str(root / YAMLLINT_CONFIG))

        rule_names = policy.violation_rules([root / d for d in POLICY_DIRS])

        # regorus engines are bound to the thread that made them: each env compiles its own
        # (milliseconds) with its own parameters.
        def engine_for(target: str) -> Any:
            return policy.compile_engine(
                [root / d for d in POLICY_DIRS], {"params": policy.load_params(root / PARAMS, target)}
            )

        rules_by_env: dict[str, dict[str, Any]] = {}
        # apiVersion/kind of every target's objects (env, chart app, argocd), for check `prerequisites`.
        kinds_by_target: dict[str, set[tuple[str, str]]] = {}
        rendered_envs: list[str] = []
        rendered_apps: list[str] = []
        rule_apps: list[str] = []  # chart apps that render a PrometheusRule
        app_lints: list[Callable[[], None]] = []  # `helm lint` of each chart app, run with the envs'
        lock = threading.Lock()
        ctx.progress(f"render: {', '.join(envs)} -> {out} (CRD schemas: {crd_location})")

        # The chart each env pins (tree or package); envs whose chart is not available are not rendered.
        search_dirs = [*opts.charts_dirs, ctx.run_dir / chart_artifact.BUILD_SUBDIR]
        pinned_envs = [str(e) for e in policy.load_params(root / PARAMS, "argocd").get("pinned_envs") or []]
        from pipeline.artifacts.source import git_commit

        head = git_commit(root)
        pins = {e: resolve_chart(root, e, search_dirs, pinned_envs, head) for e in envs}
        checks.extend(pin.check() for pin in pins.values())
        chart_of = {e: pin.chart for e, pin in pins.items() if pin.chart is not None}

        def lint(env: str) -> None:
            with Timer() as t:
                proc = run_capture([helm, "lint", "--strict", str(chart_of[env]), *values_args(root, env)], cwd=root)
            problems = [] if proc.returncode == 0 else [f"{env}: {tail(proc.stdout + proc.stderr)}"]
            checks.add(f"helm lint {env}", problems, t.seconds)

        def render_env(env: str) -> list[Callable[[], None]]:
            """helm template and the files trivy and promtool read; returns the in-process checks
            over its objects, run once those tools have started (they share the cores)."""
            env_out = out / env
            env_out.mkdir(parents=True, exist_ok=True)
            with Timer() as t:
                proc = run_capture(
                    helm_template_argv(root, env, helm=helm, kube_version=opts.kube_version, chart=chart_of[env]),
                    cwd=root,
                )
            if proc.returncode != 0:
                checks.add(f"helm template {env}", [f"{env}: {tail(proc.stderr or proc.stdout)}"], t.seconds)
                return []
            text = proc.stdout
            manifest = env_out / "manifests.yaml"
            manifest.write_text(proc.stdout)
            docs = load_docs(proc.stdout)
            # trivy's Kubernetes checks skip custom kinds: it scans each Rollout's pods as a Deployment.
            if trivy_view := canary.trivy_view(docs):
                (env_out / canary.TRIVY_VIEW).write_text(yaml.safe_dump_all(trivy_view, sort_keys=False, width=1000))
            with lock:
                kinds_by_target[env] = prerequisites.object_kinds(docs)
            checks.add(f"helm template {env}", [], t.seconds, ok_detail=f"{len(docs)} objects", objects=len(docs))
            rules = extract_rules(docs)
            if rules is None:
                checks.add(f"alert rules {env}", [f"{env}: no PrometheusRule rendered"], 0.0)
            else:
                (env_out / "prometheus-rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False, width=1000))
                write_alert_tests(env, rules, env_out, root / ALERT_TESTS)
                with lock:
                    rules_by_env[env] = rules
                    rendered_envs.append(env)

            def check() -> None:
                with Timer() as t:
                    results = check_manifests(env, docs, core, crds, engine_for, rule_names)
                for name, problems in results.items():
                    checks.add(name, problems, t.seconds)
                with Timer() as t:
                    yl = yamllint_problems(f"{env}/manifests.yaml", text, yl_conf)
                checks.add(f"yamllint {env}", [f"{env}: {p}" for p in yl], t.seconds)
                if rules is not None:
                    checks.add(f"runbooks {env}", check_runbooks(env, rules, root), 0.0)

            return [check]

        def argocd() -> None:
            with Timer() as t:
                try:
                    docs = argocd_docs(root)
                except (yaml.YAMLError, ValueError, KeyError) as exc:
                    checks.add("argocd", [f"argocd: {exc}"], 0.0)
                    return
                with lock:
                    kinds_by_target["argocd"] = prerequisites.object_kinds(docs)
                (out / "argocd").mkdir(parents=True, exist_ok=True)
                text = yaml.safe_dump_all(docs, sort_keys=False, width=1000)
                (out / "argocd" / "manifests.yaml").write_text(text)
                schema = [f"argocd: {f}" for d in docs for f in crds.validate(d)]
                by_rule = policy.evaluate_by_rule(engine_for("argocd"), {"kind": "List", "items": docs}, rule_names)
            checks.add("crd schema argocd", schema, t.seconds, objects=len(docs))
            checks.add(
                "policy argocd",
                [f"argocd: policy {rule}: {m}" for rule, msgs in sorted(by_rule.items()) for m in msgs],
                t.seconds,
            )

        def render_app(app: ChartApp) -> list[Callable[[], None]]:
            """A chart an Application deploys, with exactly that Application's values: render (and
            the files trivy and promtool read); returns the checks over its objects, its lint
            goes to `app_lints`."""
            label = app.name
            app_out = out / label
            app_out.mkdir(parents=True, exist_ok=True)
            missing = [str(f.relative_to(root)) for f in app.value_files if not f.is_file()]
            if missing:
                checks.add(f"helm template {label}", [f"{label}: value file(s) {', '.join(missing)} missing"], 0.0)
                return []
            args = [a for f in app.value_files for a in ("-f", str(f))]
            if app.values_object:
                inline = app_out / "values-object.yaml"
                inline.write_text(yaml.safe_dump(app.values_object, sort_keys=False))
                args += ["-f", str(inline)]

            def lint_app() -> None:
                with Timer() as t:
                    proc = run_capture(
                        [helm, "lint", "--strict", str(app.chart), "--namespace", app.namespace, *args], cwd=root
                    )
                checks.add(
                    f"helm lint {label}",
                    [] if proc.returncode == 0 else [f"{label}: {tail(proc.stdout + proc.stderr)}"],
                    t.seconds,
                )

            with lock:
                app_lints.append(lint_app)
            with Timer() as t:
                proc = run_capture(
                    [
                        helm,
                        "template",
                        app.release,
                        str(app.chart),
                        "--namespace",
                        app.namespace,
                        "--kube-version",
                        opts.kube_version,
                        *args,
                    ],
                    cwd=root,
                )
            if proc.returncode != 0:
                checks.add(f"helm template {label}", [f"{label}: {tail(proc.stderr or proc.stdout)}"], t.seconds)
                return []
            (app_out / "manifests.yaml").write_text(proc.stdout)
            docs = load_docs(proc.stdout)
            with lock:
                kinds_by_target[label] = prerequisites.object_kinds(docs)
            checks.add(f"helm template {label}", [], t.seconds, ok_detail=f"{len(docs)} objects", objects=len(docs))
            # A chart app's alerts get what an env's get: runbooks, and its chart's promtool cases.
            rules = extract_rules(docs)
            if rules is not None:
                (app_out / "prometheus-rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False, width=1000))
                write_alert_tests(label, rules, app_out, app.chart / "tests", namespace=app.namespace)
            with lock:
                rendered_apps.append(label)
                if rules is not None:
                    rule_apps.append(label)

            def check() -> None:
                with Timer() as t:
                    core_docs = [d for d in docs if core.is_core(d)]
                    cr_docs = [d for d in docs if not core.is_core(d)]
                    core_problems = [f"{label}: {f}" for d in core_docs for f in core.validate(d)]
                    cr_problems = [f"{label}: {f}" for d in cr_docs for f in crds.validate(d)]
                    # The manifest policies too (params: the defaults): e.g. tracking, over its ServiceMonitor.
                    by_rule = policy.evaluate_by_rule(engine_for(label), {"kind": "List", "items": docs}, rule_names)
                checks.add(f"kubernetes schema {label}", core_problems, t.seconds, objects=len(core_docs))
                checks.add(f"crd schema {label}", cr_problems, t.seconds, objects=len(cr_docs))
                checks.add(
                    f"policy {label}",
                    [f"{label}: policy {rule}: {m}" for rule, msgs in sorted(by_rule.items()) for m in msgs],
                    t.seconds,
                )
                if rules is not None:
                    checks.add(f"runbooks {label}", check_runbooks(label, rules, root), 0.0)

            return [check]

        def platform_agrees() -> None:
            # Pure Python (~0.4 s of CPU): once promtool runs, beside it, not before every helm process.
            with Timer() as t:
                problems = derived.problems(root)
            checks.add("platform.yaml", problems, t.seconds, ok_detail="every derived file agrees with it")

        def policy_tests_present() -> None:
            # A file scan (milliseconds); the Rego tests themselves run once, in the `test` stage.
            with Timer() as t:
                missing = policy.missing_tests(root / POLICY_ROOT)
            checks.add("policy tests present", missing, t.seconds)

        def trivy_scan(env_list: list[str]) -> None:
            # One process over every rendered env and chart app; the Argo CD objects are not
            # workloads. Findings go through the scan stage's gate and ignore file.
            with Timer() as t, tempfile.TemporaryDirectory(prefix="trivy-view-") as tmp:
                view = trivy_view(out, env_list, Path(tmp))
                argv = [
                    trivy,
                    "config",
                    "--quiet",
                    "--skip-check-update",
                    "--skip-version-check",
                    "--disable-telemetry",
                ]
                argv += ["--misconfig-scanners", "kubernetes"]
                for pattern in ("**/*.test.yaml", "**/prometheus-rules.yaml", "**/values-object.yaml"):
                    argv += ["--skip-files", pattern]  # not Kubernetes objects
                # The report of identical inputs is reused; the gate below runs every time.
                scanned = trivy_config.scan(
                    [*argv, "--format", "json"], view, cwd=root, cache=cache_dir() / "trivy-config"
                )
            if scanned.report is None:
                checks.add("trivy config", [f"trivy failed: {tail(scanned.stderr)}"], t.seconds)
                return
            report = scanned.report
            for r in report.get("Results") or []:  # a Rollout's findings belong to the env's manifests.yaml
                target = str(r.get("Target", "")).removeprefix(TRIVY_VIEW_PREFIX)
                r["Target"] = target.replace(canary.TRIVY_VIEW, "manifests.yaml")
            report["Results"] = [
                r for r in report.get("Results") or [] if str(r.get("Target", "")).split("/", 1)[0] in env_list
            ]
            walked = sorted({str(r["Target"]).split("/", 1)[0] for r in report["Results"]})
            bad, ignored, total = trivy_ignore.gate_misconfigs(report, ignores, opts.trivy_severities)
            note = f"; {len(ignored)} accepted by {TRIVY_IGNORE}" if ignored else ""
            note += "; report reused: identical manifests, options and trivy" if scanned.reused else ""
            checks.add(
                "trivy config",
                bad,
                t.seconds,
                ok_detail=f"{total} finding(s) below {'/'.join(opts.trivy_severities)} in {', '.join(walked)}{note}",
                findings=len(bad),
                ignored=len(ignored),
                reused=float(scanned.reused),
            )

        def promtool_rules(env_list: list[str]) -> None:
            files = [str(out / e / "prometheus-rules.yaml") for e in env_list]
            with Timer() as t:
                proc = run_capture([promtool, "check", "rules", *files], cwd=out)
            checks.add(
                "promtool check rules",
                [] if proc.returncode == 0 else [tail(proc.stdout + proc.stderr, 30)],
                t.seconds,
            )

        def promtool_tests(env_list: list[str], started: threading.Event) -> None:
            """`started` is set once promtool's processes are running, or this ends (whichever first)."""
            try:
                # promtool resolves rule_files relative to each test file.
                tests = sorted(f"{e}/{p.name}" for e in env_list for p in (out / e).glob("*.test.yaml"))
                missing = [e for e in env_list if not any(t.startswith(f"{e}/") for t in tests)]
                if missing:
                    checks.add(
                        "promtool test rules",
                        [f"{e}: no promtool tests (charts/<chart>/tests/*.test.yaml) for its rules" for e in missing],
                        0.0,
                    )
                    return
                # Every file's test groups over one process per core; passes of unchanged files are reused.
                with Timer() as t:
                    tested = run_promtool_tests(
                        promtool, tests, out, cache=cache_dir() / "promtool-tests", on_start=started.set
                    )
                checks.add(
                    "promtool test rules",
                    [tested.report()] if tested.failed else [],
                    t.seconds,
                    ok_detail=tested.summary(),
                    files=len(tests),
                    reused=tested.reused,
                )
            finally:
                started.set()

        def run_in_turn(steps: list[Callable[[], None]]) -> None:
            for step in steps:
                step()

        # Critical path on 2 cores: helm template (all targets at once), then promtool's test groups
        # and trivy, the longest steps, as soon as the files they read are written; the helm lints
        # and the in-process checks (they would slow promtool's group split, Python on the GIL)
        # once promtool's processes are running. Threads mostly wait on processes.
        with ThreadPoolExecutor(max_workers=16, thread_name_prefix="render") as pool:
            writes: list[Future[list[Callable[[], None]]]] = [pool.submit(render_env, e) for e in envs if e in chart_of]
            try:
                apps = chart_apps(root)
            except (yaml.YAMLError, ValueError, KeyError) as exc:
                checks.add("argocd chart apps", [f"argocd: {exc}"], 0.0)
                apps = []
            writes += [pool.submit(render_app, a) for a in apps]
            follow_ups = [f for fut in writes for f in fut.result()]
            done = sorted(rendered_envs)
            promtool_started = threading.Event()
            later: list[Future[None]] = []
            if done and "promtool" not in opts.skip:
                later.append(pool.submit(promtool_tests, done + sorted(rule_apps), promtool_started))
            else:
                if done:
                    checks.skip("promtool test rules", "skipped by RenderOptions.skip")
                promtool_started.set()
            if done:
                if "trivy" in opts.skip:
                    checks.skip("trivy config", "skipped by RenderOptions.skip")
                else:
                    later.append(pool.submit(trivy_scan, done + sorted(rendered_apps)))
                later.append(pool.submit(promtool_rules, done + sorted(rule_apps)))
            promtool_started.wait()  # its group split done (or failed): set in promtool_tests' finally
            if "lint" in opts.skip:
                checks.skip("helm lint", "skipped by RenderOptions.skip")
            else:
                later += [pool.submit(lint, e) for e in envs if e in chart_of]
            later += [pool.submit(f) for f in app_lints]
            # The in-process checks one after another in one thread: they hold the GIL anyway, and
            # threads contending for it only cost CPU the processes above could use.
            later.append(pool.submit(run_in_turn, [*follow_ups, platform_agrees, argocd, policy_tests_present]))
            for fut in later:
                fut.result()

        # In-process, milliseconds: over the kinds of every target rendered above.
        with Timer() as t:
            missing, prereq_summary = prerequisites.check(root, kinds_by_target, crds)
        checks.add("prerequisites", missing, t.seconds, ok_detail=prereq_summary, targets=len(kinds_by_target))

    result = StageResult.from_checks(
        NAME,
        sorted(checks.checks, key=lambda c: c.name),
        numbers={"seconds": total.seconds, "environments": float(len(envs))},
        evidence={
            "environments": envs,
            "chart_apps": sorted(rendered_apps),
            "charts": {e: {"version": p.version, "chart": str(p.chart) if p.chart else None} for e, p in pins.items()},
            "out": str(out),
            "crd_schemas": crd_location,
            "kube_version": opts.kube_version,
            "prerequisites": str(prerequisites.PREREQUISITES),
        },
        artifacts=[str(p) for p in sorted(out.rglob("*.yaml"))],
        seconds=total.seconds,
    )
    failed = result.failures()
    result.summary = (
        f"{len(envs)} env(s) rendered to {out}; {len(result.checks) - len(failed)}/{len(result.checks)} checks passed"
        + (f"; failed: {', '.join(c.name for c in failed)}" if failed else "")
    )
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env",
        action="append",
        default=None,
        choices=(*env_names(), "all"),
        help="environment to render (repeatable; default all)",
    )
    parser.add_argument("--out", type=Path, help="write rendered YAML here (default: <run dir>/rendered)")
    parser.add_argument(
        "--crd-schemas",
        metavar="DIR_OR_URL_TEMPLATE",
        help=f"CRD JSON schemas: a directory (<group>/<kind>_<version>.json) or a kubeconform URL template "
        f"(default: ${validate.CRD_SCHEMAS_ENV} or {validate.DEFAULT_CRD_SCHEMAS} relative to the repo)",
    )
    parser.add_argument("--kube-version", default=validate.DEFAULT_KUBE_VERSION, help="Kubernetes version to target")
    parser.add_argument(
        "--charts-dir",
        action="append",
        type=Path,
        default=None,
        help="directory with packaged charts (llm-service-<version>.tgz) for envs pinned to a chart version "
        "other than the tree's (repeatable; this run's build output is searched too)",
    )


def run_from_args(args: argparse.Namespace, ctx: RunContext) -> StageResult:
    envs = args.env or ["all"]
    if "all" in envs:
        envs = ["all"]
    return run(
        RenderOptions(
            envs=envs,
            out=args.out,
            crd_schemas=args.crd_schemas,
            kube_version=args.kube_version,
            charts_dirs=list(getattr(args, "charts_dir", None) or []),
        ),
        ctx,
    )
