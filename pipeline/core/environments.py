"""The environments' layout: where their files live in the GitOps tree, where Argo CD deploys them.

Names, namespaces and clusters come from platform.yaml (pipeline/core/platform.py)."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.platform import repo_platform

ENVIRONMENTS = Path("environments")
ARGOCD_DIR = ENVIRONMENTS / "argocd"


def env_names() -> tuple[str, ...]:
    """The environments in promotion order (platform.yaml `environments`)."""
    return repo_platform().env_names


def namespace_for(env: str) -> str:
    """The namespace Argo CD deploys env into (platform.yaml `environments[].namespace`)."""
    return repo_platform().env(env).namespace
