"""`loadtest --env E --attach` runs the pod of the release E runs when its images were built and pushed,
so the gate it attaches names the gateway digest the next promotion checks; otherwise it says why not."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.context import RunContext
from pipeline.gitops.release import Release
from pipeline.gitops.repo import ensure_local_remote
from pipeline.runtime import engine, registry
from pipeline.stages import loadtest, promote
from tests.promotion.conftest import ci_evidence

REPO = Path(__file__).resolve().parents[2]
GW = "sha256:" + "a" * 64


def staging_runs(tmp_path: Path, *, images_built: bool) -> str:
    remote = str(ensure_local_remote(tmp_path / "gitops.git", REPO))
    rel = Release(
        id="0.1.0+gabcdef1",
        commit="abcdef1" + "0" * 33,
        chart_version="0.1.0",
        gateway_digest=GW,
        vllm_digest="sha256:" + "b" * 64,
        model_revision="rev",
        images_built=images_built,
    )
    ctx = RunContext(run_dir=tmp_path / "seed")
    dev = promote.PromoteOptions(to="dev", release=rel, evidence=ci_evidence(rel=rel), run_id="r", gitops_repo=remote)
    assert promote.run(dev, ctx).ok
    assert promote.run(promote.PromoteOptions(to="staging", gitops_repo=remote, policy_profile="local"), ctx).ok
    return remote


def test_attach_runs_the_env_releases_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote = staging_runs(tmp_path, images_built=True)
    monkeypatch.setattr(engine, "current", lambda: engine.EngineStatus(engine.Engine("podman"), "test podman"))
    monkeypatch.setattr(registry, "status", lambda: registry.Registry("127.0.0.1:5999", local=True))
    opts = loadtest.LoadtestOptions(env="staging", attach=True, gitops_repo=remote)
    pod, why = loadtest.env_release_pod(opts, RunContext(run_dir=tmp_path / "run"))
    assert why is None and pod is not None
    assert pod.gateway == f"127.0.0.1:5999/llm/gateway@{GW}"
    assert pod.vllm == "127.0.0.1:5999/llm/simulator:0.1.0-gabcdef100000" and pod.vllm_kind == "simulator"
    assert pod.tls_verify is False  # the embedded registry is plain HTTP on loopback


def test_attach_says_why_it_runs_the_working_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opts = loadtest.LoadtestOptions(env="staging", attach=True, gitops_repo=staging_runs(tmp_path, images_built=False))
    assert loadtest.env_release_pod(opts, RunContext(run_dir=tmp_path / "a")) == (
        None,
        "staging runs no release with built images",
    )
    opts.gitops_repo = staging_runs(tmp_path / "built", images_built=True)
    monkeypatch.setattr(engine, "current", lambda: engine.EngineStatus(None, "no podman (test)"))
    assert loadtest.env_release_pod(opts, RunContext(run_dir=tmp_path / "b")) == (
        None,
        "no engine here plays pods (no podman (test))",
    )
