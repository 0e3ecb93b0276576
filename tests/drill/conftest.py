"""Fixtures the drill tests share: the gateway and simulator images of this tree, built once per session."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline.artifacts.release_pod import PodImages
from pipeline.controller.drill_pods import DrillImages
from pipeline.runtime import engine as engines

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[engines.Engine, DrillImages]:
    """The gateway and simulator images of this tree, built with podman (warm layers: seconds), played by local ref."""
    from pipeline.artifacts import images

    st = engines.detect()
    if st.engine is None or not st.engine.can_play_pods:
        pytest.fail(f"the pod drill needs podman (`make test` installs it): {st.reason}")
    out = tmp_path_factory.mktemp("drill-images")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    made = images.build_all(
        st.engine, REPO, ("gateway", "simulator"), None, "drill-test", {}, out, engines.project_cache() / "wheelhouse"
    )
    failed = [c.detail for c in made.checks if c.status.value == "failed"]
    assert not failed and {"gateway", "simulator"} <= set(made.built), failed
    gw, sim = made.built["gateway"], made.built["simulator"]
    assert gw.image_id and sim.image_id
    pod = PodImages(gw.local_ref, sim.local_ref, "simulator")
    return st.engine, DrillImages(pod, gw.image_id, sim.image_id, commit, "built by the test (local refs)")
