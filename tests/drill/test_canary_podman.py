"""The canary drill's model pods as the chart's pods (pipeline/controller/canary_podman.py).

The env is rendered for real (`helm template`, the chart's `release.id` per release); `kube play` and the
engine's other calls are injected (a recorder that keeps the pods "played" by name, answering `pod ps` with
its name filter as a regular expression, as podman 4.3 does). The slow drill on real pods is in
test_canary_drill.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jwt
import pytest

from pipeline.artifacts.release_pod import GATEWAY, VLLM, PodImages
from pipeline.controller.canary_podman import ChartPods, live_pods
from pipeline.runtime import engine as engines
from pipeline.runtime.pod import LocalPod, PodFailed

IMAGES = PodImages(
    "127.0.0.1:5999/llm/gateway@sha256:" + "a" * 64, "127.0.0.1:5999/llm/simulator:t", "simulator", False
)
STABLE, CANARY = "0.1.0+stable", "0.2.0+canary"


class FakePodman(engines.Engine):
    """Records every call; `pod ps --filter name=RE` lists the pods played and not removed whose name matches."""

    def __init__(self, others: tuple[str, ...] = (), fail_ps: bool = False) -> None:
        super().__init__("podman", "podman")
        self.calls: list[list[str]] = []
        self.running: set[str] = set(others)
        self.fail_ps = fail_ps

    def run(self, args: Any, **_kw: Any) -> subprocess.CompletedProcess[str]:
        argv = [str(a) for a in args]
        self.calls.append(argv)
        if argv[:2] == ["pod", "ps"]:
            if self.fail_ps:
                return subprocess.CompletedProcess(argv, 125, "", "Error: database is locked")
            pattern = argv[argv.index("--filter") + 1].removeprefix("name=")
            names = sorted(n for n in self.running if re.search(pattern, n))
            return subprocess.CompletedProcess(argv, 0, "".join(f"{n}\n" for n in names), "")
        if argv[:3] == ["pod", "rm", "-f"]:
            self.running.discard(argv[-1])
        return subprocess.CompletedProcess(argv, 0, "", "")


class FakePlay:
    """Stands in for pods.play: the pod "runs" once played (what the engine then lists)."""

    def __init__(self, engine: FakePodman) -> None:
        self.engine = engine
        self.played: list[LocalPod] = []

    def __call__(self, engine: engines.Engine, pod: LocalPod, work_dir: Path, **kw: Any) -> float:
        assert kw["fresh"] and kw["tls_verify"] is False
        self.played.append(pod)
        self.engine.running.add(pod.pod_name)
        return 0.1


def _container(pod: LocalPod, name: str) -> dict[str, Any]:
    return next(c for c in pod.deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def test_each_replica_is_the_charts_pod_with_its_release_and_flags_under_its_own_name(tmp_path: Path) -> None:
    engine = FakePodman()
    play = FakePlay(engine)
    pods = ChartPods(engine, IMAGES, "staging", tmp_path, "drill-staging", play=play)
    stable = pods.start("stable-0", STABLE, ["--ttft-ms", "40"])
    canary = pods.start("canary-0", CANARY, ["--ttft-ms", "40", "--error-rate", "0.05"])
    a, b = play.played
    assert (a.pod_name, b.pod_name) == ("llm-canary-staging-stable-0-pod-0", "llm-canary-staging-canary-0-pod-0")
    # The chart's own release.id reaches the gateway (the `release` label the analysis selects on).
    for pod, release in ((a, STABLE), (b, CANARY)):
        env = {e["name"]: e.get("value") for e in _container(pod, GATEWAY).get("env", [])}
        assert env["GATEWAY_RELEASE"] == release
        gateway_cm = next(cm for cm in pod.config_maps if "GATEWAY_RELEASE" in (cm.get("data") or {}))
        assert gateway_cm["data"]["GATEWAY_RELEASE"] == release
    # The fault flags go to the simulator standing in for vLLM, only in the canary's pod.
    assert "--error-rate" in _container(b, VLLM)["args"] and "--error-rate" not in _container(a, VLLM)["args"]
    assert _container(a, VLLM)["image"] == IMAGES.vllm and _container(a, GATEWAY)["image"] == IMAGES.gateway
    # One set of dev keys: both pods mount the same JWKS directory; ports differ.
    mounts = [
        next(v for v in p.deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "gateway-jwks")
        for p in (a, b)
    ]
    assert mounts[0] == mounts[1] and stable.gateway_port != canary.gateway_port
    # A token for one pod is a token for the other (same keys, the env's issuer and audience).
    token = pods.mint(60)
    gateway_cm = next(cm for cm in b.config_maps if "GATEWAY_JWT_ISSUER" in (cm.get("data") or {}))["data"]
    key_set = jwt.PyJWKSet.from_json((tmp_path / "keys" / "jwks" / "jwks.json").read_text())
    claims = jwt.decode(
        token, key_set[pods.keys.kid].key, algorithms=[pods.keys.alg],
        issuer=gateway_cm["GATEWAY_JWT_ISSUER"], audience=gateway_cm["GATEWAY_JWT_AUDIENCE"],
    )  # fmt: skip
    assert claims["sub"] == "drill"
    # Prometheus' file_sd: each pod's gateway (internal port) and simulator, labelled with namespace and pod.
    groups = json.loads(pods.sd_file.read_text())
    assert {(g["labels"]["pod"], g["targets"][0]) for g in groups} == {
        (p.name, t) for p in (stable, canary) for t in p.targets
    }
    assert {g["labels"]["namespace"] for g in groups} == {"drill-staging"}
    assert any("release 0.2.0+canary" in s and "--error-rate" in s for s in b.substitutions)


def test_live_is_what_the_engine_lists_under_the_drills_prefix_and_stop_removes_by_name(tmp_path: Path) -> None:
    # Pods of other runs: the rollback drill's, another env's canary drill, an eval pod.
    others = ("llm-drill-staging-pod-0", "llm-canary-prod-stable-0-pod-0", "llm-eval-candidate-pod-0")
    engine = FakePodman(others)
    pods = ChartPods(engine, IMAGES, "staging", tmp_path, "drill-staging", play=FakePlay(engine))
    assert pods.live() == 0
    pods.start("stable-0", STABLE, [])
    pods.start("stable-1", STABLE, [])
    assert pods.live() == 2
    pods.stop("stable-1")
    assert ["pod", "rm", "-f", "-t", "5", "llm-canary-staging-stable-1-pod-0"] in engine.calls
    secrets = {c[2] for c in engine.calls if c[:2] == ["secret", "rm"]}
    assert secrets and all(s.startswith("llm-canary-staging-stable-1-") for s in secrets)
    assert pods.live() == 1 and [g["labels"]["pod"] for g in json.loads(pods.sd_file.read_text())] == ["stable-0"] * 2
    pods.close()
    assert pods.live() == 0 and live_pods(engine, "llm-canary-staging") == []
    assert engine.running == set(others)  # nothing of another run touched


def test_a_failing_engine_is_an_error_not_zero_pods_and_docker_cannot_play(tmp_path: Path) -> None:
    pods = ChartPods(FakePodman(fail_ps=True), IMAGES, "staging", tmp_path / "a", "ns", play=lambda *a, **k: 0.1)
    with pytest.raises(RuntimeError, match="database is locked"):
        pods.live()
    with pytest.raises(PodFailed, match="cannot play pods"):
        ChartPods(engines.Engine("docker", "docker"), IMAGES, "staging", tmp_path / "b", "ns")
