"""README's "Canary releases" block, run as written (tests/docs/test_readme.py's `fenced_blocks`, `run_script`,
`clean_env`): each drill's JSON must meet issue 23's targets. Substituted: the run directory (a tmp dir, so the
drills' work and their evidence remote stay out of the checkout)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from pipeline.runtime import tools
from tests.docs.test_readme import REPO, clean_env, fenced_blocks, run_script

MISSING = [t for t in ("haproxy", "prometheus", "prometheus-alertmanager", "promtool") if tools.find(t) is None]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason=f"not installed: {MISSING}"),
]


def faults_in(script: str) -> list[str]:
    """The `--fault` of every `drill --canary` line of the block, in order."""
    faults = []
    for line in script.splitlines():
        words = shlex.split(line, comments=True)
        if "--canary" in words:
            faults.append(words[words.index("--fault") + 1])
    return faults


def results(output: str) -> list[dict[str, Any]]:
    """The drills' `--json` documents (one line each; progress lines are text)."""
    docs = []
    for line in output.splitlines():
        if line.startswith("{"):
            data = json.loads(line)
            if "verdict" in data:
                docs.append(data)
    return docs


@pytest.mark.timeout(900)
def test_canary_releases_block(tmp_path: Path) -> None:
    blocks = [code for lang, code in fenced_blocks("Canary releases") if lang == "bash"]
    assert len(blocks) == 1, blocks
    faults = faults_in(blocks[0])
    assert "errors" in faults, blocks[0]
    res = run_script(blocks[0], REPO, clean_env(PIPELINE_RUNS_DIR=str(tmp_path / "runs")), timeout=840)
    assert res.returncode == 0, res.stdout[-6000:]
    docs = results(res.stdout)
    assert [d["fault"] for d in docs] == faults, res.stdout[-6000:]
    for data in docs:
        assert data["problems"] == [], data
        assert 1 <= data["max_model_pods"] <= data["replicas"], data
        if data["fault"] == "none":
            assert data["verdict"] == "promoted", data
            assert data["failed_requests"] == 0 and data["broken_streams"] == 0, data
        else:
            assert data["verdict"] == "aborted", data
            assert data["abort_seconds"] is not None and data["abort_seconds"] <= 60, data
            assert 0 < data["exposed_fraction"] <= 0.05, data
