"""The one way to render an environment: `helm template` of the chart Argo CD deploys it from.

The chart an env renders from is the version its release.yaml pins (`release.chartVersion`, the
OCI chart's targetRevision): the tree's chart when the versions match, else a packaged
`llm-service-<version>.tgz`. The render stage, the rollback drill and the alert-routing tests call
`helm_template(root, env)` / `values_args(root, env)`, so they exercise exactly what render
validated (release name, namespace, kube version, values files).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.artifacts import chart as chart_artifact
from pipeline.checks import validate
from pipeline.core.environments import ENVIRONMENTS, namespace_for
from pipeline.core.result import Check, Status
from pipeline.core.shell import run_capture, tail
from pipeline.runtime.tools import require

CHART = Path("charts/llm-service")
RELEASE_NAME = "llm-service"


def values_args(root: Path, env: str) -> list[str]:
    """`-f` arguments for env: its values delta, then its release pins when promoted."""
    env_dir = root / ENVIRONMENTS / env
    args = ["-f", str(env_dir / "values.yaml")]
    if (env_dir / "release.yaml").is_file():
        args += ["-f", str(env_dir / "release.yaml")]
    return args


def helm_template_argv(
    root: Path,
    env: str,
    *,
    helm: str = "helm",
    kube_version: str = validate.DEFAULT_KUBE_VERSION,
    chart: Path | None = None,
) -> list[str]:
    """The `helm template` command render validates env with (release, namespace, kube version, values).

    `chart`: the env's pinned chart (ChartPin.chart); default the tree's charts/llm-service.
    """
    return [
        helm,
        "template",
        RELEASE_NAME,
        str(chart or root / CHART),
        "--namespace",
        namespace_for(env),
        "--kube-version",
        kube_version,
        *values_args(root, env),
    ]


class RenderError(RuntimeError):
    """helm template failed; the message carries helm's error."""


def helm_template(
    root: Path, env: str, *, kube_version: str = validate.DEFAULT_KUBE_VERSION, chart: Path | None = None
) -> str:
    """env's manifests exactly as render checks them (raises RenderError with helm's message)."""
    argv = helm_template_argv(root, env, helm=require("helm"), kube_version=kube_version, chart=chart)
    proc = run_capture(argv, cwd=root)
    if proc.returncode != 0:
        raise RenderError(f"helm template {env}: {tail(proc.stderr or proc.stdout)}")
    return proc.stdout


def helm_template_at(checkout: Path, env: str, commit: str, search_dirs: list[Path] | None = None) -> str:
    """env as a GitOps checkout at `commit` renders it: its values and release pins, and the chart those
    pins name (the checkout's charts/ when the versions match, else a packaged chart in search_dirs) —
    what Argo CD deploys at that revision."""
    pin = resolve_chart(checkout, env, search_dirs or [], [env], head=(commit, False))
    if pin.chart is None:
        raise RenderError(f"at {commit[:12]}: {pin.detail}")
    return helm_template(checkout, env, chart=pin.chart)


@dataclass(frozen=True)
class ChartPin:
    """Which chart renders an env: the one its release.yaml pins (None = cannot be rendered here)."""

    env: str
    version: str | None
    chart: Path | None
    status: Status
    detail: str

    def check(self) -> Check:
        return Check(name=f"chart-pin:{self.env}", status=self.status, detail=self.detail)


def pinned_chart_version(root: Path, env: str) -> tuple[str | None, str | None]:
    """(release.chartVersion, release.chartDigest) of env's release.yaml; (None, None) if absent."""
    path = root / ENVIRONMENTS / env / "release.yaml"
    if not path.is_file():
        return None, None
    doc = yaml.safe_load(path.read_text()) or {}
    rel = doc.get("release") if isinstance(doc, dict) else None
    if not isinstance(rel, dict):
        return None, None
    version, digest = rel.get("chartVersion"), rel.get("chartDigest")
    return (str(version) if version else None), (str(digest) if digest else None)


def resolve_chart(
    root: Path, env: str, search_dirs: list[Path], pinned_envs: list[str], head: tuple[str, bool] | None = None
) -> ChartPin:
    """The chart Argo CD renders env from, available here: the tree's (same version) or a package.

    `head`: (commit, dirty) of root (artifacts.source.git_commit), computed once by the caller.
    """
    from pipeline.artifacts.source import git_commit

    rel = ENVIRONMENTS / env / "release.yaml"
    try:
        version, digest = pinned_chart_version(root, env)
    except yaml.YAMLError as exc:
        return ChartPin(env, None, None, Status.FAILED, f"{env}: {rel} is not valid YAML: {exc}")
    if not version:
        why = f"{env}: {rel} pins no release.chartVersion; the ApplicationSet cannot generate this env's Application"
        return ChartPin(env, None, None, Status.FAILED, why)
    if not chart_artifact.SEMVER_RE.match(version):
        why = f"{env}: release.chartVersion {version!r} is not an exact SemVer version without '+' (an OCI tag)"
        return ChartPin(env, version, None, Status.FAILED, why)
    tree = chart_artifact.tree_version(root)
    if tree is not None:
        commit, dirty = head or git_commit(root)
        at_head = None if dirty else chart_artifact.build_version(tree, commit, False, release=False)
        if version in (tree, at_head):
            where = f"{CHART} in this tree" + (f" (built at HEAD {commit[:7]})" if version == at_head else "")
            return ChartPin(env, version, root / CHART, Status.PASSED, f"{env}: chart {version} = {where}")
    tgz = chart_artifact.find_packaged(search_dirs, version)
    if tgz is not None:
        actual = chart_artifact.sha256_file(tgz)
        if digest and actual != digest:
            why = f"{env}: {tgz.name} has digest {actual}, but release.chartDigest pins {digest}"
            return ChartPin(env, version, None, Status.FAILED, why)
        return ChartPin(env, version, tgz, Status.PASSED, f"{env}: chart {version} from {tgz} ({actual})")
    looked = ", ".join(str(d) for d in search_dirs) or "(no --charts-dir)"
    why = (
        f"{env}: {rel} pins chart {chart_artifact.CHART_NAME} {version}, but this tree has {tree or 'no chart'} "
        f"and no {chart_artifact.CHART_NAME}-{version}.tgz is in {looked}; env not rendered. Get it with "
        f"`helm pull oci://<chart repo>/{chart_artifact.CHART_NAME} --version {version}` and pass --charts-dir"
    )
    return ChartPin(env, version, None, Status.FAILED if env in pinned_envs else Status.SKIPPED, why)


def discover_envs(root: Path) -> list[str]:
    """Environment directories: environments/<env>/ holding a values.yaml (argocd/ has none)."""
    return sorted(p.parent.name for p in (root / ENVIRONMENTS).glob("*/values.yaml"))
