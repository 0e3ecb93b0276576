"""trivy's walk skips a directory named dev right under its target (aquasecurity/trivy#6651, open): render scans copies of
each env's output under `env-<name>/`, so the dev env's manifests are config-scanned like the others.
Real trivy and a real render."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from pipeline.core.context import RunContext
from pipeline.runtime.tools import require
from pipeline.stages import render

PRIVILEGED = """apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: c
    image: busybox
    securityContext: {privileged: true}
"""


def _targets(target: Path) -> set[str]:
    argv = [require("trivy"), "config", "--quiet", "--skip-check-update", "--disable-telemetry"]
    argv += ["--misconfig-scanners", "kubernetes", "--format", "json", str(target)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True)
    return {r["Target"] for r in json.loads(proc.stdout).get("Results") or []}


def test_trivy_walks_the_view_but_not_a_directory_named_dev(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for env in ("dev", "staging"):
        (out / env).mkdir(parents=True)
        (out / env / "manifests.yaml").write_text(PRIVILEGED)
    # The upstream bug this works around (if it fails, trivy fixed it and the view can go).
    assert _targets(out) == {"staging/manifests.yaml"}
    view = render.trivy_view(out, ["dev", "staging"], tmp_path / "view")
    assert _targets(view) == {"env-dev/manifests.yaml", "env-staging/manifests.yaml"}


def test_render_config_scans_the_dev_env(tmp_path: Path) -> None:
    opts = render.RenderOptions(envs=["dev"], out=tmp_path / "out")
    result = render.run(opts, RunContext(run_dir=tmp_path / "run"))
    (check,) = [c for c in result.checks if c.name == "trivy config"]
    assert check.status.value == "passed" and check.detail.split(" in ", 1)[1].startswith("dev"), check.detail
