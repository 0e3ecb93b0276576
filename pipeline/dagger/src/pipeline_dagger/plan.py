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
    {"registry", "registry_username", "registry_password", "commit", "extra_args", "gpu", "vllm_port"}
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
    "render": ("helm", "kubectl"),
    "loadtest": ("prometheus", "promtool"),
    "ci": ("helm", "kubectl", "prometheus", "promtool"),
}
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
    setup = [
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
