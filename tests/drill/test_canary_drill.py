"""End to end: the canary drill per fault (real HAProxy, Locust, Prometheus, a local GitOps remote in
tmp_path), its result checked against the issue's targets. The errors canary runs on the chart's pods
(podman kube play of images built from this tree, the pod count sampled from podman); the latency and good
canaries on gateway + simulator processes (the fallback where no engine plays pods), which keeps the slow
suite at three drills of ≈1 minute each."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from pipeline.controller.canary_drill import CanaryConfig, run_canary_drill
from pipeline.controller.canary_podman import POD_PREFIX, live_pods
from pipeline.controller.drill_pods import DrillImages
from pipeline.gitops.repo import GitOpsRepo
from pipeline.rollout import analysis as ra
from pipeline.runtime import engine as engines
from pipeline.runtime import tools

REPO = Path(__file__).resolve().parents[2]
MISSING = [t for t in ("haproxy", "prometheus", "prometheus-alertmanager", "promtool") if tools.find(t) is None]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason=f"not installed: {MISSING}"),
]

# The metric that must end each faulty canary's analysis (the template's error and TTFT ratios).
FAILS_ON = {"errors": "error-ratio", "latency": "ttft-p95-ratio"}


def first_weight(env: str) -> int:
    steps = ra.merged_values(REPO, env)["rollout"]["steps"]
    return int(next(s["setWeight"] for s in steps if "setWeight" in s))


@pytest.mark.timeout(480)
@pytest.mark.parametrize(("fault", "deploy"), [("errors", "pods"), ("latency", "processes"), ("none", "processes")])
def test_canary_drill_meets_its_targets(
    tmp_path: Path, fault: str, deploy: str, request: pytest.FixtureRequest
) -> None:
    cfg = CanaryConfig(env="staging", fault=fault, timeout=360)
    engine: engines.Engine | None = None
    if deploy == "pods":
        engine, images = request.getfixturevalue("built")  # tests/drill/conftest.py
        assert isinstance(images, DrillImages)
        cfg.engine, cfg.images = engine, images.pod
    try:
        report = run_canary_drill(tmp_path / "drill", cfg)
    finally:
        if engine is not None:  # the pods are gone however the drill ended (podman's own list)
            left = live_pods(engine, f"{POD_PREFIX}-staging")
            assert left == [], f"canary drill pods left behind: {left}"
    data = json.loads(json.dumps(asdict(report)))  # what --json prints
    print(json.dumps(data))  # shown when an assertion fails
    assert data["problems"] == []
    assert data["deploy"] == deploy and any(
        s.startswith(f"model pods: {'the env' if engine else 'processes'}") for s in data["substitutions"]
    )
    # Sampled from the engine (podman pod ps) on pods, from the processes' PIDs otherwise.
    assert ("podman pod ps" in data["max_model_pods_source"]) == (deploy == "pods")
    assert 1 <= data["max_model_pods"] <= data["replicas"]
    assert data["total_requests"] > 0 and data["canary_requests"] > 0
    if fault == "none":
        assert data["verdict"] == "promoted"
        assert data["failed_requests"] == 0 and data["broken_streams"] == 0
        assert data["abort_seconds"] is None and data["failing"] is None
    else:
        assert data["verdict"] == "aborted"
        assert data["failing"]["metric"] == FAILS_ON[fault] and data["failing"]["phase"] == "Failed"
        assert data["abort_seconds"] is not None and data["abort_seconds"] <= 60
        # The target: at most 5 % of all requests reached the bad canary (and never more than its
        # first step's share, the weight the analysis judged it at).
        assert 0 < data["exposed_fraction"] <= min(0.05, first_weight("staging") / 100)
    # The verdict is a commit in the (private) GitOps remote.
    ev = data["evidence"]
    check = GitOpsRepo(ev["remote"], tmp_path / "check")
    check.sync()
    committed = json.loads(check.file(ev["path"]).read_text())
    assert committed["verdict"] == data["verdict"] and committed["fault"] == fault
    head = check.log(ev["path"], limit=1)[0]
    assert head.sha == ev["sha"] and head.trailer("Canary-Verdict") == data["verdict"]
