"""The Dagger module imports, covers every verb with matching arguments, and plans the same CLI."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
VERBS = ("test", "build", "scan", "render", "smoke", "loadtest", "promote", "rollback", "ci")


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
    if parser is None:
        pytest.skip(f"pipeline/stages/{verb}.py not there yet (Dagger passes extra_args through)")
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    params = set(functions[verb].parameters) - plan.INFRA_PARAMS
    assert params == set(actions), (
        f"Dagger function `{verb}` args {sorted(params)} != CLI dests {sorted(actions)}: "
        "add/remove the parameter in pipeline/dagger/src/pipeline_dagger/main.py"
    )
    for dest, action in actions.items():
        assert plan.flag_for(verb, dest) in action.option_strings, f"{verb}: no flag for {dest}"


def test_plan_runs_the_same_cli_inside_a_pinned_container(dagger_pkg: Any) -> None:
    plan = importlib.import_module("pipeline_dagger.plan")
    p = plan.plan("scan", {"images": ["registry.example.com/llm-gateway@sha256:" + "a" * 64], "download_db": True})
    assert "@sha256:" in p.image
    assert ["uv", "sync", "--all-extras", "--frozen"] in p.setup
    assert p.command[:3] == [".venv/bin/python", "-m", "pipeline"]
    assert p.command[5:] == ["scan", "--image", "registry.example.com/llm-gateway@sha256:" + "a" * 64, "--download-db"]
    assert {"/root/.cache/uv", "/root/.cache/pip", "/root/.cache/trivy"} <= set(p.caches.values())
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


def test_module_source_uses_engine_features() -> None:
    src = (REPO / "pipeline" / "dagger" / "src" / "pipeline_dagger" / "main.py").read_text()
    for needle in (
        'DefaultPath("/")',
        "dagger.Secret",
        "with_registry_auth",
        "publish(",
        "docker_build(",
        "experimental_with_all_gp_us()",
        "as_service(",
        "expect=dagger.ReturnType.ANY",
        "with_mounted_cache",
    ):
        assert needle in src, needle
