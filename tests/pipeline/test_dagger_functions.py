"""The Dagger module driven through the SDK's own registration and invocation, offline.

Each test calls a function the way the engine does (`get_structured_result` with raw inputs) with
only the awaited leaves faked (tests/helpers/dagger_harness.py) and asserts on the chains it builds.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.helpers.dagger_harness import (
    MODULE_SRC,
    Call,
    Harness,
    all_calls,
    build_args,
    chain,
    check_docker_builds,
    dockerfile_stages,
    env,
    image_of,
    names,
    secret_env,
    secret_id,
    service_args,
)

REPO = Path(__file__).resolve().parents[2]
VERBS = ("test", "build", "scan", "render", "smoke", "loadtest", "promote", "rollback", "ci", "eval")
GW = "sha256:" + "a" * 64
VLLM = "sha256:" + "b" * 64
CPU = "sha256:" + "c" * 64
REGISTRY = "registry.example.com/llm"
CREDS = {"registry": REGISTRY, "registry_username": "ci", "registry_password": "registry-token-id"}
DIGESTS = {"registry": REGISTRY, "gateway_digest": GW, "vllm_digest": VLLM}
GITOPS = "ssh://git@git.example.com/llm/gitops.git"
# Minimal arguments each function needs to run at all.
REQUIRED: dict[str, dict[str, Any]] = {
    "promote": {"to": "dev", "gitops_repo": GITOPS},
    "rollback": {"env": "dev", "gitops_repo": GITOPS},
}
MODEL_ID, MODEL_REV = (
    re.search(rf"^{key}:\s*(\S+)", (REPO / "app" / "model.yaml").read_text(), re.MULTILINE).group(1)  # type: ignore[union-attr]
    for key in ("id", "revision")
)


@pytest.fixture
def plan() -> Iterator[ModuleType]:
    import sys

    sys.path.insert(0, str(MODULE_SRC))
    try:
        yield importlib.import_module("pipeline_dagger.plan")
    finally:
        sys.path.remove(str(MODULE_SRC))


def last_setup_index(calls: list[Call]) -> int:
    """Index of the last setup exec: apt, uv, the dependencies, the tools, the project install."""
    setup = ("apt-get", "uv sync", "pipeline.runtime.tools")
    idx = [i for i, c in enumerate(calls) if c.name == "withExec" and any(s in " ".join(c.args["args"]) for s in setup)]
    assert idx, names(calls)
    return idx[-1]


# -- registration: what `dagger functions` / `dagger call <fn> --help` shows ---------------------------


def test_every_function_registers_with_a_one_line_description(harness: Harness) -> None:
    registered = harness.register()
    assert set(registered) == set(VERBS)
    for name, fn in registered.items():
        assert fn.description and "\n" not in fn.description.strip(), name


def test_no_function_reuses_a_stored_result(harness: Harness, plan: ModuleType) -> None:
    """Side effects, the world (registries, DBs), and a returned failure (test, render): nothing is served twice."""
    registered = harness.register()
    assert {n for n, fn in registered.items() if fn.cache_policy == "Never"} == set(plan.NEVER_CACHED) == set(VERBS)


@pytest.mark.parametrize("verb", ["test", "render"])
def test_a_failed_test_or_render_is_not_served_again(harness: Harness, verb: str) -> None:
    """Issue 19 #6: they return a failure as a result, which Dagger's default policy would reuse for 7 days."""
    assert harness.register()[verb].cache_policy == "Never"
    harness.exit_code = 1
    first, second = harness.call(verb).final, harness.call(verb).final
    differ = next(i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b)
    assert first[differ].name == "withEnvVariable" and first[differ].args["name"] == "PIPELINE_CALL_NONCE"
    assert differ > last_setup_index(first)  # setup layers stay cached


def test_host_paths_are_files_and_directories(harness: Harness, plan: ModuleType) -> None:
    registered = harness.register()
    for (verb, dest), kind in plan.HOST_INPUTS.items():
        got = registered[verb].args[dest]
        assert got.strip("[]?") == {"file": "File", "dir": "Directory"}[kind], f"{verb} {dest}: {got}"
    assert registered["render"].args["crd_schemas"] == "Directory?"
    for verb, fn in registered.items():
        for arg in ("hf_token", "registry_password", "gitops_ssh_key", "gitops_known_hosts"):
            if arg in fn.args:
                assert fn.args[arg] == "Secret?", f"{verb} {arg}"


# -- cache-busting: setup layers cached, the per-call part not ---------------------------------------


@pytest.mark.parametrize(
    ("verb", "inputs"),
    [
        ("smoke", {"gateway_image": f"{REGISTRY}/gateway@{GW}", "vllm_image": f"{REGISTRY}/vllm@{VLLM}"}),
        ("loadtest", {**DIGESTS, "gpu": True}),
        ("ci", {**DIGESTS}),
        ("smoke", {"gpu": True}),
        ("build", {}),
        ("scan", {}),
        ("test", {}),
        ("render", {}),
        ("promote", REQUIRED["promote"]),
        ("rollback", REQUIRED["rollback"]),
    ],
)
def test_per_call_nonce_comes_after_setup_and_busts_the_final_exec(
    harness: Harness, verb: str, inputs: dict[str, Any]
) -> None:
    first, second = harness.call(verb, **inputs).final, harness.call(verb, **inputs).final
    differ = next(i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b)
    # apt, uv and the tools are the same layers on every call; from the nonce on everything runs again.
    assert differ > last_setup_index(first), f"{verb}: per-call value at {first[differ]} before setup"
    assert first[differ].name == "withEnvVariable" and first[differ].args["name"] == "PIPELINE_CALL_NONCE"
    assert differ < len(first) - 1  # ... and before the final exec


# -- the vLLM services: GPUs serve the release's model (HF_TOKEN, a model cache), CPUs the tiny one ------


GPU_CASES = {
    "smoke --gpu (source-built)": ("smoke", {"gpu": True}),
    "smoke image refs --gpu": ("smoke", {**DIGESTS, "gpu": True}),
    "loadtest image refs --gpu": ("loadtest", {**DIGESTS, "gpu": True}),
    "ci with credentials --gpu": ("ci", {**CREDS, "gpu": True}),
    "ci --gpu without a registry": ("ci", {"gpu": True}),
}
CPU_CASES = {
    "smoke image refs, no gpu": ("smoke", {**DIGESTS}),
    "loadtest image refs, no gpu": ("loadtest", {**DIGESTS}),
    "ci with credentials": ("ci", {**CREDS}),
    "ci given digests": ("ci", {**DIGESTS}),
    "ci given digests + vllm-cpu": ("ci", {**DIGESTS, "vllm_cpu_digest": CPU}),
}
VLLM_CASES = {**GPU_CASES, **CPU_CASES}


@pytest.mark.parametrize("case", GPU_CASES)
def test_every_gpu_vllm_service_serves_the_release_model_with_token_and_cache(harness: Harness, case: str) -> None:
    verb, inputs = GPU_CASES[case]
    run = harness.call(verb, **inputs, hf_token="hf-token-id")
    vllm = run.services()["vllm"]
    args = service_args(vllm)
    assert f"--model={MODEL_ID}" in args and f"--revision={MODEL_REV}" in args, args
    assert f"--served-model-name={MODEL_ID}" in args
    assert secret_id(secret_env(vllm)["HF_TOKEN"]) == "hf-token-id"
    caches = [c.args for c in vllm if c.name == "withMountedCache"]
    assert [c["path"] for c in caches] == ["/models/cache"] and caches[0]["owner"] == "10001:0"
    # The stage asks for the model the service serves.
    assert f"--model {MODEL_ID}" in " ".join(run.execs()[-1])


@pytest.mark.parametrize("case", VLLM_CASES)
def test_the_cuda_image_is_bound_only_with_gpus(harness: Harness, case: str) -> None:
    verb, inputs = VLLM_CASES[case]
    vllm = harness.call(verb, **inputs).services()["vllm"]
    image, gpu = image_of(vllm), "experimentalWithAllGPUs" in names(vllm)
    cuda = image == "build:vllm?VLLM_FLAVOR=cuda" or f"{REGISTRY}/vllm@" in image
    assert cuda == gpu == bool(inputs.get("gpu")), (image, gpu)
    if not gpu:
        assert image == "build:vllm?VLLM_FLAVOR=cpu" or "/vllm-cpu@sha256:" in image


def test_ci_with_credentials_publishes_and_smokes_vllm_cpu(harness: Harness) -> None:
    run = harness.call("ci", **CREDS)
    published = {leaf.arg.split("/")[-1].split(":")[0] for leaf in run.of("publish")}
    assert published == {"gateway", "vllm", "vllm-cpu", "pipeline"}
    cpu_ref = next(image_of(s) for a, s in run.services().items() if a == "vllm")
    assert cpu_ref.startswith(f"{REGISTRY}/vllm-cpu@sha256:")
    cmd = " ".join(run.execs()[-1])
    # Only the gateway digest is claimed: the CUDA image did not run.
    smoke_claim = re.search(r"smoke=--subject-digests (\S+)", cmd)
    assert smoke_claim and smoke_claim.group(1).startswith("gateway=") and "vllm=" not in smoke_claim.group(1)


def test_gpu_runs_claim_both_digests(harness: Harness) -> None:
    cmd = " ".join(harness.call("smoke", **DIGESTS, gpu=True).execs()[-1])
    assert f"--subject-digests gateway={GW},vllm={VLLM}" in cmd


def test_services_without_hf_token_get_none(harness: Harness) -> None:
    vllm = harness.call("smoke", gpu=True).services()["vllm"]
    assert "HF_TOKEN" not in secret_env(vllm)


def test_model_and_revision_can_be_overridden(harness: Harness) -> None:
    args = service_args(harness.call("smoke", gpu=True, model="org/other", model_revision="abc").services()["vllm"])
    assert "--model=org/other" in args and "--revision=abc" in args
    args = service_args(harness.call("smoke", gpu=True, model="org/other").services()["vllm"])
    assert "--model=org/other" in args and not any(a.startswith("--revision") for a in args)


# -- host inputs, GitOps targets, commit -------------------------------------------------------------


def test_host_files_are_mounted_after_setup_and_passed_by_path(harness: Harness) -> None:
    run = harness.call(
        "promote",
        **REQUIRED["promote"],
        release_file="release-file-id",
        extra_evidence=["ev-0-id", "ev-1-id"],
        trivy_reports="trivy-id",
    )
    final = run.final
    mounts = {c.args["path"]: chain(c.args["source"]) for c in final if c.name == "withMountedFile"}
    assert set(mounts) == {
        "/inputs/release_file",
        "/inputs/extra_evidence/0",
        "/inputs/extra_evidence/1",
        "/inputs/trivy_reports",
    }
    assert any(c.args.get("id") == "release-file-id" for c in mounts["/inputs/release_file"])
    first_mount = min(i for i, c in enumerate(final) if c.name == "withMountedFile")
    assert first_mount > last_setup_index(final)
    cmd = run.execs()[-1]
    assert cmd[cmd.index("--release-file") + 1] == "/inputs/release_file"
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--evidence"] == [
        "/inputs/extra_evidence/0",
        "/inputs/extra_evidence/1",
    ]


def test_directories_are_mounted_too(harness: Harness) -> None:
    run = harness.call("render", charts_dir=["charts-id"])
    assert any(c.name == "withMountedDirectory" and c.args["path"] == "/inputs/charts_dir/0" for c in run.final)
    cmd = run.execs()[-1]
    assert cmd[cmd.index("--charts-dir") + 1] == "/inputs/charts_dir/0"


@pytest.mark.parametrize(
    ("verb", "inputs"),
    [("promote", {"to": "dev"}), ("rollback", {"env": "dev"}), ("loadtest", {"attach": True})],
)
def test_gitops_writes_need_a_remote(harness: Harness, verb: str, inputs: dict[str, Any]) -> None:
    with pytest.raises(Exception, match="gitops-repo"):
        harness.call(verb, **inputs)
    assert harness.leaves == []  # refused before anything ran
    harness.call(verb, **inputs, gitops_repo=GITOPS)


def test_promote_dry_run_needs_no_remote(harness: Harness) -> None:
    harness.call("promote", to="dev", dry_run=True)


@pytest.mark.parametrize("verb", ["render", "scan", "smoke", "build", "ci"])
def test_commit_and_git_reach_the_stage(harness: Harness, verb: str) -> None:
    run = harness.call(verb, commit="f" * 40, dirty=True)
    assert env(run.final)["PIPELINE_COMMIT"] == "f" * 40 and env(run.final)["PIPELINE_DIRTY"] == "1"
    assert any("install" in " ".join(e) and "git" in e[-1].split() for e in run.execs() if e[0] == "sh")


def test_git_commit_honours_the_commit_the_module_passes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pipeline.artifacts import source

    monkeypatch.setenv("PIPELINE_COMMIT", "f" * 40)
    monkeypatch.setenv("PIPELINE_DIRTY", "0")
    assert source.git_commit(tmp_path) == ("f" * 40, False)
    monkeypatch.delenv("PIPELINE_COMMIT")
    assert source.git_commit(tmp_path) == ("unknown", True)


def test_gitops_key_and_crd_schemas_are_mounted_not_copied_into_the_source(harness: Harness, plan: ModuleType) -> None:
    run = harness.call(
        "ci", gitops_repo=GITOPS, gitops_ssh_key="key-id", gitops_known_hosts="hosts-id", crd_schemas="crd-id"
    )
    final = run.final
    secrets = {
        c.args["path"]: (secret_id(c.args["source"]), c.args.get("mode", 0o400))  # 0o400: the SDK default, not sent
        for c in final
        if c.name == "withMountedSecret"
    }
    assert secrets == {plan.GITOPS_SSH_KEY: ("key-id", 0o400), plan.GITOPS_KNOWN_HOSTS: ("hosts-id", 0o444)}
    assert env(final)["GIT_SSH_COMMAND"] == plan.git_ssh_command(True)
    assert any(c.name == "withMountedDirectory" and c.args["path"] == plan.CRD_SCHEMAS_MOUNT for c in final)
    cmd = run.execs()[-1]
    assert cmd[cmd.index("--crd-schemas") + 1] == plan.CRD_SCHEMAS_MOUNT
    assert "key-id" not in " ".join(cmd)


def test_registry_password_is_a_secret_for_publish_and_trivy(harness: Harness) -> None:
    run = harness.call("ci", **CREDS)
    for leaf in run.of("publish"):
        (auth,) = [c for c in leaf.chain if c.name == "withRegistryAuth"]
        assert secret_id(auth.args["secret"]) == "registry-token-id" and auth.args["username"] == "ci"
    assert secret_id(secret_env(run.final)["TRIVY_PASSWORD"]) == "registry-token-id"
    assert secret_id(secret_env(run.final)["CHART_REGISTRY_PASSWORD"]) == "registry-token-id"


def test_ci_returns_the_digests_it_published(harness: Harness) -> None:
    run = harness.call("ci", **CREDS)
    published = {leaf.arg.split("/")[-1].split(":")[0]: leaf for leaf in run.of("publish")}
    (new_file,) = [c for c in chain(run.result.report) if c.name == "withNewFile" and c.args["path"] == "published.env"]
    lines = dict(line.split("=", 1) for line in new_file.args["contents"].splitlines())
    assert set(lines) == {"gateway_digest", "vllm_digest", "vllm_cpu_digest", "pipeline_digest"}
    cmd = " ".join(run.execs()[-1])
    assert f"--gateway-digest {lines['gateway_digest']}" in cmd and f"--vllm-digest {lines['vllm_digest']}" in cmd
    assert len(published) == 4
    # Without credentials nothing is published: an empty file, images only built.
    run = harness.call("ci")
    (new_file,) = [c for c in chain(run.result.report) if c.name == "withNewFile" and c.args["path"] == "published.env"]
    assert new_file.args.get("contents", "") == "" and len(run.of("sync")) == 4 and not run.of("publish")


# -- issue 19 -------------------------------------------------------------------------------------------------
DOCKERFILE = REPO / "app" / "Dockerfile"
SHARED, LOCKED_OR_PRIVATE = "SHARED", ("LOCKED", "PRIVATE")


def dockerfile_stage(name: str) -> str:
    """The instructions of one stage of app/Dockerfile, line continuations joined."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    stages = re.split(r"^FROM\s+", text, flags=re.MULTILINE)
    (body,) = [s for s in stages[1:] if re.match(rf"\S+\s+AS\s+{re.escape(name)}\s*$", s.splitlines()[0], re.I)]
    return body


def volume_sharing(calls: list[Call]) -> dict[str, str]:
    """Cache volume name → its sharing mode, for each withMountedCache (the SDK leaves out its SHARED default)."""
    out = {}
    for c in calls:
        if c.name == "withMountedCache":
            (key,) = [x.args["key"] for x in chain(c.args["cache"]) if x.name == "cacheVolume"]
            out[key] = str(c.args.get("sharing", SHARED))
    return out


# 1. Images: every docker_build names a stage of app/Dockerfile, with the local build's spec.


def test_dockerfile_stages_are_its_from_as_names() -> None:
    stages = dockerfile_stages(DOCKERFILE)
    assert {"builder", "gateway", "simulator", "vllm-base-cuda", "vllm-base-cpu", "vllm", "pipeline"} <= stages
    assert "vllm-cpu" not in stages  # the CPU server is the `vllm` stage built with VLLM_FLAVOR=cpu


def test_the_harness_refuses_a_docker_build_of_no_stage() -> None:
    with pytest.raises(AssertionError, match="not a stage"):
        check_docker_builds([Call("dockerBuild", {"dockerfile": "app/Dockerfile", "target": "vllm-cpu"})])
    unknown_arg = {"dockerfile": "app/Dockerfile", "target": "vllm", "buildArgs": [{"name": "NOPE", "value": "1"}]}
    with pytest.raises(AssertionError, match="not ARGs"):
        check_docker_builds([Call("dockerBuild", unknown_arg)])


def test_image_builds_are_the_local_image_specs(plan: ModuleType) -> None:
    """One definition per image: the Dockerfile stage and build args pipeline.artifacts.images builds it with
    (less the args that only go with the local build's host wheelhouse)."""
    from pipeline.artifacts.images import IMAGES

    assert set(plan.IMAGE_BUILDS) == set(IMAGES)
    for name, spec in IMAGES.items():
        local = {k: v for k, v in spec.build_args.items() if not (spec.wheelhouse and k in plan.WHEELHOUSE_ARGS)}
        assert (plan.IMAGE_BUILDS[name].target, plan.IMAGE_BUILDS[name].build_args) == (spec.target, local), name
    assert set(IMAGES["vllm-cpu"].build_args) >= plan.WHEELHOUSE_ARGS


@pytest.mark.parametrize("with_credentials", [False, True])
def test_build_builds_every_image_target_from_its_dockerfile_stage(
    harness: Harness, plan: ModuleType, with_credentials: bool
) -> None:
    run = harness.call("build", **(CREDS if with_credentials else {}), commit="f" * 40)
    builds = check_docker_builds([c for leaf in run.of("publish" if with_credentials else "sync") for c in leaf.chain])
    got = sorted((c.args["target"], build_args(c).get("VLLM_FLAVOR", "")) for c in builds)
    assert got == [("gateway", ""), ("pipeline", ""), ("vllm", "cpu"), ("vllm", "cuda")]
    assert all(build_args(c)["REVISION"] == "f" * 40 for c in builds)


@pytest.mark.parametrize("case", VLLM_CASES)
def test_every_service_image_built_from_source_is_a_dockerfile_stage(harness: Harness, case: str) -> None:
    verb, inputs = VLLM_CASES[case]
    run = harness.call(verb, **inputs)  # the harness fails any dockerBuild of a stage app/Dockerfile lacks
    check_docker_builds(all_calls(run.final))
    image = image_of(run.services()["vllm"])
    assert image.startswith(("build:vllm?VLLM_FLAVOR=", f"{REGISTRY}/")), image


# 2. Service readiness: the stage's --timeout, not the image's HEALTHCHECK.


@pytest.mark.parametrize(
    ("verb", "inputs", "budget"),
    [
        ("smoke", {**DIGESTS, "timeout": 900.0}, 900),
        ("smoke", {"gpu": True, "timeout": 1800.0}, 1800),
        ("smoke", {**DIGESTS, "gpu": True}, 300),
        ("loadtest", {**DIGESTS}, 300),
        ("ci", {**DIGESTS, "stage_args": ["smoke=--timeout 1200"]}, 1200),
        ("ci", {"gpu": True, "stage_args": ["smoke=--timeout=600"]}, 600),
        ("ci", {**CREDS}, 300),
    ],
)
def test_vllm_readiness_budget_is_the_stages_timeout(
    harness: Harness, plan: ModuleType, verb: str, inputs: dict[str, Any], budget: int
) -> None:
    from pipeline.runtime import vllm_cpu

    vllm = harness.call(verb, **inputs).services()["vllm"]
    (check,) = [c for c in vllm if c.name == "withDockerHealthcheck"]
    assert check.args["startPeriod"] == f"{budget}s"
    assert plan.READY_TIMEOUT_S == vllm_cpu.DEFAULT_READY_TIMEOUT  # smoke's --timeout default
    assert check.args["retries"] == plan.HEALTH_RETRIES and check.args["interval"] == f"{plan.HEALTH_INTERVAL_S}s"
    # The image's own check command (app/Dockerfile, vllm stage), with an explicit budget.
    cmd = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", dockerfile_stage("vllm"), re.MULTILINE)
    assert cmd and check.args["args"] == json.loads(cmd.group(1))
    assert names(vllm).index("withDockerHealthcheck") < names(vllm).index("asService")


@pytest.mark.parametrize(("verb", "inputs"), [("smoke", DIGESTS), ("loadtest", DIGESTS)])
def test_the_gateway_service_is_checked_every_few_seconds_not_every_30(
    harness: Harness, plan: ModuleType, verb: str, inputs: dict[str, Any]
) -> None:
    """The image's HEALTHCHECK runs every 30 s; a service with one is ready only when it passes (core/service.go),
    so without its own check every run would wait up to 30 s for a gateway that is up in seconds."""
    gateway = harness.call(verb, **inputs).services()["gateway"]
    (check,) = [c for c in gateway if c.name == "withDockerHealthcheck"]
    assert check.args["interval"] == f"{plan.HEALTH_INTERVAL_S}s" and plan.HEALTH_INTERVAL_S < 30
    cmd = re.search(r"^HEALTHCHECK [^\n]*?(?:\\\n[^\n]*?)*CMD (\[.*\])\s*$", dockerfile_stage("gateway"), re.MULTILINE)
    assert cmd and check.args["args"] == json.loads(cmd.group(1))


# 3. Without GPUs the vLLM service serves the repository's tiny model, like the local smoke.


@pytest.mark.parametrize("case", CPU_CASES)
def test_every_cpu_vllm_service_serves_the_tiny_model(harness: Harness, plan: ModuleType, case: str) -> None:
    from pipeline.runtime import tiny_model, vllm_cpu

    verb, inputs = CPU_CASES[case]
    run = harness.call(verb, **inputs, hf_token="hf-token-id")
    vllm = run.services()["vllm"]
    args = service_args(vllm)
    assert not any(MODEL_ID in str(c.args) for c in vllm), "the release's model on a CPU service"
    assert f"--model={plan.TINY_MODEL_DIR}" in args
    assert f"--served-model-name={vllm_cpu.DEFAULT_MODEL_NAME}" in args
    # The local smoke's server flags (pipeline.runtime.vllm_cpu.server_argv) and env.
    local = vllm_cpu.server_argv(Path("/m"), "n", 1)
    flags = dict(zip(local[3::2], local[4::2], strict=True))
    for flag, value in flags.items():
        if flag not in ("--model", "--served-model-name", "--host", "--port"):
            assert f"{flag}={value}" in args, flag
    assert vllm_cpu.server_env().items() <= env(vllm).items()
    # Built in the service, before it starts, by the repository's builder (the local smoke's).
    (mount,) = [c for c in vllm if c.name == "withMountedFile"]
    assert [c.args["path"] for c in chain(mount.args["source"]) if c.name == "file"] == [plan.TINY_MODEL_SCRIPT]
    assert Path(tiny_model.__file__) == REPO / plan.TINY_MODEL_SCRIPT
    execs = [c.args["args"] for c in vllm if c.name == "withExec"]
    assert execs == [["python3", mount.args["path"], "--out", plan.TINY_MODEL_DIR]]
    assert names(vllm).index("withExec") < names(vllm).index("asService")
    # No download: no token, no model cache volume.
    assert "HF_TOKEN" not in secret_env(vllm) and not [c for c in vllm if c.name == "withMountedCache"]
    # The stage asks for the model the service serves.
    cmd = " ".join(run.execs()[-1])
    assert f"--model {vllm_cpu.DEFAULT_MODEL_NAME}" in cmd and MODEL_ID not in cmd
    # vLLM refuses to start on the runtime's 64 MiB /dev/shm (160 MiB needed; found by the podman replay).
    (shm,) = [c for c in vllm if c.name == "withMountedTemp" and c.args["path"] == "/dev/shm"]
    assert int(shm.args["size"]) >= 160 << 20


def test_a_cpu_service_serves_another_model_only_when_asked(harness: Harness) -> None:
    args = service_args(harness.call("smoke", **DIGESTS, model="org/small").services()["vllm"])
    assert "--model=org/small" in args and MODEL_ID not in " ".join(args)
    with pytest.raises(Exception, match="model_revision"):
        harness.call("smoke", **DIGESTS, model_revision="abc")


# 4. vLLM's CPU build started by the stage itself gets the CPU image's system packages.


@pytest.mark.parametrize(
    ("verb", "inputs", "in_container"),
    [
        ("smoke", {}, True),
        ("ci", {}, True),
        ("ci", {"skip": ["loadtest"], "stage_args": ["smoke=--timeout 600"]}, True),
        ("smoke", {"server": "simulator"}, False),
        ("smoke", {"target": "http://vllm.example:8000"}, False),
        ("smoke", {**DIGESTS}, False),
        ("smoke", {"gpu": True}, False),
        ("ci", {**DIGESTS}, False),
        ("ci", {"gpu": True}, False),
        ("ci", {"skip": ["smoke"]}, False),
        ("ci", {"stage_args": ["smoke=--server simulator"]}, False),
        ("render", {}, False),
    ],
)
def test_vllm_from_source_gets_the_cpu_images_system_packages(
    harness: Harness, plan: ModuleType, verb: str, inputs: dict[str, Any], in_container: bool
) -> None:
    stage = dockerfile_stage("vllm-base-cpu")
    found = re.search(r"apt-get install -y --no-install-recommends ([^&]+)", stage)
    index = re.search(r"^ARG TORCH_INDEX_URL=(\S+)", stage, re.MULTILINE)
    assert found and index
    packages = set(found.group(1).split())
    run = harness.call(verb, **inputs)
    apt = next(e[-1] for e in run.execs() if e[0] == "sh" and "apt-get install" in e[-1])
    assert (packages <= set(apt.split())) is in_container, apt
    # ... and torch's CPU wheel from the index the CPU image uses, for the stage's own pip only.
    assert env(run.final).get("PIP_EXTRA_INDEX_URL") == (index.group(1) if in_container else None)
    assert packages == set(plan.VLLM_CPU_APT) and index.group(1) == plan.TORCH_CPU_INDEX
    if in_container:
        nonce = names(run.final).index("withEnvVariable", last_setup_index(run.final))
        assert [c.args["name"] for c in run.final[nonce:] if c.name == "withEnvVariable"][-1] == "PIP_EXTRA_INDEX_URL"


# 5. Cache volumes that concurrent runs meet have a sharing mode.


@pytest.mark.parametrize("verb", VERBS)
def test_caches_concurrent_runs_meet_are_locked_or_private(harness: Harness, verb: str) -> None:
    sharing = volume_sharing(harness.call(verb, **REQUIRED.get(verb, {})).final)
    assert sharing["pipeline-cache"] in LOCKED_OR_PRIVATE  # fixed tmp names in pipeline/core/cache.py
    assert ("trivy-cache" in sharing) is (verb in ("render", "scan", "ci"))  # only where trivy runs
    if "trivy-cache" in sharing:
        assert sharing["trivy-cache"] in LOCKED_OR_PRIVATE  # one bbolt DB under an flock
    assert sharing["uv-cache"] == sharing["pip-cache"] == SHARED  # safe for concurrent use


@pytest.mark.parametrize("verb", ["test", "render", "ci"])
def test_locked_caches_are_mounted_only_after_setup(harness: Harness, verb: str) -> None:
    """A LOCKED/PRIVATE cache serializes every exec that mounts it across the engine (core/container_exec.go,
    cacheSharingModeLocksWrites): setup (apt, uv, tools, the project install) must never wait on another run."""
    final = harness.call(verb, **REQUIRED.get(verb, {})).final
    locked_at = [
        i for i, c in enumerate(final) if c.name == "withMountedCache" and c.args.get("sharing", SHARED) != SHARED
    ]
    execs = [i for i, c in enumerate(final) if c.name == "withExec"]
    install = max(i for i in execs if final[i].args["args"][:2] == ["uv", "sync"])
    assert locked_at and min(locked_at) > install, "a locked cache is mounted before setup and the project install"
    assert max(execs) > min(locked_at)  # ... and the stage's own exec has it


# 7. Evidence: a report and an exit code, whatever the CLI did.


def test_every_function_returns_the_report_and_the_exit_code(harness: Harness) -> None:
    registered = harness.register()
    assert {fn.returns for fn in registered.values()} == {"RunResult"}
    assert harness.objects()["RunResult"] == {"report": "Directory", "exit_code": "INTEGER"}


@pytest.mark.parametrize("code", [0, 1, 2, 137, 143, 255])
@pytest.mark.parametrize("verb", ["ci", "smoke", "test"])
def test_a_failed_or_killed_stage_still_returns_report_and_exit_code(
    harness: Harness, plan: ModuleType, verb: str, code: int
) -> None:
    harness.exit_code = code
    run = harness.call(verb)
    assert run.result.exit_code == code
    (leaf,) = run.of("report")
    assert leaf.arg == f"/runs/{verb}/{plan.EXIT_CODE_FILE}"
    final = run.final[-1]
    # The CLI under the reporting shell; the engine's default expectation (exit 0): 128-191 never raise.
    assert final.name == "withExec" and "expect" not in final.args
    assert final.args["args"][:5] == ["sh", "-c", plan.REPORT_SH, "report", f"/runs/{verb}"]
    assert final.args["args"][5:8] == [".venv/bin/python", "-m", "pipeline"]
    report = chain(run.result.report)
    assert report[: len(run.final)] == run.final and report[len(run.final)].args == {"path": f"/runs/{verb}"}


@pytest.mark.parametrize(
    ("cli", "code"),
    [
        ("true", 0),
        ("exit 3", 3),  # before creating its run directory
        ('mkdir -p "$RUN" && echo "{}" > "$RUN/report.json"; exit 1', 1),
        ("kill -KILL $$", 137),  # OOM-killed: the engine fails 128-191 even with ReturnType.ANY
        ("kill -TERM $$", 143),
    ],
)
def test_report_shell_always_leaves_run_dir_and_exit_code_and_exits_0(
    plan: ModuleType, tmp_path: Path, cli: str, code: int
) -> None:
    import os
    import subprocess

    run_dir = tmp_path / "runs" / "ci"
    proc = subprocess.run(
        ["sh", "-c", plan.REPORT_SH, "report", str(run_dir), "sh", "-c", cli],
        env={**os.environ, "RUN": str(run_dir)},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert (run_dir / plan.EXIT_CODE_FILE).read_text() == f"{code}\n"
    if "report.json" in cli:
        assert (run_dir / "report.json").is_file()


# 9. Setup: lock files first, the toolchain, THEN the source; the upload leaves out what is ignored anywhere.


@pytest.mark.parametrize("verb", VERBS)
def test_dependencies_and_tools_are_installed_before_the_source_arrives(
    harness: Harness, plan: ModuleType, verb: str
) -> None:
    final = harness.call(verb, **REQUIRED.get(verb, {})).final
    (source,) = [i for i, c in enumerate(final) if c.name == "withDirectory" and c.args["path"] == plan.WORKDIR]
    setup = ("apt-get", "uv==", "--no-install-project", "pipeline.runtime.tools")
    late = [c for c in final[source:] if c.name == "withExec" and any(s in " ".join(c.args["args"]) for s in setup)]
    assert not late, f"{verb}: setup after the source, rerun by every commit: {late}"
    before, tools = final[:source], bool(plan.TOOLS.get(verb))
    # Before the source: only the lock files (and the tools installer), each straight from the source.
    files = [*plan.LOCK_FILES, *(plan.TOOLS_FILES if tools else ())]
    copies = [c for c in before if c.name == "withFile"]
    assert [c.args["path"] for c in copies] == [f"{plan.WORKDIR}/{f}" for f in files]
    for c, f in zip(copies, files, strict=True):
        assert [x.args["path"] for x in chain(c.args["source"]) if x.name == "file"] == [f]
    # apt, uv, the locked dependencies (after the lock files only), the tools (after their installer).
    steps = [
        (c.name, " ".join(c.args["args"]) if c.name == "withExec" else c.args["path"])
        for c in before
        if c.name in ("withExec", "withFile")
    ]
    want = [
        ("withExec", "apt-get install"),
        ("withExec", f"uv=={plan.UV_VERSION}"),
        *(("withFile", f"{plan.WORKDIR}/{f}") for f in plan.LOCK_FILES),
        ("withExec", "uv sync --all-extras --frozen --no-install-project"),
        *(("withFile", f"{plan.WORKDIR}/{f}") for f in (plan.TOOLS_FILES if tools else ())),
        *([("withExec", "pipeline.runtime.tools ensure")] if tools else []),
    ]
    assert len(steps) == len(want) and all(k == wk and w in v for (k, v), (wk, w) in zip(steps, want, strict=True))
    # After the source: the project itself (seconds), then the per-call part.
    after = final[source + 1]
    assert after.name == "withExec" and after.args["args"] == ["uv", "sync", "--all-extras", "--frozen"]


def test_the_tools_installer_needs_only_the_files_copied_before_it(plan: ModuleType) -> None:
    import ast

    tree = ast.parse((REPO / "pipeline" / "runtime" / "tools.py").read_text())
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m.split(".")[0] in ("pipeline", "app", "loadtests")}
    assert all((REPO / f).is_file() for f in (*plan.TOOLS_FILES, *plan.LOCK_FILES))


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """moby/patternmatcher's translation (what the engine's internal/fsutil/filter.go uses): `**/` any number of
    directories, `*` and `?` within one path element, matched against the whole relative path."""
    import posixpath

    out, i, pattern = "^", 0, posixpath.normpath(pattern)
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
            continue
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        out += "[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch)
        i += 1
    return re.compile(out + "$")


def excluded(path: str, patterns: list[str]) -> bool:
    """Whether the engine leaves `path` out: it or a parent directory matches (patternmatcher.MatchesOrParentMatches)."""
    parts = path.split("/")
    out = False
    for pattern in patterns:
        rx = _pattern_regex(pattern.removeprefix("!"))
        if any(rx.match("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            out = not pattern.startswith("!")
    return out


def test_pattern_emulation_matches_at_the_root_without_double_star() -> None:
    assert excluded(".venv/bin/python", [".venv"]) and not excluded("pipeline/dagger/.venv/bin/python", [".venv"])
    assert excluded("pipeline/dagger/.venv/bin/python", ["**/.venv"]) and excluded(".venv/x", ["**/.venv"])
    assert excluded("a/b/c.pyc", ["**/*.pyc"]) and not excluded("a/b/c.py", ["**/*.pyc"])


def test_source_upload_leaves_out_ignored_dirs_at_every_depth(plan: ModuleType) -> None:
    import subprocess
    import typing

    import dagger

    main = importlib.import_module("pipeline_dagger.main")
    hint = typing.get_type_hints(main.Pipeline, include_extras=True)["source"]
    (ignore,) = [m for m in hint.__metadata__ if isinstance(m, dagger.Ignore)]
    patterns = list(ignore.patterns)
    for path in (
        "pipeline/dagger/.venv/bin/python",
        "pipeline/dagger/sdk/pyproject.toml",
        "tests/.pytest_cache/v/cache/nodeids",
        "app/build/lib/x.py",
        "pipeline/dist/x.whl",
        "dist/llm_delivery-0.1.0.tar.gz",
        "sub/.cache/pipeline/index.json",
        "pipeline/stages/__pycache__/ci.cpython-311.pyc",
        "llm_delivery.egg-info/PKG-INFO",
        ".venv/bin/python",
        ".runs/ci/report.json",
    ):
        assert excluded(path, patterns), path
    # Every .gitignore entry, at the depth git applies it.
    for gitignore in (REPO / ".gitignore", REPO / "pipeline" / "dagger" / ".gitignore"):
        base = gitignore.parent.relative_to(REPO).as_posix()
        for line in gitignore.read_text().splitlines():
            entry = line.split("#")[0].strip()
            if not entry or entry.startswith("!"):
                continue
            name = entry.strip("/").replace("*", "x")
            nested = f"{base}/{name}/f" if entry.startswith("/") else f"{base}/a/b/{name}/f"
            assert excluded(nested.removeprefix("./"), patterns), f"{gitignore.name}: {entry} ({nested})"
    # ... and nothing git tracks.
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert tracked and not [f for f in tracked if excluded(f, patterns)]
    assert patterns == plan.SOURCE_IGNORE


# 10. A secret's name says nothing about its value.


def test_random_secrets_are_named_without_any_part_of_their_value(harness: Harness) -> None:
    gateway = harness.call("smoke", **DIGESTS, gpu=True).services()["gateway"]
    secret = secret_env(gateway)["GATEWAY_AUDIT_HASH_KEY"]
    (made,) = [c.args for c in chain(secret) if c.name == "setSecret"]
    name, value = made["name"], made["plaintext"]
    # Not one 6-character run of the value (two random hex strings share one with odds of ~1e-5).
    assert not [value[i : i + 6] for i in range(len(value) - 5) if value[i : i + 6] in name], (name, value)
    prefix, suffix = name.rsplit("-", 1)
    assert prefix == "gateway-GATEWAY_AUDIT_HASH_KEY" and len(value) == 48 and len(suffix) == 16
    # The suffix is random per call, not derived from the value either.
    again = chain(
        secret_env(harness.call("smoke", **DIGESTS, gpu=True).services()["gateway"])["GATEWAY_AUDIT_HASH_KEY"]
    )
    assert next(c.args["name"] for c in again if c.name == "setSecret") != name
