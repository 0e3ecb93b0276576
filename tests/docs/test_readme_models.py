"""README's "Shipping a new model", executed from the README text: a model-only release keeps the images.

The block runs as written in a throwaway copy of the working tree committed as a clone (tests and
`ci` read what git tracks), with this checkout's .venv/.tools linked and its caches shared
(engine state, registry, local base image, wheelhouse, stand-in models, stage results:
`$PIPELINE_STATE_DIR`, `$PIPELINE_MODEL_CACHE`, `$PIPELINE_TINY_MODEL_DIR`, `$PIPELINE_CACHE_DIR`),
so nothing is reinstalled and — as in the user's checkout after the release walkthrough's `make ci`
of the same code — `make ci`'s unit suite, which runs on the example model record, is served from
the cache when that walkthrough ran first (alone, this test runs it). What the test
substitutes, and nothing else: a private GitOps remote (`$PIPELINE_GITOPS_REPO`) where dev and staging
already serve an earlier release WITH a model artifact — built by the `build` stage from the clone
before the edit (real images and the stand-in model pushed to the embedded registry) and promoted
through the promote stage with the ci gates' and an eval's evidence, as `make ci` and a release
manager would have —, a run directory, a short `$TMPDIR` of its own (ci's nested tests bind AF_UNIX
sockets under it), the acting identity.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.core.context import RunContext
from pipeline.core.result import Status
from pipeline.gitops import repo as gitops
from pipeline.gitops.release import Release
from pipeline.models.content import content_digest
from pipeline.runtime import registry
from pipeline.stages import promote
from tests.docs.test_adopt import IDENT
from tests.docs.test_adopt import _copy as clone_of_tree
from tests.docs.test_readme import REPO, clean_env, fenced_blocks, run_script
from tests.promotion.conftest import ci_evidence
from tests.promotion.model_fixtures import eval_result

SECTION = "Shipping a new model"
STAGING = "environments/staging/release.yaml"
DEV = "environments/dev/release.yaml"
# What a model-only promotion may change in an env's release.yaml besides the model artifact:
# the release's identity (id, commit) and the chart packaged for it.
IDENTITY = {("release", "id"), ("release", "commit"), ("release", "chartVersion"), ("release", "chartDigest")}
MODEL = {("vllm", "model", "artifact", "digest"), ("vllm", "model", "artifact", "contentDigest")}


def walkthrough_script() -> str:
    """The block's commands, each echoed before it runs (to split the output per command)."""
    (lang, code), *rest = fenced_blocks(SECTION)
    assert lang == "bash" and not rest, "the model walkthrough's shape changed: update this test"
    script = ["set -euo pipefail"]
    for line in code.splitlines():
        command = line.split("  #", 1)[0].strip()
        if command:
            script += [f"echo {shlex.quote('$ ' + command)}", command]
    return "\n".join(script)


def output_of(stdout: str, prefix: str) -> str:
    """What the command starting with `prefix` printed (up to the next echoed command)."""
    _, _, after = stdout.partition(f"$ {prefix}")
    return after.split("\n$ ", 1)[0]


def values(remote: str, rev: str, path: str) -> dict[str, Any]:
    return yaml.safe_load(gitops.git("--git-dir", remote, "show", f"{rev}:{path}"))


def flat(data: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[tuple[str, ...], Any] = {}
    for key, value in data.items():
        out |= flat(value, (*prefix, str(key)))
    return out


def commits(remote: str, path: str) -> list[tuple[str, str]]:
    """(sha, subject) of the remote's commits touching `path`, newest first."""
    log = gitops.git("--git-dir", remote, "log", "--format=%H %s", "main", "--", path)
    return [tuple(line.split(" ", 1)) for line in log.splitlines()]  # type: ignore[misc]


def build_earlier_release(work: Path, env: dict[str, str], runs: Path) -> Release:
    """The `build` stage on the clone as committed: images and the current stand-in model, pushed."""
    proc = subprocess.run(
        [str(work / ".venv" / "bin" / "python"), "-m", "pipeline", "build", "--skip-dist"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, f"seed build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    (release_json,) = runs.glob("*/build/release.json")
    rel = Release.model_validate_json(release_json.read_text())
    assert rel.images_built and rel.model_artifact and rel.model_content_digest, rel
    return rel


def seed(remote: str, rel: Release, run_dir: Path) -> None:
    """`rel` promoted to dev (ci's gates + a floor-only eval: dev had no model artifact) then staging."""
    ctx = RunContext(run_dir=run_dir)
    evidence = {**ci_evidence(rel=rel), "eval": eval_result(rel, None)}
    steps = [
        promote.PromoteOptions(
            to="dev", release=rel, evidence=evidence, run_id="seed", gitops_repo=remote, actor="ci-bot"
        ),
        promote.PromoteOptions(to="staging", gitops_repo=remote, policy_profile="local", actor="rm"),
    ]
    for opts in steps:
        result = promote.run(opts, ctx)
        assert result.status is Status.PASSED, result.summary


@pytest.mark.slow
@pytest.mark.timeout(3600)  # a `build`, training the new stand-in, two evals on vLLM CPU and `make ci`
def test_shipping_a_new_model(tmp_path: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="models-"))
    serving_before = registry.status() is not None
    try:
        work = clone_of_tree(tmp_path / "repo")
        remote = str(gitops.ensure_local_remote(tmp_path / "gitops.git", work))
        cache = REPO / ".cache"
        env = clean_env(
            **IDENT,
            PIPELINE_GITOPS_REPO=remote,
            PIPELINE_ACTOR="release-manager@example.com",
            PIPELINE_STATE_DIR=str(cache),
            PIPELINE_MODEL_CACHE=str(cache / "models"),
            PIPELINE_TINY_MODEL_DIR=str(cache / "tiny-llama"),
            PIPELINE_CACHE_DIR=str(cache / "pipeline"),
            TMPDIR=str(scratch),
        )
        seed_runs = tmp_path / "seed-runs"
        previous = build_earlier_release(work, env | {"PIPELINE_RUNS_DIR": str(seed_runs)}, seed_runs)
        seed(remote, previous, tmp_path / "seed-run")
        staging_before = gitops.git("--git-dir", remote, "show", f"main:{STAGING}")
        res = run_script(walkthrough_script(), work, env | {"PIPELINE_RUNS_DIR": str(tmp_path / "runs")}, 3300)
    finally:
        if not serving_before:  # `build` leaves the embedded registry serving, as a registry does
            registry.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    assert res.returncode == 0, res.stdout[-8000:]

    # The walkthrough changed the model and nothing else in the tree.
    changed = gitops.git("status", "--porcelain", "--untracked-files=no", cwd=work).split()
    assert changed == ["M", "app/model.yaml"], changed
    candidate = content_digest(work / ".runs" / "candidate-model")
    assert candidate != previous.model_content_digest
    assert re.search(r'"verdict":\s*"pass"', output_of(res.stdout, "python -m pipeline eval")), res.stdout[-4000:]
    # make ci served the new artifact as the chart's pod: smoke through its model-fetch, eval's candidate too.
    runs = tmp_path / "runs"
    evals = [json.loads(p.read_text())["evidence"] for p in runs.glob("*/eval.json")]
    in_ci = [e for e in evals if "pod" in str(e.get("served_by"))]
    assert len(in_ci) == 1, [e.get("served_by") for e in evals]
    cand = in_ci[0]["eval"]["candidate"]
    assert cand["served_by"]["kind"] == "pod" and cand["content_digest"] == candidate, cand
    smokes = [json.loads(p.read_text())["evidence"] for p in runs.glob("*/smoke.json")]
    assert any((s.get("pod") or {}).get("model_artifact") == cand["served_by"]["model_artifact"] for s in smokes)

    # dev, then staging, moved to the new model with the earlier release's images, digest for digest.
    dev = Release.from_values(values(remote, "main", DEV))
    promoted_sha = next(sha for sha, subject in commits(remote, STAGING) if subject.startswith("promote(staging)"))
    staging = Release.from_values(values(remote, promoted_sha, STAGING))
    for rel in (dev, staging):
        assert rel.model_content_digest == candidate and rel.model_digest != previous.model_digest, rel
        assert (rel.gateway_digest, rel.vllm_digest) == (previous.gateway_digest, previous.vllm_digest), rel
        assert (rel.gateway_repository, rel.vllm_repository) == (previous.gateway_repository, previous.vllm_repository)
    # staging's promotion changed the model pins (and the release's identity), nothing else.
    before, promoted = flat(yaml.safe_load(staging_before)), flat(values(remote, promoted_sha, STAGING))
    differ = {k for k in before.keys() | promoted.keys() if before.get(k) != promoted.get(k)}
    assert MODEL <= differ <= MODEL | IDENTITY, differ
    assert "→" in output_of(res.stdout, "python -m pipeline promote --to staging"), res.stdout[-4000:]

    # The rollback restored staging's previous release file, model pins included, byte for byte.
    assert gitops.git("--git-dir", remote, "show", f"main:{STAGING}") == staging_before
    subjects = [s for _, s in commits(remote, STAGING)]
    assert subjects[0].startswith("rollback(staging): ") and subjects[0].endswith(f"→ {previous.id}"), subjects
