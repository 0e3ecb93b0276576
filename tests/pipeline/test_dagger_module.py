"""The contract between the Dagger module and the CLI: every verb, its arguments derived from the
stage's own option definitions (names, types, defaults, host paths), the same CLI planned.

What the functions then build is tested through the SDK in test_dagger_functions.py."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import types
import typing
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
VERBS = ("test", "build", "scan", "render", "smoke", "loadtest", "promote", "rollback", "ci", "eval")


@pytest.fixture(scope="module")
def dagger_pkg() -> Any:
    sys.path.insert(0, str(REPO / "pipeline" / "dagger" / "src"))
    try:
        yield importlib.import_module("pipeline_dagger")
    finally:
        sys.path.remove(str(REPO / "pipeline" / "dagger" / "src"))


@pytest.fixture(scope="module")
def functions(dagger_pkg: Any) -> dict[str, Any]:
    obj = dagger_pkg.Pipeline.__dagger_module__._objects["Pipeline"]
    return dict(obj.functions)


def stage_parser(verb: str) -> argparse.ArgumentParser | None:
    try:
        mod: ModuleType = importlib.import_module(f"pipeline.stages.{verb}")
    except ModuleNotFoundError as exc:
        if exc.name == f"pipeline.stages.{verb}":
            return None
        raise
    parser = argparse.ArgumentParser()
    mod.add_arguments(parser)
    return parser


def test_dagger_json_points_into_pipeline() -> None:
    cfg = json.loads((REPO / "dagger.json").read_text())
    assert cfg["sdk"]["source"] == "python" and cfg["source"] == "pipeline/dagger"
    assert (REPO / cfg["source"] / "pyproject.toml").is_file()


def test_every_verb_has_a_documented_function(functions: dict[str, Any]) -> None:
    assert set(VERBS) <= set(functions)
    for name in VERBS:
        doc = functions[name].doc or ""
        assert doc and "\n" not in doc.strip(), f"{name}: one-line docstring"


@pytest.mark.parametrize("verb", VERBS)
def test_function_arguments_match_cli_flags(verb: str, functions: dict[str, Any], dagger_pkg: Any) -> None:
    plan = importlib.import_module("pipeline_dagger.plan")
    parser = stage_parser(verb)
    assert parser is not None, f"no CLI options for the Dagger function {verb}"
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    omitted = {dest for (v, dest) in plan.OMITTED if v == verb}
    params = set(functions[verb].parameters) - plan.infra_params(verb)
    assert params == set(actions) - omitted, (
        f"Dagger function `{verb}` args {sorted(params)} != CLI dests {sorted(set(actions) - omitted)}: "
        "add/remove the parameter in pipeline/dagger/src/pipeline_dagger/main.py (or list it in plan.OMITTED)"
    )
    actions = {d: a for d, a in actions.items() if d not in omitted}
    for dest, action in actions.items():
        assert plan.flag_for(verb, dest) in action.option_strings, f"{verb}: no flag for {dest}"
    hints = typing.get_type_hints(getattr(dagger_pkg.Pipeline, verb), include_extras=True)
    for dest, action in actions.items():
        got = _base_type(hints[dest])
        want = _cli_types(action, plan.HOST_INPUTS.get((verb, dest)))
        assert got in want, f"Dagger `{verb}` arg {dest}: {got} but the CLI parses {sorted(map(str, want))}"


@pytest.mark.parametrize("verb", VERBS)
def test_function_defaults_are_the_cli_defaults(verb: str, dagger_pkg: Any) -> None:
    """A Dagger default is the CLI's (None or [] = leave the flag out, the CLI default applies)."""
    import inspect

    plan = importlib.import_module("pipeline_dagger.plan")
    parser = stage_parser(verb)
    assert parser is not None
    sig = inspect.signature(getattr(dagger_pkg.Pipeline, verb))
    for action in parser._actions:
        if action.dest == "help" or (verb, action.dest) in plan.OMITTED:
            continue
        default = sig.parameters[action.dest].default
        if default is None or default is inspect.Parameter.empty:
            continue
        assert default == action.default, f"Dagger `{verb}` {action.dest}={default!r}, CLI default {action.default!r}"


@pytest.mark.parametrize("verb", VERBS)
def test_every_host_path_flag_is_a_file_or_directory(verb: str, dagger_pkg: Any) -> None:
    """A CLI flag parsed as a Path (or a file parser) names a host path: the function takes a File/Directory."""
    plan = importlib.import_module("pipeline_dagger.plan")
    parser = stage_parser(verb)
    assert parser is not None
    paths = {
        a.dest
        for a in parser._actions
        if a.type is Path or (getattr(a.type, "__name__", "").startswith("parse_") and "report" in a.dest)
    }
    declared = {dest for (v, dest) in plan.HOST_INPUTS if v == verb}
    omitted = {dest for (v, dest) in plan.OMITTED if v == verb}
    assert paths - omitted == declared, f"{verb}: Path flags {sorted(paths)} vs plan.HOST_INPUTS {sorted(declared)}"


def _base_type(hint: Any) -> Any:
    """`Annotated[X | None, ...]` → X; `list[str]` stays `list[str]`."""
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        assert len(args) == 1, hint
        hint = args[0]
    return hint


def _cli_types(action: argparse.Action, host_input: str | None = None) -> set[Any]:
    """Dagger types that carry what this argparse action parses (a host path: the File/Directory it names)."""
    import dagger

    if action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction):
        return {bool}
    scalar = action.type if isinstance(action.type, type) else str
    accepted: set[Any] = {scalar}
    if host_input:
        accepted = {dagger.File if host_input == "file" else dagger.Directory}
    elif scalar is str and action.dest == "crd_schemas":
        accepted = {dagger.Directory}  # mounted at CRD_SCHEMAS_MOUNT
    if isinstance(action, argparse._AppendAction):
        return {list[t] for t in accepted}
    return accepted


def test_type_comparison_catches_a_mismatch() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image", dest="images", action="append", default=[])
    actions = {a.dest: a for a in parser._actions}
    assert _base_type(typing.Annotated[str | None, "doc"]) not in _cli_types(actions["duration"])
    assert _base_type(typing.Annotated[float | None, "doc"]) in _cli_types(actions["duration"])
    assert _base_type(int) in _cli_types(actions["seed"]) and float not in _cli_types(actions["seed"])
    assert _base_type(list[str] | None) in _cli_types(actions["images"])
    import dagger

    assert _base_type(str | None) not in _cli_types(actions["images"], "file")
    assert _base_type(list[dagger.File] | None) in _cli_types(actions["images"], "file")


STAGE_TOOL_RE = re.compile(r"(?<![\w.])(?:tools\.)?(?:require|find)\(\s*[\"']([\w.-]+)[\"']\s*\)")


def stage_tools(verb: str) -> set[str]:
    """External tools a stage module asks for by name (`require("x")`, `find("x")`), not from the venv."""
    from pipeline.runtime import tools

    src = (REPO / "pipeline" / "stages" / f"{verb}.py").read_text()
    return {t for t in STAGE_TOOL_RE.findall(src) if t not in tools.VENV_TOOLS}


def test_stage_tool_scan_sees_require_calls() -> None:
    assert STAGE_TOOL_RE.findall('helm = require("helm")\np = tools.require("promtool")\nx = text.find("{")') == [
        "helm",
        "promtool",
    ]
    assert {"helm", "promtool"} <= stage_tools("render")


@pytest.mark.parametrize("verb", VERBS)
def test_every_tool_a_stage_requires_is_installed_by_its_plan(verb: str, dagger_pkg: Any) -> None:
    plan = importlib.import_module("pipeline_dagger.plan")
    from pipeline.stages import ci

    stages = ci.ORDER if verb == "ci" else (verb,)
    needed = set().union(*(stage_tools(s) for s in stages if (REPO / "pipeline" / "stages" / f"{s}.py").is_file()))
    listed = set(plan.TOOLS.get(verb, ()))
    assert needed <= listed, f"plan.TOOLS[{verb!r}] lacks {sorted(needed - listed)} (the stage requires them)"
    setup = [step.argv for step in plan.plan(verb, {"gitops_repo": "ssh://git@example.com/gitops.git"}).setup]
    if needed:
        assert [".venv/bin/python", "-m", "pipeline.runtime.tools", "ensure", *plan.TOOLS[verb]] in setup


def test_crd_schemas_and_gitops_key_are_mounted_not_flags(dagger_pkg: Any) -> None:
    plan = importlib.import_module("pipeline_dagger.plan")
    cli = importlib.import_module("pipeline.cli")
    p = plan.plan("render", {"crd_schemas": plan.CRD_SCHEMAS_MOUNT, "env": ["dev"]})
    args = cli.build_parser(cli.discover()).parse_args(p.command[3:])
    assert args.crd_schemas == plan.CRD_SCHEMAS_MOUNT and not plan.CRD_SCHEMAS_MOUNT.startswith(plan.WORKDIR)
    argv = plan.cli_args(
        "ci", {"gitops_repo": "ssh://git@git.example.com/llm/gitops.git", "gitops_ssh_key": object(),
               "gitops_known_hosts": object(), "crd_schemas": plan.CRD_SCHEMAS_MOUNT},
    )  # fmt: skip
    assert argv == ["--gitops-repo", "ssh://git@git.example.com/llm/gitops.git", "--crd-schemas", "/crd-schemas"]
    assert plan.git_ssh_command(False) == f"ssh -i {plan.GITOPS_SSH_KEY} -o IdentitiesOnly=yes"
    assert f"UserKnownHostsFile={plan.GITOPS_KNOWN_HOSTS}" in plan.git_ssh_command(True)
    assert any("openssh-client" in " ".join(step.argv) for step in plan.plan("ci", {}).setup)


def test_plan_runs_the_same_cli_inside_a_pinned_container(dagger_pkg: Any) -> None:
    plan = importlib.import_module("pipeline_dagger.plan")
    p = plan.plan("scan", {"images": ["registry.example.com/llm-gateway@sha256:" + "a" * 64], "download_db": True})
    assert "@sha256:" in p.image
    assert ["uv", "sync", "--all-extras", "--frozen", "--no-install-project"] in [step.argv for step in p.setup]
    assert p.install == [["uv", "sync", "--all-extras", "--frozen"]]
    assert p.command[:3] == [".venv/bin/python", "-m", "pipeline"]
    assert p.command[5:] == ["scan", "--image", "registry.example.com/llm-gateway@sha256:" + "a" * 64, "--download-db"]
    assert {"/root/.cache/uv", "/root/.cache/pip", "/root/.cache/trivy"} <= {c.path for c in p.caches.values()}
    assert p.env["PIPELINE_EXECUTOR"] == "dagger"
    # The verb's CLI accepts exactly what the plan passes.
    cli = importlib.import_module("pipeline.cli")
    args = cli.build_parser(cli.discover()).parse_args(p.command[3:])
    assert args.verb == "scan" and args.download_db is True


def test_secrets_and_infra_never_become_flags(dagger_pkg: Any) -> None:
    plan = importlib.import_module("pipeline_dagger.plan")
    argv = plan.cli_args(
        "ci",
        {"registry_password": object(), "registry": "registry.example.com/llm", "no_promote": True, "skip": ["smoke"],
         "extra_args": ["--no-cache"], "self": None},
    )  # fmt: skip
    assert argv == ["--no-promote", "--skip", "smoke", "--no-cache"]


def test_module_is_locked_and_the_lock_is_not_ignored() -> None:
    """The engine honours .gitignore: an ignored uv.lock would leave the module's dependencies unlocked."""
    import subprocess
    import tomllib

    mod = REPO / "pipeline" / "dagger"
    lock = tomllib.loads((mod / "uv.lock").read_text())
    ignored = subprocess.run(["git", "check-ignore", "-q", str(mod / "uv.lock")], cwd=REPO, check=False)
    assert ignored.returncode == 1, "pipeline/dagger/uv.lock is git-ignored"
    pkgs = {p["name"]: p for p in lock["package"]}
    engine = json.loads((REPO / "dagger.json").read_text())["engineVersion"].lstrip("v")
    # The SDK the engine generates into sdk/ (editable), at the engine's version.
    assert pkgs["dagger-io"]["source"] == {"editable": "sdk"} and pkgs["dagger-io"]["version"] == engine
    assert {"name": "dagger-io"} in pkgs["pipeline-dagger"]["dependencies"]


def test_the_functions_python_base_is_the_dockerfiles(dagger_pkg: Any) -> None:
    """One pinned Python base: the functions' containers (plan.PYTHON_IMAGE) and the images (app/Dockerfile)."""
    from pipeline.artifacts.images import pinned_bases

    plan = importlib.import_module("pipeline_dagger.plan")
    assert pinned_bases(REPO)["PYTHON_IMAGE"] == plan.PYTHON_IMAGE
