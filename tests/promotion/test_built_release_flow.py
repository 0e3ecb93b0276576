"""A registry-built (Dagger-style) release is promotable: every gate records the digests it exercised.

The flow of a Dagger run, simulated with the real stage code where it can run here:
`build --gateway-digest D --vllm-digest D` (registry digests → `imagesBuilt: true`), `scan --image
registry.example.com/llm/<image>@D` with no vulnerability DB (image scans SKIPPED, the subject still
names the digests it was given), `smoke`/`loadtest --target URL --subject-digests gateway=D,vllm=D`
(the caller that started the services says which images serve the URL), the test stage's own
subject (the commit it tested), then `promote --to dev --release-file … --evidence …` from the CLI.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from pipeline.core.context import RunContext
from pipeline.core.result import StageResult, Status
from pipeline.gitops import promotion as pm
from pipeline.gitops.evidence import (
    DIGESTS_ASSERTED_BY,
    complete_deployment,
    parse_subject_digests,
    with_asserted_digests,
)
from pipeline.gitops.release import Release, release_of
from pipeline.gitops.repo import GitOpsRepo, git
from pipeline.stages import build, loadtest, promote, scan, smoke
from pipeline.stages import test as test_stage
from tests.promotion.conftest import REPO, ci_evidence

REGISTRY = "registry.example.com/llm"


def digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


GW, VLLM = digest("gateway-image"), digest("vllm-image")


def parse(mod: Any, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    mod.add_arguments(parser)
    return parser.parse_args(argv)


def denials(res: StageResult) -> list[str]:
    return [c.detail for c in res.checks if c.status is Status.FAILED]


@pytest.fixture
def run_ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunContext:
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TRIVY_CACHE_DIR", str(tmp_path / "trivy-cache"))  # no vulnerability DB here
    (tmp_path / "run").mkdir()
    return RunContext(
        run_dir=tmp_path / "run", repo_root=REPO, console=Console(stderr=True, force_terminal=False), executor="local"
    )


def gate_files(ctx: RunContext, out: Path, smoke_digests: str, scan_images: list[str]) -> list[Path]:
    """The four gate results of a Dagger-style run, each written as its stage writes it."""
    scanned = scan.run_from_args(parse(scan, [f"--image={ref}" for ref in scan_images]), ctx)
    assert scanned.status is Status.PASSED, scanned.summary
    # The unit-test stage itself would recurse into this suite: its recorded subject is what matters.
    tested = StageResult(
        stage="test",
        status=Status.PASSED,
        summary="6 checks passed",
        evidence={"subject": test_stage.tested_subject(REPO, test_stage.TestOptions())},
    )
    s_args = parse(smoke, ["--target", "http://vllm.example.com:8000", "--subject-digests", smoke_digests])
    s_opts = smoke.SmokeOptions(target=s_args.target, subject_digests=s_args.subject_digests)
    smoked = StageResult(
        stage="smoke", status=Status.PASSED, summary="target: 7/7", evidence={"subject": smoke._subject(s_opts, ctx)}
    )
    l_args = parse(
        loadtest,
        ["--env", "dev", "--target", "https://llm.dev.example.com", "--subject-digests", f"gateway={GW},vllm={VLLM}"],
    )
    l_opts = loadtest.LoadtestOptions(env=l_args.env, target=l_args.target, subject_digests=l_args.subject_digests)
    loaded = StageResult(
        stage="loadtest",
        status=Status.PASSED,
        summary="all SLOs met",
        evidence={"env": "dev", "subject": loadtest._subject(l_opts, ctx)},
    )
    return [r.write(out / r.stage) for r in (tested, scanned, smoked, loaded)]


def built_release(ctx: RunContext, tmp_path: Path) -> Path:
    res = build.run_from_args(parse(build, ["--gateway-digest", GW, "--vllm-digest", VLLM, "--skip-dist"]), ctx)
    rel = release_of(res)
    assert rel is not None and rel.images_built, res.summary
    assert (rel.gateway_digest, rel.vllm_digest) == (GW, VLLM)
    path = tmp_path / "release.json"
    path.write_text(rel.model_dump_json())
    return path


def promote_cli(remote: str, tmp_path: Path, release_file: Path, files: list[Path], name: str) -> StageResult:
    argv = ["--to", "dev", "--gitops-repo", remote, "--release-file", str(release_file), "--actor", "ci-bot"]
    for f in files:
        argv += ["--evidence", str(f)]
    return promote.run_from_args(parse(promote, argv), RunContext(run_dir=tmp_path / name))


def test_dagger_style_built_release_is_promotable_to_dev(remote: str, tmp_path: Path, run_ctx: RunContext) -> None:
    release_file = built_release(run_ctx, tmp_path)
    images = [f"{REGISTRY}/gateway@{GW}", f"{REGISTRY}/vllm@{VLLM}"]
    files = gate_files(run_ctx, tmp_path / "gates", f"gateway={GW},vllm={VLLM}", images)

    res = promote_cli(remote, tmp_path, release_file, files, "promote")
    assert res.status is Status.PASSED, denials(res)

    repo = GitOpsRepo(remote, tmp_path / "check")
    repo.sync()
    rel = Release.model_validate_json(release_file.read_text())
    assert pm.read_release(repo, "dev") == rel
    bundle = json.loads(repo.file(pm.evidence_path("dev", rel.id)).read_text())
    gates = bundle["gates"]
    assert set(gates) == {"test", "scan", "smoke", "loadtest"}  # the CLI's loadtest is ci's gate, not loadtest@dev
    for key in ("scan", "smoke", "loadtest"):
        assert (gates[key]["subject"]["gateway_digest"], gates[key]["subject"]["vllm_digest"]) == (GW, VLLM), key
        assert "recorded_by" not in gates[key]["subject"]  # each stage recorded its own subject
    assert gates["test"]["subject"]["commit"] == rel.commit
    assert gates["scan"]["skipped_checks"] == ["vulnerabilities"]  # no DB: visible, accepted for dev only
    assert [i["vulnerabilities"] for i in gates["scan"]["subject"]["images"]] == ["skipped", "skipped"]
    assert gates["smoke"]["subject"]["digests_asserted_by"] == DIGESTS_ASSERTED_BY
    head = repo.log(limit=1)[0]
    assert head.trailer("Images-Built") == "true" and head.trailer("Gateway-Digest") == GW


def test_built_release_refuses_gates_recorded_against_other_digests(
    remote: str, tmp_path: Path, run_ctx: RunContext
) -> None:
    release_file = built_release(run_ctx, tmp_path)
    other = digest("someone-elses-gateway")
    # smoke ran another gateway image; scan was given no image at all (source tree only).
    files = gate_files(run_ctx, tmp_path / "gates", f"gateway={other},vllm={VLLM}", [])
    res = promote_cli(remote, tmp_path, release_file, files, "promote")
    assert res.status is Status.FAILED
    rel = Release.model_validate_json(release_file.read_text())
    found = denials(res)
    assert f"release <{rel.id}>: gate <smoke> exercised target with gateway digest {other}, not the promoted {GW}" in (
        found
    ), found
    assert any(
        d.startswith(f"release <{rel.id}>: gate <scan> exercised source with gateway digest <none>") for d in found
    )
    assert not any("gate <loadtest>" in d or "gate <test>" in d for d in found), found


def test_file_based_dev_promotion_keys_ci_gates_by_stage(
    remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    rel = make_release(1)
    files = [r.write(tmp_path / "gates" / key) for key, r in ci_evidence(rel=rel).items()]
    res = promote.run(
        promote.PromoteOptions(to="dev", release=rel, extra_evidence=files, gitops_repo=remote),
        RunContext(run_dir=tmp_path / "p"),
    )
    assert res.status is Status.PASSED, denials(res)
    repo = GitOpsRepo(remote, tmp_path / "check")
    repo.sync()
    gates = json.loads(repo.file(pm.evidence_path("dev", rel.id)).read_text())["gates"]
    # ci's own loadtest (env dev) is the required `loadtest`; a staging one keeps its env in the key.
    assert set(gates) == {"test", "scan", "smoke", "loadtest", "loadtest@staging"}
    assert gates["loadtest"]["env"] == "dev"


# ---------------------------------------------------------------- the subjects themselves


def test_scan_subject_maps_image_digests_and_never_a_tag(tmp_path: Path) -> None:
    assert scan.image_digest(f"{REGISTRY}/gateway@{GW}") == ("gateway", GW)
    assert scan.image_digest(f"{REGISTRY}/llm-service-vllm:1.0@{VLLM}") == ("vllm", VLLM)
    assert scan.image_digest(f"{REGISTRY}/gateway:latest") == ("gateway", None)
    assert scan.image_digest(f"{REGISTRY}/sidecar@{GW}") == (None, GW)
    subject = scan.scan_subject(REPO, [f"{REGISTRY}/gateway:latest", f"{REGISTRY}/vllm@{VLLM}"], [])
    assert subject["kind"] == "source+images" and subject["vllm_digest"] == VLLM and "gateway_digest" not in subject
    assert subject["commit"] and set(subject["content_digests"]) == {"gateway", "vllm"}
    # Two different digests for one image vouch for neither.
    twice = scan.scan_subject(REPO, [f"{REGISTRY}/gateway@{GW}", f"{REGISTRY}/gateway@{VLLM}"], [])
    assert "gateway_digest" not in twice and twice["kind"] == "source"


def test_test_stage_records_the_tree_it_tested(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "app").mkdir(parents=True)
    (root / "app" / "main.py").write_text("x = 1\n")
    for args in (
        ("init", "-q"),
        ("add", "-A"),
        ("-c", "user.email=t@example.invalid", "-c", "user.name=t", "commit", "-q", "-m", "init"),
    ):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    opts = test_stage.TestOptions(root=root, skip=list(test_stage.CHECKS))
    res = test_stage.run(opts, RunContext(run_dir=tmp_path / "run", repo_root=root))
    subject = res.evidence["subject"]
    assert subject["kind"] == "source" and subject["commit"] == git("rev-parse", "HEAD", cwd=root).strip()
    assert subject["dirty"] is False


def test_subject_digests_are_validated_and_need_a_target(tmp_path: Path) -> None:
    assert parse_subject_digests(f"gateway={GW}, vllm={VLLM}") == {"gateway": GW, "vllm": VLLM}
    for bad in ("", f"redis={GW}", "gateway=latest", f"gateway={GW},gateway={VLLM}", GW):
        with pytest.raises(ValueError):
            parse_subject_digests(bad)
    with pytest.raises(SystemExit):
        parse(loadtest, ["--subject-digests", "gateway=sha256:nope"])
    ctx = RunContext(run_dir=tmp_path / "run", repo_root=REPO)
    # Without --target the stage runs the source tree: naming image digests would be a false claim.
    res = loadtest.run(loadtest.LoadtestOptions(subject_digests={"gateway": GW}), ctx)
    assert res.status is Status.FAILED and "--subject-digests needs --target" in res.summary
    res = smoke.run(smoke.SmokeOptions(server="simulator", subject_digests={"vllm": VLLM}), ctx)
    assert res.status is Status.FAILED and "--subject-digests needs --target" in res.summary
    # With it, smoke records only what was asserted: here the vLLM image, the gateway stays source.
    subject = smoke._subject(smoke.SmokeOptions(target="http://vllm.example.com", subject_digests={"vllm": VLLM}), ctx)
    assert subject["vllm_digest"] == VLLM and "gateway_digest" not in subject
    assert subject["gateway"] == "source tree (not an image)"


def test_attach_keeps_asserted_digests_and_adds_the_env_pins(make_release: Callable[..., Release]) -> None:
    rel, other = make_release(1), make_release(2)
    subject = with_asserted_digests(
        {"kind": "deployment", "env": "staging", "url": "https://stg"}, {"gateway": other.gateway_digest}
    )
    raw: dict[str, Any] = {"stage": "loadtest", "evidence": {"env": "staging", "subject": subject}}
    complete_deployment(raw, rel, "environments/staging/release.yaml@abc")
    done = raw["evidence"]["subject"]
    # The asserted gateway digest stays (policy then refuses it for rel); the unasserted one comes from git.
    assert done["gateway_digest"] == other.gateway_digest and done["vllm_digest"] == rel.vllm_digest
    assert done["release_id"] == rel.id and done["pins_from"].endswith("@abc")
