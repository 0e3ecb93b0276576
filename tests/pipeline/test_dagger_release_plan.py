"""Offline plans of Dagger `smoke`/`loadtest` with release images: services, GPUs, claimed digests."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
GW = "sha256:" + "a" * 64
VLLM = "sha256:" + "b" * 64
REFS = {
    "gateway_image": f"registry.example.com/llm/gateway@{GW}",
    "vllm_image": f"registry.example.com/llm/vllm@{VLLM}",
}


@pytest.fixture(scope="module")
def plan() -> Iterator[ModuleType]:
    sys.path.insert(0, str(REPO / "pipeline" / "dagger" / "src"))
    try:
        yield importlib.import_module("pipeline_dagger.plan")
    finally:
        sys.path.remove(str(REPO / "pipeline" / "dagger" / "src"))


def contract(plan: Any) -> Any:
    """pipeline/runtime/contract.json, as the Dagger functions read it from their source directory."""
    return plan.parse_contract((REPO / plan.CONTRACT_FILE).read_text())


def mkplan(plan: Any, verb: str, params: dict[str, Any]) -> Any:
    return plan.plan(verb, params, contract=contract(plan))


def parse(p: Any) -> Any:
    cli = importlib.import_module("pipeline.cli")
    return cli.build_parser(cli.discover()).parse_args(p.command[3:])


def model(plan: Any, name: str = "org/llama") -> Any:
    return plan.Model(name, "0" * 40)


@pytest.mark.parametrize("gpu", [False, True])
def test_smoke_with_image_refs_runs_both_images_and_claims_what_ran(plan: Any, gpu: bool) -> None:
    p = mkplan(plan, "smoke", {"model": model(plan), "gpu": gpu, "vllm_args": ["--max-model-len=4096"], **REFS})
    assert list(p.services) == ["vllm", "gateway"]  # dependency order: the gateway binds vllm
    vllm, gateway = p.services["vllm"], p.services["gateway"]
    # The CUDA image with GPUs; without, the vllm-cpu image built from the source.
    assert (vllm.image, vllm.build_image) == ((REFS["vllm_image"], "") if gpu else ("", "vllm-cpu"))
    assert plan.IMAGE_BUILDS[vllm.build_image or "vllm"].target == "vllm"
    assert vllm.port == plan.VLLM_PORT and vllm.gpu is gpu
    assert "--served-model-name=org/llama" in vllm.args and f"--revision={'0' * 40}" in vllm.args
    assert vllm.args[-1] == "--max-model-len=4096"
    assert vllm.secret_env == {"HF_TOKEN": "hf_token"} and vllm.caches == {plan.MODEL_CACHE: plan.MODEL_CACHE_VOLUME}
    assert vllm.health == plan.VLLM_HEALTHCHECK and vllm.ready_timeout == plan.READY_TIMEOUT_S
    assert gateway.image == REFS["gateway_image"] and gateway.needs == ("vllm",) and not gateway.gpu
    assert gateway.env["GATEWAY_UPSTREAM_URL"] == plan.VLLM_URL
    # Only the public half of the dev key pair (and the RBAC file) reaches the gateway.
    assert sorted(gateway.files.values()) == [f"{plan.SMOKE_KEYS}/jwks.json", plan.SMOKE_RBAC]
    assert gateway.env["GATEWAY_JWT_JWKS"] in gateway.files and gateway.env["GATEWAY_RBAC_FILE"] in gateway.files
    assert gateway.random_env == ("GATEWAY_AUDIT_HASH_KEY",)
    args = parse(p)
    assert args.target == plan.VLLM_URL and args.gateway_url == plan.GATEWAY_URL
    assert str(args.token_file) == plan.SMOKE_TOKEN
    assert args.subject_digests == ({"gateway": GW, "vllm": VLLM} if gpu else {"gateway": GW})
    assert args.model == "org/llama"
    per_call = " ".join(" ".join(step) for step in p.per_call)
    assert f"keygen --out {plan.SMOKE_KEYS}" in per_call and f"> {plan.SMOKE_TOKEN}" in per_call
    assert not any("keygen" in " ".join(step.argv) for step in p.setup)  # setup stays cacheable


def test_digests_and_registry_name_the_same_images(plan: Any) -> None:
    by_digest = mkplan(
        plan,
        "smoke",
        {"registry": "registry.example.com/llm", "gateway_digest": GW, "vllm_digest": VLLM, "model": model(plan)},
    )
    by_ref = mkplan(plan, "smoke", {**REFS, "model": model(plan)})
    assert by_digest.command == by_ref.command
    assert {a: s.image for a, s in by_digest.services.items()} == {a: s.image for a, s in by_ref.services.items()}


def test_loadtest_with_image_refs_loads_the_gateway_service(plan: Any) -> None:
    p = mkplan(plan, "loadtest", {"env": "dev", "model": model(plan), "gpu": True, **REFS})
    args = parse(p)
    assert args.target == plan.GATEWAY_URL and str(args.token_file) == plan.SMOKE_TOKEN
    assert args.subject_digests == {"gateway": GW, "vllm": VLLM}
    assert set(p.services) == {"vllm", "gateway"} and p.services["vllm"].gpu


@pytest.mark.parametrize("verb", ["smoke", "loadtest"])
def test_without_image_refs_no_services_and_no_digests(plan: Any, verb: str) -> None:
    p = mkplan(plan, verb, {"gpu": True, "registry": "registry.example.com/llm"})
    assert p.services == {}
    assert "--subject-digests" not in p.command and "--gateway-url" not in p.command
    assert not any("keygen" in step.argv for step in p.setup)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"gateway_image": REFS["gateway_image"]}, "both"),
        ({**REFS, "gateway_image": "registry.example.com/llm/gateway:v1"}, "sha256"),
        ({"gateway_digest": GW, "vllm_digest": VLLM}, "registry"),
        ({**REFS, "subject_digests": f"vllm={VLLM}"}, "derived"),
        ({**REFS, "target": "http://elsewhere:8000"}, "target"),
    ],
)
def test_inconsistent_image_arguments_are_refused(plan: Any, params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mkplan(plan, "smoke", {"model": model(plan), **params})


def test_gateway_settings_match_the_local_stack(plan: Any) -> None:
    from pipeline.runtime import contract as shared
    from pipeline.runtime import local_stack as stack

    c = contract(plan)
    # One definition (pipeline/runtime/contract.json) read by both sides.
    assert (c.issuer, c.audience) == (stack.ISSUER, stack.AUDIENCE) == (shared.ISSUER, shared.AUDIENCE)
    assert c.release_targets == shared.RELEASE_TARGETS == plan.RELEASE_TARGETS
    assert (
        (c.vllm_cpu, c.tool_targets) == (shared.VLLM_CPU_TARGET, shared.TOOL_TARGETS) == (plan.VLLM_CPU, ("pipeline",))
    )
    refs = {"gateway": "r/g@" + GW, "vllm": "r/v@" + VLLM}
    env = plan.release_services(refs, model=model(plan), gpu=False, vllm_args=[], contract=c)["gateway"].env
    from app.gateway.tokens import DevKeys

    keys = DevKeys(private_key=Path("/k/private.pem"), jwks=Path("/k/jwks.json"), kid="dev", alg="ES256")
    local = stack.gateway_settings(Path("/w"), keys, Path("/r"), "http://u", None)
    # Every setting the local stack gives its gateway, the service gets too (the hash key as a secret).
    assert set(local) == {*env, "GATEWAY_AUDIT_HASH_KEY", "GATEWAY_AUDIT_LOG"}


def test_rbac_script_writes_the_local_stack_rbac(plan: Any, tmp_path: Path) -> None:
    import json
    import subprocess

    from pipeline.runtime import local_stack as stack

    out = subprocess.run([sys.executable, "-c", plan.RBAC_SCRIPT, "llama"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == stack.default_rbac("llama")


# -- ci: the release's images when it published (or was given) digests ------------------------
REGISTRY = "registry.example.com/llm"
# What Dagger `ci` plans after publishing: `_release_digests` put the registry digests into its params.
PUBLISHED = {"registry": REGISTRY, "gateway_digest": GW, "vllm_digest": VLLM}


def ci_stage_argv(plan: Any, p: Any) -> dict[str, Any]:
    """ci's command → {stage: that stage's parsed --stage-args} (the way ci itself parses them)."""
    from pipeline.stages import ci, loadtest, smoke

    args = parse(p)
    assert args.verb == "ci"
    per_stage = ci.parse_stage_args(args.stage_args)
    out: dict[str, Any] = {"ci": args, "raw": per_stage}
    for name, mod in (("smoke", smoke), ("loadtest", loadtest)):
        if name in per_stage:
            out[name] = ci._parse_defaults(mod, name, per_stage[name])
    return out


@pytest.mark.parametrize("gpu", [False, True])
def test_ci_with_published_digests_runs_smoke_and_loadtest_against_the_release_images(plan: Any, gpu: bool) -> None:
    params = {
        **PUBLISHED,
        "gpu": gpu,
        "model": model(plan),
        "vllm_args": ["--max-num-seqs=4"],
        "stage_args": ["test=-q"],
    }
    p = mkplan(plan, "ci", params)
    # The same services smoke/loadtest bind, from the same helper.
    want = plan.release_services(
        {"gateway": f"{REGISTRY}/gateway@{GW}", "vllm": f"{REGISTRY}/vllm@{VLLM}"},
        model=model(plan),
        gpu=gpu,
        vllm_args=["--max-num-seqs=4"],
        contract=contract(plan),
    )
    assert list(p.services) == ["vllm", "gateway"] and p.services == want
    assert p.services["vllm"].gpu is gpu and not p.services["gateway"].gpu
    assert p.services["vllm"].secret_env == {"HF_TOKEN": "hf_token"}
    got = ci_stage_argv(plan, p)
    # The build stage pins the same digests the smoke/loadtest evidence claims.
    assert (got["ci"].gateway_digest, got["ci"].vllm_digest) == (GW, VLLM)
    assert got["raw"]["test"] == ["-q"]  # the caller's stage-args are kept
    smoke, load = got["smoke"], got["loadtest"]
    assert smoke.target == plan.VLLM_URL and smoke.gateway_url == plan.GATEWAY_URL
    assert load.target == plan.GATEWAY_URL
    # Without GPUs the CUDA vllm image did not run: the loadtest says what served instead (the policy
    # refuses a gateway gate naming neither); with GPUs it claims the vllm digest itself.
    assert (load.vllm_stand_in is None) if gpu else load.vllm_stand_in.startswith("vLLM CPU build ")
    for stage in (smoke, load):
        assert stage.subject_digests == ({"gateway": GW, "vllm": VLLM} if gpu else {"gateway": GW})
        assert str(stage.token_file) == plan.SMOKE_TOKEN and stage.model == "org/llama"
    per_call = " ".join(" ".join(step) for step in p.per_call)
    assert f"keygen --out {plan.SMOKE_KEYS}" in per_call and f"> {plan.SMOKE_TOKEN}" in per_call
    assert "--sub dagger-ci" in per_call and f"> {plan.SMOKE_RBAC}" in per_call


@pytest.mark.parametrize(
    "params",
    [
        {},  # no registry: nothing published
        {"registry": REGISTRY},  # a registry but no credentials: built, not published, no digests
        {"gateway_digest": GW, "vllm_digest": VLLM},  # digests for the build pins, but no registry to pull from
        {**PUBLISHED, "skip": ["smoke", "loadtest"]},  # nothing would use the services
        {**PUBLISHED, "only": ["test", "build"]},
    ],
)
@pytest.mark.parametrize("gpu", [False, True])
def test_ci_without_release_images_binds_nothing_and_claims_nothing(
    plan: Any, params: dict[str, Any], gpu: bool
) -> None:
    p = mkplan(plan, "ci", {**params, "gpu": gpu, "model": model(plan)})
    assert p.services == {}
    assert not any("--subject-digests" in arg or "--gateway-url" in arg for arg in p.command)
    assert not any("keygen" in step.argv for step in p.setup)
    got = ci_stage_argv(plan, p)
    assert "smoke" not in got["raw"] and "loadtest" not in got["raw"]


@pytest.mark.parametrize("item", ["smoke=--target http://elsewhere:8000", "loadtest=--subject-digests=vllm=x"])
def test_ci_refuses_stage_args_that_fight_the_release_services(plan: Any, item: str) -> None:
    with pytest.raises(ValueError, match="release services"):
        mkplan(plan, "ci", {**PUBLISHED, "model": model(plan), "stage_args": [item]})
    # Other flags of those stages stay the caller's.
    p = mkplan(plan, "ci", {**PUBLISHED, "model": model(plan), "stage_args": ["smoke=--timeout 900"]})
    assert ci_stage_argv(plan, p)["smoke"].timeout == 900.0
