"""The Dagger module driven through the SDK's own registration and invocation, offline.

Each test calls a function the way the engine does (`get_structured_result` with raw inputs) with
only the awaited leaves faked (tests/helpers/dagger_harness.py) and asserts on the chains it builds.
"""

from __future__ import annotations

import importlib
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
    chain,
    env,
    image_of,
    names,
    secret_env,
    secret_id,
    service_args,
)

REPO = Path(__file__).resolve().parents[2]
VERBS = ("test", "build", "scan", "render", "smoke", "loadtest", "promote", "rollback", "ci")
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
    """Index of the last setup exec: apt, uv and the tools install."""
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


def test_side_effecting_functions_are_never_cached(harness: Harness, plan: ModuleType) -> None:
    registered = harness.register()
    assert {n for n, fn in registered.items() if fn.cache_policy == "Never"} == set(plan.NEVER_CACHED)
    assert {"build", "promote", "rollback", "ci", "smoke", "loadtest"} <= plan.NEVER_CACHED
    for name in set(VERBS) - plan.NEVER_CACHED:
        assert registered[name].cache_policy is None, f"{name}: pure of its inputs, Dagger's default cache"


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


@pytest.mark.parametrize("verb", ["test", "render"])
def test_pure_functions_keep_their_exec_cache(harness: Harness, verb: str) -> None:
    assert harness.call(verb).final == harness.call(verb).final


# -- the vLLM services: a real model, HF_TOKEN, a model cache, GPUs for the CUDA image ---------------


VLLM_CASES = {
    "smoke --gpu (source-built)": ("smoke", {"gpu": True}),
    "smoke image refs --gpu": ("smoke", {**DIGESTS, "gpu": True}),
    "smoke image refs, no gpu": ("smoke", {**DIGESTS}),
    "loadtest image refs --gpu": ("loadtest", {**DIGESTS, "gpu": True}),
    "loadtest image refs, no gpu": ("loadtest", {**DIGESTS}),
    "ci with credentials": ("ci", {**CREDS}),
    "ci with credentials --gpu": ("ci", {**CREDS, "gpu": True}),
    "ci --gpu without a registry": ("ci", {"gpu": True}),
    "ci given digests": ("ci", {**DIGESTS}),
    "ci given digests + vllm-cpu": ("ci", {**DIGESTS, "vllm_cpu_digest": CPU}),
}


@pytest.mark.parametrize("case", VLLM_CASES)
def test_every_vllm_service_serves_the_release_model_with_token_and_cache(harness: Harness, case: str) -> None:
    verb, inputs = VLLM_CASES[case]
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
    cuda = image == "build:vllm" or f"{REGISTRY}/vllm@" in image
    assert cuda == gpu == bool(inputs.get("gpu")), (image, gpu)
    if not gpu:
        assert image == "build:vllm-cpu" or f"/vllm-cpu@{CPU}" in image or "/vllm-cpu@sha256:" in image


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
    (new_file,) = [c for c in chain(run.result) if c.name == "withNewFile" and c.args["path"] == "published.env"]
    lines = dict(line.split("=", 1) for line in new_file.args["contents"].splitlines())
    assert set(lines) == {"gateway_digest", "vllm_digest", "vllm_cpu_digest", "pipeline_digest"}
    cmd = " ".join(run.execs()[-1])
    assert f"--gateway-digest {lines['gateway_digest']}" in cmd and f"--vllm-digest {lines['vllm_digest']}" in cmd
    assert len(published) == 4
    # Without credentials nothing is published: an empty file, images only built.
    run = harness.call("ci")
    (new_file,) = [c for c in chain(run.result) if c.name == "withNewFile" and c.args["path"] == "published.env"]
    assert new_file.args.get("contents", "") == "" and len(run.of("sync")) == 4 and not run.of("publish")
