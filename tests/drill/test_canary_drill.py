"""End to end: the canary drill per fault (real HAProxy, Locust, Prometheus, gateway + simulator processes,
a local GitOps remote in tmp_path), its result checked against the issue's targets."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from pipeline.controller.canary_drill import CanaryConfig, run_canary_drill
from pipeline.gitops.repo import GitOpsRepo
from pipeline.rollout import analysis as ra
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
@pytest.mark.parametrize("fault", ["errors", "latency", "none"])
def test_canary_drill_meets_its_targets(tmp_path: Path, fault: str) -> None:
    report = run_canary_drill(tmp_path / "drill", CanaryConfig(env="staging", fault=fault, timeout=360))
    data = json.loads(json.dumps(asdict(report)))  # what --json prints
    print(json.dumps(data))  # shown when an assertion fails
    assert data["problems"] == []
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
