"""Engine detection and the project's podman config: everything the check consults is injected."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path

import pytest

from pipeline.runtime import engine

BINARIES = {"podman": "/x/podman", "runc": "/x/runc", "docker": "/x/docker"}


def which_of(*present: str):  # type: ignore[no-untyped-def]
    return lambda name: BINARIES[name] if name in present else None


def podman_ok(binary: str, env: Mapping[str, str]) -> tuple[bool, str]:
    assert Path(env["CONTAINERS_CONF"]).is_file()  # every podman call carries the project's config
    return True, "runc"


def podman_broken(binary: str, env: Mapping[str, str]) -> tuple[bool, str]:
    return False, "cannot set up namespace"


def test_podman_is_the_default_engine_with_the_projects_config(tmp_path: Path) -> None:
    st = engine.detect(environ={}, which=which_of("podman", "runc"), podman_works=podman_ok, cache=tmp_path)
    assert st.engine is not None and st.engine.kind == "podman" and st.engine.can_play_pods
    conf = Path(st.engine.env["CONTAINERS_CONF"])
    assert conf == tmp_path / "containers" / "containers.conf"
    text = conf.read_text()
    assert 'runtime = "runc"' in text and "nofile=" in text and "nproc=" in text


def test_ulimits_never_exceed_the_hard_limits() -> None:
    text = engine.containers_conf_text({"nofile": 1024, "nproc": 100_000})
    assert '"nofile=1024:1024"' in text and '"nproc=4096:4096"' in text


@pytest.mark.parametrize(
    ("present", "works", "reason"),
    [
        ((), podman_ok, "podman: not installed"),
        (("podman",), podman_ok, "no runc runtime"),
        (("podman", "runc"), podman_broken, "cannot set up namespace"),
    ],
)
def test_no_engine_says_why(tmp_path: Path, present: tuple[str, ...], works, reason: str) -> None:  # type: ignore[no-untyped-def]
    st = engine.detect(environ={}, which=which_of(*present), default_sockets=(), podman_works=works, cache=tmp_path)
    assert st.engine is None and not st.up
    assert reason in st.reason and "no container engine reachable" in st.reason


def test_docker_only_where_its_socket_answers_and_a_cli_exists(tmp_path: Path) -> None:
    env = {"PIPELINE_ENGINE": "docker", "DOCKER_HOST": f"unix://{tmp_path}/nope.sock"}
    st = engine.detect(environ=env, which=which_of("docker"), default_sockets=(), cache=tmp_path)
    assert st.engine is None and "nope.sock" in st.reason
    (tmp_path / "nope.sock").write_text("")  # a file there, but nothing listening, is still no engine
    assert not engine.detect(environ=env, which=which_of("docker"), default_sockets=(), cache=tmp_path).up
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(tmp_path / "engine.sock"))
        listener.listen(1)
        sockets = (f"unix://{tmp_path}/engine.sock",)
        env = {"PIPELINE_ENGINE": "docker"}
        st = engine.detect(environ=env, which=which_of("docker"), default_sockets=sockets, cache=tmp_path)
        assert st.engine is not None and st.engine.kind == "docker" and not st.engine.can_play_pods
        assert st.engine.env["DOCKER_BUILDKIT"] == "1"
        no_cli = engine.detect(environ=env, which=which_of(), default_sockets=sockets, cache=tmp_path)
        assert not no_cli.up and "no docker CLI" in no_cli.reason


def test_a_dagger_session_builds_for_itself(tmp_path: Path) -> None:
    st = engine.detect(environ={"DAGGER_SESSION_PORT": "1234"}, which=which_of(), cache=tmp_path)
    assert st.engine is not None and st.engine.kind == "dagger"


def test_unknown_engine_is_named(tmp_path: Path) -> None:
    st = engine.detect(environ={"PIPELINE_ENGINE": "containerd"}, which=which_of(), cache=tmp_path)
    assert not st.up and "containerd" in st.reason
