"""The environments' layout: where their files live in the GitOps tree, where Argo CD deploys them."""

from __future__ import annotations

from pathlib import Path

ENVIRONMENTS = Path("environments")
ARGOCD_DIR = ENVIRONMENTS / "argocd"
# The ApplicationSet deploys env <env> into namespace llm-<env> (environments/argocd).
NAMESPACE_PREFIX = "llm-"


def namespace_for(env: str) -> str:
    """The namespace Argo CD deploys env into (ApplicationSet destination `llm-<env>`)."""
    return f"{NAMESPACE_PREFIX}{env}"
