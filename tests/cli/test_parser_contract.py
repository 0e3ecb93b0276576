"""Every verb's parser: help on every option, choices on every --env, -o on every verb, one spelling
per recurring flag; --version and the installed console script."""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.core import output
from pipeline.gitops import promotion as pm

from .conftest import Ran

REPO = Path(__file__).resolve().parents[2]
# Verbs that record who acted: each takes --actor (the one spelling; older ones hidden aliases).
RECORDS_AN_IDENTITY = ("promote", "rollback", "freeze", "unfreeze", "loadtest")
# `init --env NAME[=NAMESPACE[@CLUSTER]]` defines the environments: there is nothing to choose from yet.
DEFINES_ENVS = {"init"}


def verb_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser(cli.discover())
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


PARSERS = verb_parsers()


def test_the_walk_covers_every_registered_verb() -> None:
    assert list(PARSERS) == list(cli.REGISTRY)
    assert {"history", "freeze"} <= set(PARSERS)


@pytest.mark.parametrize("verb", list(cli.REGISTRY))
def test_every_option_has_help_and_every_env_has_choices(verb: str) -> None:
    p = PARSERS[verb]
    actions = [a for a in p._actions if not isinstance(a, argparse._HelpAction)]
    for a in actions:
        name = "/".join(a.option_strings) or a.dest
        if a.help is argparse.SUPPRESS:
            # Hidden only as an old spelling of a documented option (same destination).
            assert any(b is not a and b.dest == a.dest and b.help not in (None, argparse.SUPPRESS) for b in actions), (
                name
            )
            continue
        assert a.help and a.help.strip(), f"{verb} {name}: no help text"
        if "--env" in a.option_strings and verb not in DEFINES_ENVS:
            assert a.choices, f"{verb} --env: no choices"
            assert set(pm.ENVS) <= set(a.choices), f"{verb} --env: choices {a.choices} miss envs {pm.ENVS}"
    out = next(a for a in actions if "-o" in a.option_strings)
    assert tuple(out.choices or ()) == output.FORMATS


def test_recurring_flags_have_one_spelling_and_metavar() -> None:
    for verb in RECORDS_AN_IDENTITY:
        actions = {o: a for a in PARSERS[verb]._actions for o in a.option_strings}
        assert "--actor" in actions, f"{verb} records an identity but has no --actor"
        assert actions["--actor"].metavar == "NAME", verb
    for verb, p in PARSERS.items():
        for a in p._actions:
            if "--gitops-repo" in a.option_strings:
                assert a.metavar == "URL", verb
            assert "--by" not in a.option_strings or a.help is argparse.SUPPRESS, f"{verb}: --by is shown"


def test_old_spelling_still_parses(run_cli: Callable[..., Ran], remote: str) -> None:
    assert run_cli("freeze", "--env", "dev", "--reason", "r", "--actor", "a", "--gitops-repo", remote).code == 0
    ran = run_cli("unfreeze", "--env", "dev", "--by", "lead", "--gitops-repo", remote, "-o", "json")
    assert ran.code == 0 and ran.json()["by"] == "lead" and ran.json()["changed"] is True


@pytest.mark.parametrize(
    "argv",
    [
        ["history", "--env", "qa"],
        ["promote", "--to", "qa"],
        ["rollback", "--env", "qa"],
        ["render", "--env", "qa"],
        ["status", "-o", "xml"],
    ],
)
def test_a_bad_value_lists_the_valid_ones(run_cli: Callable[..., Ran], argv: list[str]) -> None:
    ran = run_cli(*argv)
    assert ran.code == 2 and ran.out == ""
    assert "invalid choice" in ran.err and ("'staging'" in ran.err or "'yaml'" in ran.err), ran.err


def test_version(run_process: Callable[..., Ran]) -> None:
    ran = run_process("--version")
    assert ran.code == 0 and ran.out.split()[-1].startswith(importlib.metadata.version("llm-delivery"))


def test_console_script_is_installed_and_runs_the_cli(tmp_path: Path) -> None:
    (ep,) = importlib.metadata.entry_points(group="console_scripts", name="llm-delivery")
    assert ep.load() is cli.main
    script = Path(sys.executable).parent / "llm-delivery"
    assert script.is_file(), "reinstall the project into the venv (make venv / uv sync) to get the console script"
    ran = subprocess.run([str(script), "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and ran.stdout.startswith("llm-delivery "), ran.stderr
    helped = subprocess.run([str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert helped.stdout.startswith("usage: llm-delivery") and "exit codes:" in helped.stdout
