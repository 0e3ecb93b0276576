"""A test-stage result served from ci's cache names the tree it is served for: the promotion matches
the test gate on the release's commit, and the cache key proved the suite's inputs identical."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from pipeline.core.result import Check, StageResult, Status
from pipeline.stages import test

REPO = Path(__file__).resolve().parents[2]
IDENT = ["-c", "user.name=t", "-c", "user.email=t@example.com"]


def _git(root: Path, *argv: str) -> str:
    return subprocess.run(["git", *argv], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def _commit(root: Path, message: str) -> str:
    _git(root, "add", "-A")
    _git(root, *IDENT, "commit", "-qm", message)
    return _git(root, "rev-parse", "HEAD")


def _tree(root: Path) -> Path:
    (root / "app").mkdir(parents=True)
    shutil.copyfile(REPO / "app" / "model.yaml", root / "app" / "model.yaml")
    (root / "app" / "main.py").write_text("x = 1\n")
    _git(root, "init", "-q", "-b", "main")
    return root


def _result(subject: dict[str, Any]) -> StageResult:
    check = Check(name="pytest", status=Status.PASSED, detail="ok")
    return StageResult.from_checks("test", [check], summary="ok", evidence={"subject": subject})


def test_a_cached_result_names_the_commit_it_is_served_for_and_the_one_it_ran_on(tmp_path: Path) -> None:
    root = _tree(tmp_path / "repo")
    ran_on = _commit(root, "one")
    cached = _result(test.tested_subject(root, test.TestOptions()))
    record = root / "app" / "model.yaml"
    record.write_text(record.read_text().replace("steps: 600", "steps: 700"))
    now = _commit(root, "a model-only change")
    assert now != ran_on

    served = test.rebind_cached(cached, root)
    subject = served.evidence["subject"]
    assert subject["commit"] == now and subject["dirty"] is False
    assert subject["reused_from"]["commit"] == ran_on
    assert subject["tested"] == cached.evidence["subject"]["tested"]  # what ran is kept
    assert subject["content_digests"] == cached.evidence["subject"]["content_digests"]  # model.yaml is in no image
    assert cached.evidence["subject"]["commit"] == ran_on  # the cached record itself is not rewritten

    # Served for the commit it ran on: nothing to record.
    same = test.rebind_cached(_result(test.tested_subject(root, test.TestOptions())), root)
    assert "reused_from" not in same.evidence["subject"]


def test_a_result_without_a_source_subject_is_served_as_recorded(tmp_path: Path) -> None:
    root = _tree(tmp_path / "repo")
    _commit(root, "one")
    for evidence in ({}, {"subject": {"kind": "images"}}):
        result = StageResult.from_checks("test", [Check(name="x", status=Status.PASSED)], evidence=evidence)
        assert test.rebind_cached(result, root) is result
