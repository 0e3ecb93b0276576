"""render: chart + environment -> checked manifests.

For each environment: `helm lint --strict` and `helm template` (chart values + env delta +
release pins), strict schema validation of core kinds, custom resources against the CRD JSON
schemas (directory or URL template), Rego policies, yamllint; alert rules extracted from the
PrometheusRule go through `promtool check rules` and `promtool test rules`; `trivy config`
scans the rendered output. The Argo CD objects (environments/argocd/, plus the Applications the
ApplicationSet generates) are validated and policy-checked as target `argocd`.

Every independent step runs concurrently; only helm, trivy and promtool are subprocesses
(one per env for helm, one in total for each of the others).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from pipeline import policy, validate
from pipeline.context import RunContext
from pipeline.result import Check, StageResult, Status, Timer
from pipeline.tools import ToolMissing, require

NAME = "render"
HELP = "Render the chart per environment and check it: helm lint, schemas, CRDs, policies, trivy, promtool, yamllint."

CHART = Path("charts/llm-service")
ENVIRONMENTS = Path("environments")
ARGOCD_DIR = ENVIRONMENTS / "argocd"
POLICY_DIRS = (Path("policies/manifests"), Path("policies/lib"))
POLICY_ROOT = Path("policies")
PARAMS = Path("policies/params.yaml")
TRIVY_IGNORE = Path("policies/.trivyignore.yaml")
YAMLLINT_CONFIG = Path("policies/yamllint-rendered.yaml")
ALERT_TESTS = CHART / "tests"
RUNBOOKS = Path("docs/runbooks")
RELEASE_NAME = "llm-service"


@dataclass
class RenderOptions:
    """Inputs of the render stage (the CLI, the ci stage and the Dagger function build this)."""

    envs: list[str] = field(default_factory=lambda: ["all"])
    # Where rendered YAML goes; default <run dir>/rendered.
    out: Path | None = None
    # Directory or kubeconform-style URL template; default $PIPELINE_CRD_SCHEMAS or ../shared/schemas/crds.
    crd_schemas: str | None = None
    kube_version: str = validate.DEFAULT_KUBE_VERSION
    # Tree holding charts/, environments/, policies/, docs/ (tests point this at a tmp copy).
    repo_root: Path | None = None
    # Fail on trivy findings of these severities.
    trivy_severities: tuple[str, ...] = ("HIGH", "CRITICAL")
    # Tools not to run ("trivy", "promtool", "lint"): reported as SKIPPED, never as passed.
    # For callers that re-check one aspect (tests of planted violations); the CLI never skips.
    skip: frozenset[str] = frozenset()


def namespace_for(env: str) -> str:
    """The namespace Argo CD deploys env into (ApplicationSet destination `llm-<env>`)."""
    return f"llm-{env}"


def discover_envs(root: Path) -> list[str]:
    """Environment directories: environments/<env>/ holding a values.yaml (argocd/ has none)."""
    return sorted(p.parent.name for p in (root / ENVIRONMENTS).glob("*/values.yaml"))


def _run(argv: list[str], cwd: Path, timeout: float = 120, merge: bool = False) -> subprocess.CompletedProcess[str]:
    if merge:  # one stream keeps promtool's per-file headers next to their failures
        return subprocess.run(
            argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False
        )
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


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


# --- per-environment analysis -----------------------------------------------------------------


def load_docs(text: str) -> list[dict[str, Any]]:
    """Non-empty YAML documents of a multi-document stream."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [d for d in yaml.load_all(text, Loader=loader) if isinstance(d, dict)]


def check_manifests(
    env: str,
    docs: list[dict[str, Any]],
    core: validate.CoreValidator,
    crds: validate.CrdSchemas,
    engine_factory: Callable[[str], Any],
    rule_names: list[str],
) -> dict[str, list[str]]:
    """Schema and policy problems of one env's objects, keyed by check name; messages name env and object."""
    core_docs = [d for d in docs if core.is_core(d)]
    cr_docs = [d for d in docs if not core.is_core(d)]
    out: dict[str, list[str]] = {
        f"kubernetes schema {env}": [f"{env}: {f}" for d in core_docs for f in core.validate(d)],
        f"crd schema {env}": [f"{env}: {f}" for d in cr_docs for f in crds.validate(d)],
    }
    engine = engine_factory(env)
    by_rule = policy.evaluate_by_rule(engine, {"kind": "List", "items": docs}, rule_names)
    out[f"policy {env}"] = [f"{env}: policy {rule}: {m}" for rule, msgs in sorted(by_rule.items()) for m in msgs]
    return out


def extract_rules(docs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The Prometheus rule file (groups) carried by the rendered PrometheusRule objects."""
    groups = [g for d in docs if d.get("kind") == "PrometheusRule" for g in (d.get("spec") or {}).get("groups", [])]
    return {"groups": groups} if groups else None


def alert_rules(rules: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for g in rules.get("groups", []) for r in g.get("rules", []) if "alert" in r]


def check_runbooks(env: str, rules: dict[str, Any], root: Path) -> list[str]:
    """Each alert's runbook_url ends in docs/runbooks/<alert>.md and that file exists in the repo."""
    problems = []
    for rule in alert_rules(rules):
        url = str((rule.get("annotations") or {}).get("runbook_url", ""))
        name = rule["alert"]
        if not url.endswith(f"/{RUNBOOKS.as_posix()}/{name}.md"):
            problems.append(
                f"{env}: alert <{name}> runbook_url {url or '(none)'} does not point at {RUNBOOKS}/{name}.md"
            )
        elif not (root / RUNBOOKS / f"{name}.md").is_file():
            problems.append(f"{env}: alert <{name}> links {RUNBOOKS}/{name}.md, which does not exist")
    return problems


def write_alert_tests(env: str, rules: dict[str, Any], env_out: Path, tests_dir: Path) -> list[Path]:
    """Instantiate the repo's promtool test files for one env (namespace, env, summaries, runbook base)."""
    alerts = {r["alert"]: r for r in alert_rules(rules)}
    urls = {str((r.get("annotations") or {}).get("runbook_url", "")) for r in alerts.values()}
    bases = {u.rsplit("/", 1)[0] for u in urls if "/" in u}
    runbook_base = bases.pop() if len(bases) == 1 else "(inconsistent runbook base)"

    def summary(m: re.Match[str]) -> str:
        rule = alerts.get(m.group(1))
        return json.dumps(str((rule or {}).get("annotations", {}).get("summary", f"(no alert {m.group(1)})")))

    written = []
    for src in sorted(tests_dir.glob("*.test.yaml")):
        text = src.read_text()
        text = re.sub(r"\$\{SUMMARY:(\w+)\}", summary, text)
        text = (
            text.replace("${RULE_FILE}", "prometheus-rules.yaml")
            .replace("${NAMESPACE}", namespace_for(env))
            .replace("${ENV}", env)
            .replace("${RUNBOOK_BASE}", runbook_base)
        )
        dest = env_out / src.name
        dest.write_text(text)
        written.append(dest)
    return written


def _failed_promtool_tests(output: str) -> str:
    """promtool's report without the passing files: `Unit Testing: <env>/<file>` headers name the env."""
    blocks = re.split(r"(?m)^Unit Testing:\s+", output)
    failed = [b.strip() for b in blocks if "FAILED" in b]
    return "\n".join(failed)[-4000:] or _tail(output, 40)


def yamllint_problems(label: str, text: str, conf: YamlLintConfig) -> list[str]:
    return [f"{label}:{p.line}:{p.column}: [{p.level}] {p.desc} ({p.rule})" for p in linter.run(text, conf)]


# --- Argo CD objects --------------------------------------------------------------------------


def static_argocd_docs(root: Path) -> list[dict[str, Any]]:
    """The Argo CD objects in environments/argocd (files that are not objects, like values files, skipped)."""
    docs: list[dict[str, Any]] = []
    for f in sorted((root / ARGOCD_DIR).glob("*.yaml")):
        docs += [d for d in load_docs(f.read_text()) if "apiVersion" in d and "kind" in d]
    return docs


def argocd_docs(root: Path) -> list[dict[str, Any]]:
    """The Argo CD objects in environments/argocd plus the Applications their ApplicationSets generate."""
    docs = static_argocd_docs(root)
    generated: list[dict[str, Any]] = []
    for d in docs:
        if d.get("kind") == "ApplicationSet":
            generated += validate.expand_applicationset(d, root)
    return docs + generated


@dataclass(frozen=True)
class ChartApp:
    """A static Argo CD Application of a chart in this repo, as `helm template` must see it."""

    name: str
    chart: Path
    release: str
    namespace: str
    value_files: list[Path]
    values_object: dict[str, Any] | None


def chart_apps(root: Path) -> list[ChartApp]:
    """Applications in environments/argocd that deploy a chart of this repo (e.g. the rollback controller).

    Values are exactly what Argo CD passes: `helm.valueFiles` (`$values/<path>` via a `ref: values`
    source of the same repo, or paths relative to the chart) and `helm.valuesObject`.
    """
    apps: list[ChartApp] = []
    # Generated Applications (the ApplicationSet's envs) are rendered per env above.
    for doc in static_argocd_docs(root):
        if doc.get("kind") != "Application" or "metadata" not in doc:
            continue
        spec = doc.get("spec") or {}
        sources = list(spec.get("sources") or []) + ([spec["source"]] if spec.get("source") else [])
        refs = {str(s["ref"]): str(s.get("repoURL")) for s in sources if s.get("ref")}
        for src in sources:
            path = str(src.get("path") or "")
            if not path.startswith("charts/"):
                continue
            helm_cfg = src.get("helm") or {}
            files: list[Path] = []
            for vf in helm_cfg.get("valueFiles") or []:
                vf = str(vf)
                if vf.startswith("$"):
                    ref, _, rel = vf[1:].partition("/")
                    if refs.get(ref) != str(src.get("repoURL")):
                        raise ValueError(f"Application <{doc['metadata']['name']}>: {vf}: no `ref: {ref}` source")
                    files.append(root / rel)
                else:
                    files.append(root / path / vf)
            apps.append(
                ChartApp(
                    name=str(doc["metadata"]["name"]),
                    chart=root / path,
                    release=str(helm_cfg.get("releaseName") or doc["metadata"]["name"]),
                    namespace=str((spec.get("destination") or {}).get("namespace") or "default"),
                    value_files=files,
                    values_object=helm_cfg.get("valuesObject"),
                )
            )
    return apps


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
        yl_conf = YamlLintConfig(file=str(root / YAMLLINT_CONFIG))
        chart = root / CHART

        rule_names = policy.violation_rules([root / d for d in POLICY_DIRS])

        # regorus engines are bound to the thread that made them: each env compiles its own
        # (milliseconds) with its own parameters.
        def engine_for(target: str) -> Any:
            return policy.compile_engine(
                [root / d for d in POLICY_DIRS], {"params": policy.load_params(root / PARAMS, target)}
            )

        rules_by_env: dict[str, dict[str, Any]] = {}
        rendered_envs: list[str] = []
        rendered_apps: list[str] = []
        lock = threading.Lock()
        ctx.progress(f"render: {', '.join(envs)} -> {out} (CRD schemas: {crd_location})")

        def values_args(env: str) -> list[str]:
            env_dir = root / ENVIRONMENTS / env
            args = ["-f", str(env_dir / "values.yaml")]
            if (env_dir / "release.yaml").is_file():
                args += ["-f", str(env_dir / "release.yaml")]
            return args

        def lint(env: str) -> None:
            with Timer() as t:
                proc = _run([helm, "lint", "--strict", str(chart), *values_args(env)], cwd=root)
            problems = [] if proc.returncode == 0 else [f"{env}: {_tail(proc.stdout + proc.stderr)}"]
            checks.add(f"helm lint {env}", problems, t.seconds)

        def render_env(env: str) -> None:
            env_out = out / env
            env_out.mkdir(parents=True, exist_ok=True)
            with Timer() as t:
                proc = _run(
                    [
                        helm,
                        "template",
                        RELEASE_NAME,
                        str(chart),
                        "--namespace",
                        namespace_for(env),
                        "--kube-version",
                        opts.kube_version,
                        *values_args(env),
                    ],
                    cwd=root,
                )
            if proc.returncode != 0:
                checks.add(f"helm template {env}", [f"{env}: {_tail(proc.stderr or proc.stdout)}"], t.seconds)
                return
            manifest = env_out / "manifests.yaml"
            manifest.write_text(proc.stdout)
            docs = load_docs(proc.stdout)
            checks.add(f"helm template {env}", [], t.seconds, ok_detail=f"{len(docs)} objects", objects=len(docs))
            with Timer() as t:
                results = check_manifests(env, docs, core, crds, engine_for, rule_names)
            for name, problems in results.items():
                checks.add(name, problems, t.seconds)
            with Timer() as t:
                yl = yamllint_problems(f"{env}/manifests.yaml", proc.stdout, yl_conf)
            checks.add(f"yamllint {env}", [f"{env}: {p}" for p in yl], t.seconds)
            rules = extract_rules(docs)
            if rules is None:
                checks.add(f"alert rules {env}", [f"{env}: no PrometheusRule rendered"], 0.0)
                return
            (env_out / "prometheus-rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False, width=1000))
            write_alert_tests(env, rules, env_out, root / ALERT_TESTS)
            checks.add(f"runbooks {env}", check_runbooks(env, rules, root), 0.0)
            with lock:
                rules_by_env[env] = rules
                rendered_envs.append(env)

        def argocd() -> None:
            with Timer() as t:
                try:
                    docs = argocd_docs(root)
                except (yaml.YAMLError, ValueError, KeyError) as exc:
                    checks.add("argocd", [f"argocd: {exc}"], 0.0)
                    return
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

        def render_app(app: ChartApp) -> None:
            """A chart an Application deploys, with exactly that Application's values: lint, render, schemas."""
            label = app.name
            app_out = out / label
            app_out.mkdir(parents=True, exist_ok=True)
            missing = [str(f.relative_to(root)) for f in app.value_files if not f.is_file()]
            if missing:
                checks.add(f"helm template {label}", [f"{label}: value file(s) {', '.join(missing)} missing"], 0.0)
                return
            args = [a for f in app.value_files for a in ("-f", str(f))]
            if app.values_object:
                inline = app_out / "values-object.yaml"
                inline.write_text(yaml.safe_dump(app.values_object, sort_keys=False))
                args += ["-f", str(inline)]
            with Timer() as t:
                proc = _run([helm, "lint", "--strict", str(app.chart), "--namespace", app.namespace, *args], cwd=root)
            checks.add(
                f"helm lint {label}",
                [] if proc.returncode == 0 else [f"{label}: {_tail(proc.stdout + proc.stderr)}"],
                t.seconds,
            )
            with Timer() as t:
                proc = _run(
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
                checks.add(f"helm template {label}", [f"{label}: {_tail(proc.stderr or proc.stdout)}"], t.seconds)
                return
            (app_out / "manifests.yaml").write_text(proc.stdout)
            docs = load_docs(proc.stdout)
            checks.add(f"helm template {label}", [], t.seconds, ok_detail=f"{len(docs)} objects", objects=len(docs))
            with Timer() as t:
                core_docs = [d for d in docs if core.is_core(d)]
                cr_docs = [d for d in docs if not core.is_core(d)]
                core_problems = [f"{label}: {f}" for d in core_docs for f in core.validate(d)]
                cr_problems = [f"{label}: {f}" for d in cr_docs for f in crds.validate(d)]
            checks.add(f"kubernetes schema {label}", core_problems, t.seconds, objects=len(core_docs))
            checks.add(f"crd schema {label}", cr_problems, t.seconds, objects=len(cr_docs))
            with lock:
                rendered_apps.append(label)

        def policy_tests() -> None:
            with Timer() as t:
                missing = policy.missing_tests(root / POLICY_ROOT)
                outcomes = policy.run_tests(root / POLICY_ROOT)
            checks.add("policy tests present", missing, t.seconds)
            failed = [f"{o.name} {o.detail}".strip() for o in outcomes if not o.passed]
            checks.add(
                "policy unit tests",
                failed,
                t.seconds,
                ok_detail=f"{len(outcomes)} Rego tests passed",
                tests=len(outcomes),
            )

        def trivy_scan(env_list: list[str]) -> None:
            with Timer() as t:
                argv = [
                    trivy,
                    "config",
                    "--quiet",
                    "--skip-check-update",
                    "--misconfig-scanners",
                    "kubernetes",
                    "--severity",
                    ",".join(opts.trivy_severities),
                    "--format",
                    "json",
                ]
                if (root / TRIVY_IGNORE).is_file():
                    argv += ["--ignorefile", str(root / TRIVY_IGNORE)]
                # Scan only the env manifests (Argo CD objects are not workloads).
                proc = _run([*argv, str(out)], cwd=root)
            if proc.returncode != 0:
                checks.add("trivy config", [f"trivy failed: {_tail(proc.stderr)}"], t.seconds)
                return
            report = json.loads(proc.stdout or "{}")
            problems = []
            for res in report.get("Results") or []:
                target = str(res.get("Target", ""))
                env = target.split("/", 1)[0]
                if env not in env_list:
                    continue
                for m in res.get("Misconfigurations") or []:
                    if m.get("Status", "FAIL") == "FAIL":
                        problems.append(
                            f"{env}: {m.get('ID')} {m.get('Severity')} {m.get('Title')}: {m.get('Message')}"
                        )
            checks.add("trivy config", problems, t.seconds, findings=len(problems))

        def promtool_rules(env_list: list[str]) -> None:
            files = [str(out / e / "prometheus-rules.yaml") for e in env_list]
            with Timer() as t:
                proc = _run([promtool, "check", "rules", *files], cwd=out)
            checks.add(
                "promtool check rules",
                [] if proc.returncode == 0 else [_tail(proc.stdout + proc.stderr, 30)],
                t.seconds,
            )

        def promtool_tests(env_list: list[str]) -> None:
            # One process for every env: promtool resolves rule_files relative to each test file.
            tests = sorted(f"{e}/{p.name}" for e in env_list for p in (out / e).glob("*.test.yaml"))
            missing = [e for e in env_list if not any(t.startswith(f"{e}/") for t in tests)]
            if missing:
                checks.add("promtool test rules", [f"{e}: no alert tests in {ALERT_TESTS}" for e in missing], 0.0)
                return
            with Timer() as t:
                proc = _run([promtool, "test", "rules", *tests], cwd=out, merge=True)
            problems = [] if proc.returncode == 0 else [_failed_promtool_tests(proc.stdout + (proc.stderr or ""))]
            checks.add(
                "promtool test rules", problems, t.seconds, ok_detail=f"{len(tests)} test files", files=len(tests)
            )

        workers = max(4, min(8, (os.cpu_count() or 2) * 2))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="render") as pool:
            renders: list[Future[None]] = [pool.submit(render_env, e) for e in envs]
            try:
                apps = chart_apps(root)
            except (yaml.YAMLError, ValueError, KeyError) as exc:
                checks.add("argocd chart apps", [f"argocd: {exc}"], 0.0)
                apps = []
            renders += [pool.submit(render_app, a) for a in apps]
            side: list[Future[None]] = []
            if "lint" in opts.skip:
                checks.skip("helm lint", "skipped by RenderOptions.skip")
            else:
                side += [pool.submit(lint, e) for e in envs]
            side += [pool.submit(argocd), pool.submit(policy_tests)]
            for fut in renders:
                fut.result()
            done = sorted(rendered_envs)
            later: list[Future[None]] = []
            if done:
                # trivy is the slowest tool: start it the moment all manifests are on disk.
                if "trivy" in opts.skip:
                    checks.skip("trivy config", "skipped by RenderOptions.skip")
                else:
                    later.append(pool.submit(trivy_scan, done + sorted(rendered_apps)))
                if "promtool" in opts.skip:
                    checks.skip("promtool test rules", "skipped by RenderOptions.skip")
                else:
                    later.append(pool.submit(promtool_tests, done))
                later.append(pool.submit(promtool_rules, done))
            for fut in side + later:
                fut.result()

    result = StageResult.from_checks(
        NAME,
        sorted(checks.checks, key=lambda c: c.name),
        numbers={"seconds": total.seconds, "environments": float(len(envs))},
        evidence={
            "environments": envs,
            "chart_apps": sorted(rendered_apps),
            "out": str(out),
            "crd_schemas": crd_location,
            "kube_version": opts.kube_version,
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
        help="environment to render (dev, staging, prod or all; repeatable; default all)",
    )
    parser.add_argument("--out", type=Path, help="write rendered YAML here (default: <run dir>/rendered)")
    parser.add_argument(
        "--crd-schemas",
        metavar="DIR_OR_URL_TEMPLATE",
        help=f"CRD JSON schemas: a directory (<group>/<kind>_<version>.json) or a kubeconform URL template "
        f"(default: ${validate.CRD_SCHEMAS_ENV} or {validate.DEFAULT_CRD_SCHEMAS} relative to the repo)",
    )
    parser.add_argument("--kube-version", default=validate.DEFAULT_KUBE_VERSION, help="Kubernetes version to target")


def run_from_args(args: argparse.Namespace, ctx: RunContext) -> StageResult:
    envs = args.env or ["all"]
    if "all" in envs:
        envs = ["all"]
    return run(
        RenderOptions(envs=envs, out=args.out, crd_schemas=args.crd_schemas, kube_version=args.kube_version), ctx
    )
