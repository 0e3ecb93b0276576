"""`dagger call eval`: the model gate as a Dagger function, driven through the SDK offline (dagger_harness).

Its options are the CLI verb's (`eval [--candidate DIR|REF] [--baseline DIR|REF | --env ENV]`, checked with
every other verb in test_dagger_module.py); here: what the function sends to the engine. A REF is pulled
by the engine (the artifact's /model directory), a host directory is mounted as given; either reaches the
stage as a path. Without a baseline, the model the env pins (release.yaml as the product writes it) is
pulled by the engine too: the function's container has no engine for the stage's own pull. The stage runs
in a container prepared for vLLM's CPU build exactly like smoke's.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pipeline.gitops.promotion import pin_updates
from pipeline.gitops.release import Release
from pipeline.gitops.repo import edit_yaml
from tests.helpers.dagger_harness import MODULE_SRC, Call, Harness, chain, env, names

REPO = Path(__file__).resolve().parents[2]
MODEL_REF = "registry.example.com/llm/model@sha256:" + "d" * 64
BASE_REF = "registry.example.com/llm/model@sha256:" + "e" * 64


@pytest.fixture
def plan() -> Iterator[ModuleType]:
    import sys

    sys.path.insert(0, str(MODULE_SRC))
    try:
        yield importlib.import_module("pipeline_dagger.plan")
    finally:
        sys.path.remove(str(MODULE_SRC))


def mounted_dirs(final: list[Call]) -> dict[str, list[Call]]:
    return {c.args["path"]: chain(c.args["source"]) for c in final if c.name == "withMountedDirectory"}


def flag(cmd: list[str], name: str) -> str | None:
    return cmd[cmd.index(name) + 1] if name in cmd else None


def test_eval_registers_never_cached_with_directories_and_secrets(harness: Harness) -> None:
    fn = harness.register()["eval"]
    assert fn.description and "\n" not in fn.description.strip()
    assert fn.cache_policy == "Never"  # a blocked verdict is a returned result: never served again
    assert fn.args["candidate_dir"] == fn.args["baseline_dir"] == "Directory?"
    assert fn.args["candidate"] == fn.args["baseline"] == "STRING?"
    assert fn.args["registry_password"] == "Secret?"


def test_an_artifact_ref_is_pulled_by_the_engine_and_reaches_the_stage_as_a_directory(harness: Harness) -> None:
    run = harness.call("eval", candidate=MODEL_REF, baseline=BASE_REF, registry_username="ci", registry_password="pw")
    dirs = mounted_dirs(run.final)
    for dest, ref in (("candidate", MODEL_REF), ("baseline", BASE_REF)):
        pulled = dirs[f"/inputs/{dest}"]
        auth = next(c for c in pulled if c.name == "withRegistryAuth")
        assert auth.args["address"] == "registry.example.com" and auth.args["username"] == "ci"
        assert [c.args for c in pulled if c.name == "from"] == [{"address": ref}]
        assert pulled[-1].name == "directory" and pulled[-1].args["path"] == "/model"
    cmd = run.execs()[-1]
    assert cmd[cmd.index("-m") + 1 :][:4] == ["pipeline", "--run-dir", "/runs/eval", "eval"]
    assert flag(cmd, "--candidate") == "/inputs/candidate" and flag(cmd, "--baseline") == "/inputs/baseline"
    assert MODEL_REF not in " ".join(cmd)  # the stage needs no engine: it gets the pulled directory


def test_model_path_is_where_the_artifact_keeps_the_model(plan: ModuleType) -> None:
    from pipeline.models import artifact

    assert importlib.import_module("pipeline_dagger.eval_inputs").MODEL_PATH == artifact.MODEL_PATH


def test_a_host_directory_is_mounted_as_given(harness: Harness) -> None:
    run = harness.call("eval", candidate_dir="cand-dir-id", baseline_dir="base-dir-id")
    dirs = mounted_dirs(run.final)
    assert set(dirs) == {"/inputs/candidate", "/inputs/baseline"}  # mounted once each, under the CLI flag's name
    assert any(c.args.get("id") == "cand-dir-id" for c in dirs["/inputs/candidate"])
    assert any(c.args.get("id") == "base-dir-id" for c in dirs["/inputs/baseline"])
    assert "from" not in names(dirs["/inputs/candidate"])
    cmd = run.execs()[-1]
    assert flag(cmd, "--candidate") == "/inputs/candidate" and flag(cmd, "--baseline") == "/inputs/baseline"
    assert "--env" not in cmd and not any("_dir" in a for a in cmd)


def test_no_candidate_is_the_stand_in_and_an_env_without_a_model_artifact_passes_through(harness: Harness) -> None:
    """The committed envs pin no model artifact yet: the stage gives a floor-only verdict for them."""
    run = harness.call("eval", env="prod", timeout=900.0, no_cache=True)
    assert mounted_dirs(run.final) == {}
    cmd = run.execs()[-1]
    assert flag(cmd, "--env") == "prod" and flag(cmd, "--timeout") == "900.0" and "--no-cache" in cmd
    assert "--candidate" not in cmd and "--baseline" not in cmd
    read = [c.args["path"] for leaf in run.of("contents") for c in leaf.chain if c.name == "file"]
    assert read == ["platform.yaml", "environments/prod/release.yaml"]


def release_yaml(rel: Release, tmp_path: Path) -> str:
    """environments/prod/release.yaml as a promotion of `rel` writes it (pipeline.gitops.promotion.pin_updates
    applied to the committed file by the round-trip editor)."""
    path = tmp_path / "release.yaml"
    path.write_text((REPO / "environments" / "prod" / "release.yaml").read_text())
    assert edit_yaml(path, pin_updates(rel), "release.yaml")
    return path.read_text()


def pinned_release() -> Release:
    digest = "sha256:" + "f" * 64
    return Release(
        id="0.2.0+gabcdef0",
        commit="2" * 40,
        chart_version="0.2.0",
        gateway_digest=digest,
        vllm_digest=digest,
        model_revision="r2",
        model_repository="registry.example.com/llm/model",
        model_digest=BASE_REF.split("@", 1)[1],
        model_content_digest="sha256:" + "9" * 64,
    )


@pytest.mark.parametrize("given_env", ["prod", None])
def test_the_model_an_env_pins_is_pulled_by_the_engine_as_the_baseline(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, given_env: str | None
) -> None:
    import dagger

    env_name = given_env or "dev"  # platform.yaml's first env: the CLI's default
    pinned = release_yaml(pinned_release(), tmp_path)
    real = dagger.File.contents

    async def contents(file: Any, **kw: Any) -> str:
        paths = [c.args["path"] for c in chain(file) if c.name == "file"]
        if paths == [f"environments/{env_name}/release.yaml"]:
            return pinned
        return await real(file, **kw)

    monkeypatch.setattr(dagger.File, "contents", contents)
    inputs = {"env": given_env} if given_env else {}
    run = harness.call("eval", candidate=MODEL_REF, **inputs)
    pulled = mounted_dirs(run.final)["/inputs/baseline"]
    assert [c.args for c in pulled if c.name == "from"] == [{"address": BASE_REF}]
    cmd = run.execs()[-1]
    assert flag(cmd, "--baseline") == "/inputs/baseline" and "--env" not in cmd


def test_an_unknown_env_is_refused_naming_the_envs(harness: Harness) -> None:
    with pytest.raises(Exception, match=r"env 'qa' is not an environment of platform.yaml \(dev, staging, prod\)"):
        harness.call("eval", env="qa")


def test_the_release_reader_refuses_what_it_does_not_understand(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(MODULE_SRC))
    try:
        eval_inputs = importlib.import_module("pipeline_dagger.eval_inputs")
    finally:
        sys.path.remove(str(MODULE_SRC))
    text = release_yaml(pinned_release(), tmp_path)
    assert eval_inputs.env_model_artifact(text, "prod") == BASE_REF
    with pytest.raises(ValueError, match=r"environments/prod/release.yaml:3: not a `key: value` line"):
        eval_inputs.env_model_artifact("vllm:\n  model:\n    - artifact\n", "prod")
    bad = text.replace(BASE_REF.split("@", 1)[1], "latest")
    with pytest.raises(ValueError, match=r"vllm\.model\.artifact pins"):
        eval_inputs.env_model_artifact(bad, "prod")


def test_eval_runs_in_the_container_smoke_prepares_for_vllm_cpu(harness: Harness) -> None:
    """Same system packages for vLLM's CPU build and torch's CPU index as smoke's vLLM-in-container run."""

    def vllm_setup(final: list[Call]) -> tuple[str, str | None]:
        apt = next(" ".join(c.args["args"]) for c in final if c.name == "withExec" and "apt-get" in str(c.args))
        packages = set(re.sub(r".*--no-install-recommends ", "", apt).split())
        return " ".join(sorted(packages - {"openssh-client"})), env(final).get("PIP_EXTRA_INDEX_URL")

    smoke = harness.call("smoke").final
    got = vllm_setup(harness.call("eval", candidate=MODEL_REF).final)
    assert got == vllm_setup(smoke)
    assert "libnuma1" in got[0] and got[1] == "https://download.pytorch.org/whl/cpu"


def test_every_call_runs_again_after_the_cached_setup(harness: Harness) -> None:
    first, second = (harness.call("eval", candidate=MODEL_REF).final for _ in range(2))
    differ = next(i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b)
    assert first[differ].name == "withEnvVariable" and first[differ].args["name"] == "PIPELINE_CALL_NONCE"
    setup = [i for i, c in enumerate(first) if c.name == "withExec" and "uv sync" in " ".join(c.args["args"])]
    assert differ > max(setup)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"candidate": MODEL_REF, "candidate_dir": "d-id"}, "give candidate .* or candidate_dir .*, not both"),
        ({"candidate": "registry.example.com/llm/model:latest"}, "candidate must be a model artifact pinned by digest"),
        ({"candidate": MODEL_REF, "baseline_dir": "b-id", "env": "prod"}, "give baseline .* or env, not both"),
    ],
)
def test_bad_model_arguments_are_refused_before_anything_runs(
    harness: Harness, inputs: dict[str, str], message: str
) -> None:
    with pytest.raises(Exception, match=message):
        harness.call("eval", **inputs)
    assert not harness.leaves
