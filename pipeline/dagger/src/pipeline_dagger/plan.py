"""Pure description of what each Dagger function runs: no dagger import, testable offline.

A function's container = pinned Python base + uv + cache volumes + `uv sync --frozen`
+ the tools its verb needs, then ONE exec: `python -m pipeline <verb> <flags>`. The flags
are derived from the function's own arguments, named like the CLI's argparse dests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

WORKDIR = "/src"
RUNS = "/runs"
UV_VERSION = "0.13.9"  # the uv that wrote uv.lock
PYTHON_IMAGE = "python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b"

# Dagger function parameters that are not CLI flags (infrastructure of the Dagger side).
INFRA_PARAMS = frozenset(
    {
        *("registry", "registry_username", "registry_password", "commit", "extra_args", "gpu", "vllm_port"),
        *("gitops_ssh_key", "gitops_known_hosts"),  # secrets, mounted as files (see git_ssh_command)
    }
)
# CLI flags whose option string is not `--<dest with dashes>`.
FLAG_ALIASES: dict[tuple[str, str], str] = {
    ("scan", "images"): "--image",
    ("ci", "images"): "--image",
    ("promote", "source"): "--from",
    ("promote", "extra_evidence"): "--evidence",
}
# External tools each verb needs besides the venv (pipeline.tools names).
TOOLS: dict[str, tuple[str, ...]] = {
    "test": ("helm",),
    "build": ("helm",),  # helm package / helm push of the chart
    "render": ("helm", "kubectl", "promtool"),
    "loadtest": ("prometheus", "promtool"),
    "ci": ("helm", "kubectl", "prometheus", "promtool"),
}
# The build stage pushes the packaged chart to oci://$PIPELINE_CHART_REGISTRY, logging in with
# these (same names as pipeline/chart.py; the password is a Dagger secret variable).
CHART_REGISTRY_ENV = "PIPELINE_CHART_REGISTRY"
CHART_USERNAME_ENV = "CHART_REGISTRY_USERNAME"
CHART_PASSWORD_ENV = "CHART_REGISTRY_PASSWORD"  # noqa: S105 - the variable's name, not a secret
# Debian packages each verb needs that the slim base lacks: git for the release commit and the
# GitOps repo, an ssh client for an ssh:// or git@host: GitOps remote.
APT: dict[str, tuple[str, ...]] = {
    "test": ("git",),
    "build": ("git",),
    "loadtest": ("git", "openssh-client"),  # --attach commits evidence to the GitOps repo
    "promote": ("git", "openssh-client"),
    "rollback": ("git", "openssh-client"),
    "ci": ("git", "openssh-client"),
}
# Where a Dagger function mounts what it is given (never inside the source tree).
CRD_SCHEMAS_MOUNT = "/crd-schemas"  # --crd-schemas Directory
GITOPS_SSH_KEY = "/run/secrets/gitops-ssh-key"  # --gitops-ssh-key Secret
GITOPS_KNOWN_HOSTS = "/run/secrets/gitops-known-hosts"  # --gitops-known-hosts Secret


def git_ssh_command(known_hosts: bool) -> str:
    """GIT_SSH_COMMAND using the mounted deploy key only; with known_hosts, host keys are checked against it."""
    cmd = f"ssh -i {GITOPS_SSH_KEY} -o IdentitiesOnly=yes"
    if known_hosts:
        cmd += f" -o UserKnownHostsFile={GITOPS_KNOWN_HOSTS} -o StrictHostKeyChecking=yes"
    return cmd


CACHES: dict[str, str] = {
    "uv-cache": "/root/.cache/uv",
    "pip-cache": "/root/.cache/pip",
    "trivy-cache": "/root/.cache/trivy",  # the vulnerability DB, downloaded once per runner
    "pipeline-cache": f"{WORKDIR}/.cache",  # stage results (pipeline.cache)
}


def flag_for(verb: str, dest: str) -> str:
    return FLAG_ALIASES.get((verb, dest), "--" + dest.replace("_", "-"))


def cli_args(verb: str, params: Mapping[str, Any]) -> list[str]:
    """Function arguments → CLI flags (None/False/empty = leave the CLI default)."""
    argv: list[str] = []
    for dest, value in params.items():
        if dest in INFRA_PARAMS or dest == "self" or value is None:
            continue
        flag = flag_for(verb, dest)
        if isinstance(value, bool):
            if value:
                argv.append(flag)
        elif isinstance(value, list | tuple):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv + [str(a) for a in params.get("extra_args") or []]


@dataclass
class Plan:
    """Everything a function's container does, in order."""

    image: str
    verb: str
    caches: dict[str, str] = field(default_factory=lambda: dict(CACHES))
    env: dict[str, str] = field(default_factory=dict)
    setup: list[list[str]] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    services: dict[str, int] = field(default_factory=dict)  # alias → port


def plan(
    verb: str, params: Mapping[str, Any], *, image: str = PYTHON_IMAGE, services: Mapping[str, int] | None = None
) -> Plan:
    setup: list[list[str]] = []
    if APT.get(verb):
        apt = " ".join(APT[verb])
        setup.append(["sh", "-c", f"apt-get update -qq && apt-get install -y -qq --no-install-recommends {apt}"])
    setup += [
        ["pip", "install", "--no-cache-dir", f"uv=={UV_VERSION}"],
        ["uv", "sync", "--all-extras", "--frozen"],
    ]
    tools = TOOLS.get(verb, ())
    if tools:
        setup.append([".venv/bin/python", "-m", "pipeline.tools", "ensure", *tools])
    command = [".venv/bin/python", "-m", "pipeline", "--run-dir", f"{RUNS}/{verb}", verb, *cli_args(verb, params)]
    return Plan(
        image=image,
        verb=verb,
        env={
            "PIPELINE_EXECUTOR": "dagger",
            "UV_LINK_MODE": "copy",  # cache volume and venv are different mounts
            "UV_PROJECT_ENVIRONMENT": f"{WORKDIR}/.venv",
            "PYTHONUNBUFFERED": "1",
        },
        setup=setup,
        command=command,
        services=dict(services or {}),
    )
