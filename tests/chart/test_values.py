"""values.yaml: every key documented, schema strict and in step with values and env files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ENVS = ("dev", "staging", "prod")
KEY_RE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_./\"-]+):(?:\s|$)")


def _schema(chart: Path) -> dict[str, Any]:
    return dict(json.loads((chart / "values.schema.json").read_text()))


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        return {
            k: _merge(base[k], over[k]) if k in base and k in over else over.get(k, base.get(k))
            for k in {**base, **over}
        }
    return over


def _declared(schema: dict[str, Any], path: list[str]) -> bool:
    """True when the schema declares this key by name (free-form maps like labels are exempt)."""
    node = schema
    for key in path:
        props = node.get("properties") or {}
        if key not in props:
            return False
        node = props[key]
    return True


def test_every_declared_values_key_has_a_doc_comment(chart: Path) -> None:
    schema = _schema(chart)
    lines = (chart / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    undocumented = []
    for i, line in enumerate(lines):
        m = KEY_RE.match(line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent = len(m.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [m.group("key").strip('"')]
        stack.append((indent, m.group("key").strip('"')))
        if not _declared(schema, path):
            continue
        j = i - 1
        comments = []
        while j >= 0 and lines[j].strip().startswith("#"):
            comments.append(lines[j].strip())
            j -= 1
        if not any(c.startswith("# -- ") for c in comments):
            undocumented.append(".".join(path))
    assert not undocumented, f"values keys without a `# --` comment: {undocumented}"


def test_schema_is_strict(chart: Path) -> None:
    loose = []

    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False:
            loose.append(path or "(root)")
        for key, sub in (node.get("properties") or {}).items():
            walk(sub, f"{path}.{key}" if path else key)

    walk(_schema(chart), "")
    assert not loose, f"object schemas allowing unknown keys: {loose}"


def test_values_yaml_matches_schema_both_ways(chart: Path) -> None:
    schema = _schema(chart)
    values = yaml.safe_load((chart / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(values)
    # Drift the other way: every property the schema declares has a default in values.yaml.
    missing = []

    def walk(node: dict[str, Any], val: Any, path: str) -> None:
        for key, sub in (node.get("properties") or {}).items():
            if not isinstance(val, dict) or key not in val:
                missing.append(f"{path}{key}")
            elif sub.get("type") == "object":
                walk(sub, val[key], f"{path}{key}.")

    walk(schema, values, "")
    assert not missing, f"schema keys without a default in values.yaml: {missing}"


@pytest.mark.parametrize("env", ENVS)
def test_env_files_match_schema(chart: Path, repo_root: Path, env: str) -> None:
    schema = _schema(chart)
    merged = yaml.safe_load((chart / "values.yaml").read_text())
    for name in ("values.yaml", "release.yaml"):
        merged = _merge(merged, yaml.safe_load((repo_root / "environments" / env / name).read_text()))
    jsonschema.Draft7Validator(schema).validate(merged)


def test_bad_type_is_rejected_by_schema(chart: Path) -> None:
    values = yaml.safe_load((chart / "values.yaml").read_text())
    values["vllm"]["engine"]["gpuMemoryUtilization"] = "high"
    errors = list(jsonschema.Draft7Validator(_schema(chart)).iter_errors(values))
    assert any(list(e.absolute_path) == ["vllm", "engine", "gpuMemoryUtilization"] for e in errors)
