"""Fixtures: a throwaway GitOps remote shaped like environments/, releases, ci evidence."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.context import RunContext
from pipeline.core.result import StageResult, Status
from pipeline.gitops.release import Release
from pipeline.gitops.repo import GitOpsRepo, ensure_local_remote, git
from pipeline.stages import promote

RELEASE_YAML = """\
# Release pins: written only by `python -m pipeline promote` (reverted by `rollback`).
release:
  # -- Release identifier of the pinned build.
  id: ""
  commit: ""
  chartVersion: "0.1.0"
  imagesBuilt: false
gateway:
  image:
    # -- Gateway image digest (sha256:...).
    digest: ""
vllm:
  image:
    # -- vLLM server image digest.
    digest: ""
  model:
    # -- Hugging Face model revision.
    revision: ""
"""

VALUES_YAML = """\
# Only what differs in this env.
replicaCount: 1
gateway:
  rateLimit:
    requestsPerMinute: 600  # per subject
"""

FREEZE_YAML = "# -- Freeze state written by rollback/unfreeze.\nfrozen: false\n"

REPO = Path(__file__).resolve().parents[2]
# The real ApplicationSet: its values.prodRevision is the prod pin promotions and rollbacks move.
APPSET = "environments/argocd/applicationset-llm-service.yaml"
# Who commits by hand to a test clone of the GitOps remote.
GIT_IDENT = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}


def write_envs(root: Path, appproject: str | None = None) -> Path:
    for env in ("dev", "staging", "prod"):
        d = root / "environments" / env
        d.mkdir(parents=True)
        (d / "release.yaml").write_text(RELEASE_YAML)
        (d / "values.yaml").write_text(VALUES_YAML)
        (d / "freeze.yaml").write_text(FREEZE_YAML)
    (root / "environments" / "argocd").mkdir()
    (root / APPSET).write_text((REPO / APPSET).read_text())
    if appproject:
        (root / "environments" / "argocd" / "appproject.yaml").write_text(appproject)
    return root


def clone(remote: str, tmp_path: Path, name: str = "check") -> GitOpsRepo:
    """A fresh, synced working copy of the GitOps remote at `tmp_path/name`."""
    repo = GitOpsRepo(remote, tmp_path / name)
    repo.sync()
    return repo


def commit_by_hand(repo: GitOpsRepo, message: str, *, push: bool = True) -> None:
    """Commit every tracked change in `repo` as GIT_IDENT (someone editing the branch by hand), then push."""
    git("commit", "-qam", message, cwd=repo.path, env=GIT_IDENT)
    if push:
        git("push", "-q", "origin", "HEAD:main", cwd=repo.path)


def prod_local_options(remote: str, **kw: Any) -> promote.PromoteOptions:
    """A prod promotion with two approvals under the local profile, unbuilt images allowed by `rm`."""
    kw.setdefault("approvers", ["alice", "bob"])
    kw.setdefault("actor", "rm")
    return promote.PromoteOptions(
        to="prod", gitops_repo=remote, policy_profile="local", allow_unbuilt_images=True, **kw
    )


@pytest.fixture
def source_tree(tmp_path: Path) -> Path:
    return write_envs(tmp_path / "src")


@pytest.fixture
def remote(tmp_path: Path, source_tree: Path) -> str:
    return str(ensure_local_remote(tmp_path / "remote" / "gitops.git", source_tree))


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    return RunContext(run_dir=tmp_path / "run")


def _digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


@pytest.fixture
def make_release() -> Callable[..., Release]:
    def make(n: int = 1, *, images_built: bool = True) -> Release:
        return Release(
            id=f"0.{n}.0+g{n:07d}",
            commit=f"{n:040d}",
            chart_version="0.1.0",
            gateway_digest=_digest(f"gw{n}"),
            vllm_digest=_digest(f"vllm{n}"),
            model_revision=f"rev{n}",
            images_built=images_built,
        )

    return make


def subject_of(rel: Release, kind: str = "release") -> dict[str, object]:
    """What a gate that really exercised `rel` records (digests for images, id + commit always)."""
    return {
        "kind": kind,
        "release_id": rel.id,
        "commit": rel.commit,
        "gateway_digest": rel.gateway_digest,
        "vllm_digest": rel.vllm_digest,
        "model_revision": rel.model_revision,
    }


def ci_evidence(
    failed: str | None = None, rel: Release | None = None, *, staging_slo: bool = True
) -> dict[str, StageResult]:
    """Gates of a ci run that exercised `rel` (default: make_release(1)), loadtest on dev.

    `staging_slo` adds the staging SLO gate a prod promotion needs (in real life attached later
    by `loadtest --env staging --attach`; tests of that path attach it for real).
    """
    rel = rel or Release(
        id="0.1.0+g0000001",
        commit=f"{1:040d}",
        chart_version="0.1.0",
        gateway_digest=_digest("gw1"),
        vllm_digest=_digest("vllm1"),
        model_revision="rev1",
    )
    out = {
        name: StageResult(
            stage=name,
            status=Status.FAILED if name == failed else Status.PASSED,
            summary=f"{name} ok",
            evidence={"subject": subject_of(rel), **({"env": "dev"} if name == "loadtest" else {})},
        )
        for name in ("test", "scan", "smoke", "loadtest")
    }
    if staging_slo:
        out["loadtest@staging"] = StageResult(
            stage="loadtest",
            status=Status.PASSED,
            summary="loadtest staging ok",
            evidence={"subject": subject_of(rel), "env": "staging"},
        )
    return out
