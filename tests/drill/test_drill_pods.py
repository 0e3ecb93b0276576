"""The drill on pods: the sync agent renders the env at each GitOps revision and replaces the pod.

Unit tests inject the renderer and `kube play` (no engine); the slow test builds the gateway and
simulator images from this tree and runs the whole drill with real pods, Prometheus and controller.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipeline.artifacts import chart_render
from pipeline.artifacts.release_pod import PodImages
from pipeline.controller.drill_pods import DrillImages, Play, PodDeployment, check_plays, find_images
from pipeline.controller.drill_traffic import longest_gap
from pipeline.controller.rollback_drill import DrillConfig, _drill_release, _promote, run_drill
from pipeline.gitops import promotion as pm
from pipeline.gitops.repo import GitOpsRepo, ensure_local_remote
from pipeline.gitops.sync_agent import Revision, SyncAgent
from pipeline.runtime import engine as engines
from pipeline.runtime.tools import find

REPO = Path(__file__).resolve().parents[2]
GW, VLLM = "sha256:" + "a" * 64, "sha256:" + "b" * 64
IMAGES = DrillImages(
    PodImages("127.0.0.1:5999/llm/gateway@" + GW, "127.0.0.1:5999/llm/simulator:0.1.0-gabc", "simulator", False),
    GW,
    VLLM,
    "abc" + "0" * 37,
    "test images",
    registry="127.0.0.1:5999",
    gateway_repository="127.0.0.1:5999/llm/gateway",
    vllm_repository="127.0.0.1:5999/llm/vllm-cpu",
)
PODMAN = engines.Engine("podman", "/nonexistent/podman")


class FakePlay:
    """Stands in for pods.play: records what would be played (spec, fresh?)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, engine: engines.Engine, pod: Any, work_dir: Path, **kw: Any) -> float:
        self.calls.append({"yaml": pod.yaml(), "name": pod.pod_name, "fresh": kw["fresh"], "tls": kw["tls_verify"]})
        return 0.1


def _remote_with(tmp_path: Path, *releases: tuple[int, bool]) -> tuple[str, list[str]]:
    remote = str(ensure_local_remote(tmp_path / "gitops.git", REPO))
    heads = []
    for n, bad in releases:
        _promote(remote, _drill_release(n, bad, IMAGES), "staging", tmp_path / f"promote-{n}-{len(heads)}", "t")
        heads.append(GitOpsRepo(remote, tmp_path / f"head-{len(heads)}").sync())
    return remote, heads


def test_each_revision_is_rendered_from_the_checkout_and_replaced_bad_build_in_the_pod(tmp_path: Path) -> None:
    remote, _ = _remote_with(tmp_path, (1, False))
    play = FakePlay()
    rendered: list[tuple[Path, str]] = []

    def render(checkout: Path, env: str, commit: str) -> str:
        rendered.append((checkout, commit))
        return chart_render.helm_template_at(checkout, env, commit)

    v2 = _drill_release(2, True, IMAGES)
    deploy = PodDeployment(
        PODMAN, IMAGES, "staging", tmp_path / "pods", faults={v2.id: ["--error-rate", "0.5"]}, render=render, play=play
    )
    agent = SyncAgent(remote, "staging", tmp_path / "agent", deploy, interval=60)
    agent.sync_once()  # v1
    _promote(remote, v2, "staging", tmp_path / "promote-2", "t")
    agent.sync_once()  # v2
    git = ["git", "-C", str(agent.work_dir), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "revert", "--no-edit", "HEAD"], check=True, capture_output=True)
    subprocess.run([*git, "push", "-q", "origin", "HEAD:main"], check=True)
    agent.sync_once()  # v1 again, from the revert

    assert [p.release for p in deploy.plays] == ["0.1.0+drill", "0.2.0+drill-bad", "0.1.0+drill"]
    # The drill's releases pin where the source release's images live; the env renders them from there.
    checkout = GitOpsRepo(remote, tmp_path / "read")
    checkout.sync()
    pinned = pm.read_release(checkout, "staging")
    assert pinned is not None and pinned.registry == "127.0.0.1:5999"
    assert (pinned.gateway_repository, pinned.vllm_repository) == (IMAGES.gateway_repository, IMAGES.vllm_repository)
    assert any(f"127.0.0.1:5999/llm/vllm-cpu@{VLLM}" in s for s in deploy.plays[0].substitutions)
    # Rendered from the agent's checkout at each commit it saw (not the working tree's environments/).
    assert [c for c, _ in rendered] == [agent.work_dir] * 3
    assert [c for _, c in rendered] == [e.commit for e in agent.events]
    first, bad, again = play.calls
    assert [c["fresh"] for c in play.calls] == [True, False, False]  # then `--replace` of the running pod
    assert {c["name"] for c in play.calls} == {"llm-drill-staging-pod-0"} and not first["tls"]
    # The release's pins and id are in the pod; the bad build is what its pod carries.
    assert "0.1.0+drill" in first["yaml"] and "0.2.0+drill-bad" in bad["yaml"]
    assert IMAGES.pod.gateway in first["yaml"] and "--error-rate" in bad["yaml"] and "--error-rate" not in first["yaml"]
    assert again["yaml"] == first["yaml"]  # same ports, keys, paths: the rollback replays v1's spec exactly
    d1, d2, d3 = (p.spec_digest for p in deploy.plays)
    assert d1 == d3 != d2
    assert any("drill's bad build" in s for s in deploy.plays[1].substitutions)
    assert not any("bad build" in s for s in deploy.plays[0].substitutions)


def test_close_removes_the_pod_and_its_secrets_by_name(tmp_path: Path) -> None:
    remote, heads = _remote_with(tmp_path, (1, False))
    calls: list[list[str]] = []

    class Recorder(engines.Engine):
        def run(self, args: Any, **_kw: Any) -> subprocess.CompletedProcess[str]:
            calls.append(list(args))
            return subprocess.CompletedProcess(args, 0, "", "")

    eng = Recorder("podman", "podman")
    deploy = PodDeployment(eng, IMAGES, "staging", tmp_path / "pods", faults={}, play=FakePlay())
    checkout = GitOpsRepo(remote, tmp_path / "co")
    checkout.sync()
    deploy(_drill_release(1, False, IMAGES), Revision(heads[0], checkout.path))
    deploy.close()
    assert ["pod", "rm", "-f", "-t", "5", "llm-drill-staging-pod-0"] in calls
    # Its own Secrets (named after the drill's pod), never those of a smoke or load-test pod.
    secrets = {c[2] for c in calls if c[:2] == ["secret", "rm"]}
    assert secrets == {"llm-drill-staging-hf-token", "llm-drill-staging-llm-service-gateway"}
    deploy(_drill_release(1, False, IMAGES), Revision(heads[0], checkout.path))  # after close: never plays again
    assert len(deploy.plays) == 1


def test_check_plays_wants_v1_then_another_spec_then_v1s_spec_again() -> None:
    answers = [(t / 10, "200") for t in range(0, 100)] + [(10.0, "transport"), (12.0, "200")]
    answers.sort()
    plays = [Play("v1", "c1", "d1", 0.0, 1.0), Play("v2", "c2", "d2", 3.0, 3.5), Play("v1", "c3", "d1", 9.5, 11.0)]
    records, problems, timings = check_plays(plays, answers, "v1", "v2")
    assert problems == [] and "traffic_gap_s" not in records[0]
    assert timings["traffic_gap_good_again"] == pytest.approx(12.0 - 9.9) and records[2]["traffic_in_gap"] == {
        "transport": 1
    }
    assert timings["pod_replace_bad"] == pytest.approx(0.5)
    plays[2].spec_digest = "d3"
    assert check_plays(plays, answers, "v1", "v2")[1] == ["the rollback played d3, not v1's d1"]
    assert check_plays(plays[:2], answers, "v1", "v2")[1] == ["pods played: ['v1', 'v2'], expected ['v1', 'v2', 'v1']"]
    assert longest_gap([], 0, 1) == (0.0, {})


def test_find_images_says_why_the_drill_runs_processes(tmp_path: Path) -> None:
    remote, _ = _remote_with(tmp_path, (1, False))
    assert find_images(remote, "dev", tmp_path / "a", None, "no podman (test)", None) == (
        None,
        "no engine here plays pods (no podman (test))",
    )
    seeded = str(ensure_local_remote(tmp_path / "empty.git", REPO))
    assert "runs no release with built images" in find_images(seeded, "dev", tmp_path / "b", PODMAN, "", None)[1]
    images, why = find_images(remote, "dev", tmp_path / "c", PODMAN, "", None)
    assert images is None and "registry" in why and "not serving" in why
    images, why = find_images(remote, "dev", tmp_path / "d", PODMAN, "", ("127.0.0.1:5999", True))
    assert why == "" and images is not None
    assert images.pod.gateway == f"127.0.0.1:5999/llm/gateway@{GW}" and images.gateway_digest == GW
    assert images.pod.vllm == "127.0.0.1:5999/llm/simulator:0.1.0-gabc000000000" and not images.pod.tls_verify


# --- the whole drill on real pods -------------------------------------------------------------


# `built` (the images of this tree): tests/drill/conftest.py, shared with the canary drill on pods.


@pytest.mark.slow
def test_drill_on_pods_replays_v1s_pod_after_the_revert(
    built: tuple[engines.Engine, DrillImages], tmp_path: Path
) -> None:
    missing = [t for t in ("prometheus", "prometheus-alertmanager", "promtool", "helm") if find(t) is None]
    if missing:
        pytest.fail(f"missing tools {missing}: run `make tools`")
    engine, images = built
    report = run_drill(tmp_path, DrillConfig(timeout=180, images=images, engine=engine))
    try:
        assert report.ok, report.problems
        assert report.deploy == "pods" and not any("processes instead" in s for s in report.substitutions)
        v1, v2, again = report.plays
        assert (v1["release"], v2["release"], again["release"]) == ("0.1.0+drill", "0.2.0+drill-bad", "0.1.0+drill")
        assert v2["spec_digest"] != v1["spec_digest"] and again["spec_digest"] == v1["spec_digest"]
        assert report.git["alert"] == "LLMErrorBudgetBurnFast" and report.git["pinned"] == "0.1.0+drill"
        assert report.marks["firing"] > report.marks["breach"] and report.timings["breach_to_revert"] <= 30
        assert report.marks["errors_stopped"] <= report.marks["recovered"] + 1.0
        # v2's pod failed requests (the simulator's 500 → the gateway's 502), v1's pod served them.
        assert report.traffic.get("200", 0) > 0 and report.traffic.get("502", 0) > 0
        print({k: round(v, 2) for k, v in report.timings.items()})
    finally:
        ps = engine.run(["pod", "ps", "--format", "{{.Name}}", "--filter", "name=llm-drill"]).stdout.split()
        assert ps == [], f"drill pods left behind: {ps}"
