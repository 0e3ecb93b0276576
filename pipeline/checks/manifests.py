"""Checks over rendered manifests: schemas and policies per env, alert rules and their runbooks,
promtool test files, yamllint, and the Argo CD objects (plus the charts their Applications deploy).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from pipeline.checks import canary, policy, validate
from pipeline.core.environments import ARGOCD_DIR, namespace_for
from pipeline.core.shell import tail

RUNBOOKS = Path("docs/runbooks")


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
        # Argo Rollouts objects: analysis conditions, analysis args, the canary's pod budget, autoscaler targets.
        f"rollout {env}": [f"{env}: {p}" for p in canary.problems(docs)],
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


def write_alert_tests(
    env: str, rules: dict[str, Any], env_out: Path, tests_dir: Path, namespace: str | None = None
) -> list[Path]:
    """Instantiate the repo's promtool test files for one env (namespace, env, summaries, runbook base);
    `namespace` for a chart app that is not an env (the rollback controller's destination)."""
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
            .replace("${NAMESPACE}", namespace or namespace_for(env))
            .replace("${ENV}", env)
            .replace("${RUNBOOK_BASE}", runbook_base)
        )
        dest = env_out / src.name
        dest.write_text(text)
        written.append(dest)
    return written


def failed_promtool_tests(output: str) -> str:
    """promtool's report without the passing files: `Unit Testing: <env>/<file>` headers name the env."""
    blocks = re.split(r"(?m)^Unit Testing:\s+", output)
    failed = [b.strip() for b in blocks if "FAILED" in b]
    return "\n".join(failed)[-4000:] or tail(output, 40)


def yamllint_problems(label: str, text: str, conf: YamlLintConfig) -> list[str]:
    return [f"{label}:{p.line}:{p.column}: [{p.level}] {p.desc} ({p.rule})" for p in linter.run(text, conf)]


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
