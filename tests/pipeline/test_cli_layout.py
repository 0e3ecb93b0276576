"""The CLI's verb registry (ordered, lazily imported) and the package layout of pipeline/."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pipeline import cli

REPO = Path(__file__).resolve().parents[2]
PIPELINE_ORDER = ("test", "build", "scan", "render", "smoke", "eval", "loadtest", "promote", "ci")


def test_registry_lists_pipeline_verbs_in_pipeline_order_then_operational_verbs() -> None:
    assert tuple(cli.PIPELINE_VERBS) == PIPELINE_ORDER
    assert list(cli.REGISTRY) == [*cli.PIPELINE_VERBS, *cli.OPERATIONAL_VERBS]
    assert {"status", "rollback", "unfreeze", "rollback-controller", "drill", "capacity"} <= set(cli.OPERATIONAL_VERBS)
    from pipeline.stages import ci

    # ci runs every pipeline verb's stage in the verbs' order, plus `canary_gate`: a stage of ci only (the canary
    # drill judged by issue 23's targets), whose own command is the operational verb `drill --canary`.
    assert (*(s for s in ci.ORDER if s != "canary_gate"), "ci") == PIPELINE_ORDER
    assert "canary_gate" not in cli.REGISTRY


def test_every_registered_module_names_its_verb() -> None:
    for verb, mod in cli.discover().items():
        assert verb == mod.NAME, f"{cli.REGISTRY[verb]}: NAME {mod.NAME!r} != verb {verb!r}"
        assert mod.HELP and (hasattr(mod, "run_from_args") or hasattr(mod, "main"))


def test_help_lists_verbs_in_registry_order() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("    ") and line[4] != " "]
    assert listed == list(cli.REGISTRY)


PROBE = """
import json, sys
from pipeline import cli
try:
    cli.main([sys.argv[1], "--help"])
except SystemExit:
    pass
print(json.dumps([verb for verb, path in cli.REGISTRY.items() if path in sys.modules]))
"""


@pytest.mark.parametrize("verb", list(cli.REGISTRY))
def test_running_a_verb_imports_only_that_verbs_module(verb: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, verb], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out.splitlines()[-1]) == [verb]


def test_no_two_modules_under_pipeline_share_a_file_name() -> None:
    names = Counter(
        p.name
        for p in (REPO / "pipeline").rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py") and ".venv" not in p.parts
    )
    assert [name for name, n in names.items() if n > 1] == []


def test_pipeline_readme_maps_every_package() -> None:
    readme = (REPO / "pipeline" / "README.md").read_text()
    packages = sorted(p.parent.name for p in (REPO / "pipeline").glob("*/__init__.py"))
    assert packages, "no packages under pipeline/"
    for pkg in [*packages, "dagger"]:
        assert f"`{pkg}/`" in readme, f"pipeline/README.md does not describe {pkg}/"


# Which packages of pipeline/ each package may import (pipeline/README.md): downwards only.
LOWER: dict[str, set[str]] = {
    "runtime": set(),
    "core": {"runtime"},
    "rollout": {"core", "runtime"},
    "checks": {"rollout", "core", "runtime"},
    "artifacts": {"checks", "rollout", "core", "runtime"},
    "probes": {"core", "runtime"},
    "models": {"artifacts", "checks", "rollout", "core", "runtime"},
    "gitops": {"models", "artifacts", "checks", "rollout", "core", "runtime"},
    "platform_config": {"checks", "rollout", "core", "runtime"},
    "stages": {"platform_config", "gitops", "models", "probes", "artifacts", "checks", "rollout", "core", "runtime"},
    "controller": {
        "stages",
        "platform_config",
        "gitops",
        "models",
        "probes",
        "artifacts",
        "checks",
        "rollout",
        "core",
        "runtime",
    },
    "commands": {
        "controller",
        "platform_config",
        "gitops",
        "models",
        "probes",
        "artifacts",
        "checks",
        "rollout",
        "core",
        "runtime",
    },
    "cli": {"core"},
}


def _pipeline_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline."):
            mods.add(node.module)
        elif isinstance(node, ast.Import):
            mods |= {a.name for a in node.names if a.name.startswith("pipeline.")}
    return mods


def test_packages_import_only_downwards_and_stages_never_import_each_other() -> None:
    wrong = []
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        rel = path.relative_to(REPO / "pipeline")
        if rel.parts[0] == "dagger" or str(rel) in ("__init__.py", "__main__.py"):
            continue
        pkg = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if pkg not in LOWER:
            wrong.append(f"{rel}: not in a package of pipeline/README.md (only cli.py lives at the top)")
            continue
        for mod in _pipeline_imports(path):
            target = mod.split(".")[1]
            if target == pkg:
                if pkg == "stages" and rel.name != "__init__.py":
                    wrong.append(f"{rel} imports {mod} (a helper two stages share belongs below both)")
            elif target not in LOWER[pkg]:
                wrong.append(f"{rel} imports {mod} ({pkg}/ may import {sorted(LOWER[pkg])})")
    assert wrong == []
