"""The repository's structural CRD schemas: generation from a catalog, the committed copy, strictness."""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipeline.checks import crd_schemas, validate

CATALOG_SCHEMA = {
    "description": "Widget is a thing",
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {
            "description": "the spec",
            "type": "object",
            "additionalProperties": False,
            "properties": {
                # A property *named* description is data, not a text: it must survive.
                "description": {"type": "string", "description": "free text", "pattern": "^[a-z]+$"},
                "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "x-kubernetes-validations": [{"rule": "self.mode != ''"}],
        }
    },
}


def make_catalog(tmp_path: Path) -> tuple[Path, Path]:
    catalog = tmp_path / "catalog" / "example.io"
    catalog.mkdir(parents=True)
    (catalog / "widget_v1.json").write_text(json.dumps(CATALOG_SCHEMA))
    out = tmp_path / "copy"
    out.mkdir()
    (out / "SOURCE.yaml").write_text(yaml.safe_dump({"source": {"name": "test"}, "kinds": ["example.io/widget_v1"]}))
    return catalog.parent, out


def test_generate_strips_texts_and_keeps_what_validation_reads(tmp_path: Path) -> None:
    catalog, out = make_catalog(tmp_path)
    crd_schemas.generate(str(catalog), out, ref="abc123")
    schema = json.loads((out / "example.io" / "widget_v1.json").read_text())
    spec = schema["properties"]["spec"]
    assert "description" not in schema and "description" not in spec
    assert spec["properties"]["description"] == {"type": "string", "pattern": "^[a-z]+$"}
    assert spec["additionalProperties"] is False and spec["properties"]["mode"]["enum"] == ["a", "b"]
    assert spec["x-kubernetes-validations"] and schema["required"] == ["spec"]
    manifest = yaml.safe_load((out / "SOURCE.yaml").read_text())
    assert manifest["source"]["commit"] == "abc123"
    raw = (catalog / "example.io" / "widget_v1.json").read_bytes()
    git_id = subprocess.run(["git", "hash-object", "--stdin"], input=raw, capture_output=True, check=True).stdout
    assert manifest["files"]["example.io/widget_v1.json"]["source_blob"] == git_id.decode().strip()
    assert crd_schemas.check(out) == []
    # Strict: an unknown field still fails validation through render's loader.
    crds = validate.CrdSchemas(str(out))
    doc = {"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"mode": "a", "x": 1}}
    assert any("Additional properties" in str(f) for f in crds.validate(doc))
    doc["spec"] = {"mode": "c"}
    assert any("'c' is not one of" in str(f) for f in crds.validate(doc))


def test_a_kind_missing_from_the_catalog_writes_nothing(tmp_path: Path) -> None:
    catalog, out = make_catalog(tmp_path)
    crd_schemas.generate(str(catalog), out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    manifest = yaml.safe_load((out / "SOURCE.yaml").read_text())
    manifest["kinds"].append("example.io/gadget_v1")
    (out / "SOURCE.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(crd_schemas.CrdSchemaError, match=r"example\.io/gadget_v1\.json: not in the catalog"):
        crd_schemas.generate(str(catalog), out)
    assert (out / "example.io" / "widget_v1.json").read_bytes() == before[out / "example.io" / "widget_v1.json"]


def test_check_reports_a_hand_edited_or_missing_file(tmp_path: Path) -> None:
    catalog, out = make_catalog(tmp_path)
    crd_schemas.generate(str(catalog), out)
    (out / "example.io" / "widget_v1.json").write_text("{}")
    assert crd_schemas.check(out) == [
        "example.io/widget_v1.json: differs from the sha256 in SOURCE.yaml (regenerate with `make crd-schemas`)"
    ]
    (out / "example.io" / "widget_v1.json").unlink()
    assert crd_schemas.check(out) == ["example.io/widget_v1.json: listed in SOURCE.yaml but missing"]


@pytest.fixture
def http_dir_server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real HTTP server on loopback serving tmp_path/catalog (the URL-template path)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "catalog"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_generate_over_a_url_template(http_dir_server: tuple[Path, str]) -> None:
    tmp_path, base = http_dir_server
    _catalog, out = make_catalog(tmp_path)
    template = base + "/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json"
    crd_schemas.generate(template, out)
    manifest = yaml.safe_load((out / "SOURCE.yaml").read_text())
    assert manifest["source"]["location"] == template and crd_schemas.check(out) == []


def test_the_committed_copy_matches_its_manifest(repo_root: Path) -> None:
    out = repo_root / "policies" / "crd-schemas"
    assert crd_schemas.check(out) == []
    manifest = crd_schemas.load_manifest(out)
    assert manifest["source"]["commit"] and "MIT" in manifest["source"]["license"]
    assert (out / "LICENSE").is_file()
    listed = {crd_schemas.Kind.parse(k).relpath for k in manifest["kinds"]}
    assert listed == {p.relative_to(out).as_posix() for p in out.glob("*/*.json")}
    for rel in listed:  # no description texts left anywhere a schema keyword could hold one
        assert '"description": "' not in (out / rel).read_text()
    jsonschema.Draft7Validator.check_schema(json.loads((out / "keda.sh" / "scaledobject_v1alpha1.json").read_text()))
