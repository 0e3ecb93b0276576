"""Generate the repository's structural CRD schemas from a catalog.

`render`, the tests and the Dagger path validate custom resources against the copy kept in the
repository (`policies/crd-schemas/`, kubeconform layout `<group>/<kind>_<version>.json`), never
against a floating branch. This module regenerates that copy from a catalog — a directory in the
same layout or a kubeconform-style URL template — for exactly the kinds listed in the copy's
`SOURCE.yaml`, keeping what validation needs (types, required, enums, patterns,
additionalProperties, x-kubernetes-*) and dropping description texts.

    python -m pipeline.checks.crd_schemas generate --src DIR_OR_URL_TEMPLATE [--ref COMMIT] [--out DIR]
    make crd-schemas SRC=DIR_OR_URL_TEMPLATE [REF=COMMIT]

`SOURCE.yaml` records the source, its commit, its licence and, per file, the git blob id of the
source file (so anyone can check the copy against the catalog at that commit) and the sha256 of
the file written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "policies" / "crd-schemas"
MANIFEST = "SOURCE.yaml"

# Keywords whose values are data, not schemas: never walked (a `description` key inside an enum
# value or a default is data and stays).
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "example", "examples", "required"})
# Keywords whose values map names to schemas: the names are kept as they are (a property may be
# called `description`), the schemas under them are stripped.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "definitions", "$defs", "dependentSchemas"})
_TEXT_KEYWORDS = frozenset({"description", "title", "$comment"})


class CrdSchemaError(RuntimeError):
    """A catalog or manifest problem; the message names the file or kind."""


@dataclass(frozen=True)
class Kind:
    """One custom resource kind as the catalog names it: group, lower-case kind, version."""

    group: str
    kind: str
    version: str

    @property
    def relpath(self) -> str:
        return f"{self.group}/{self.kind}_{self.version}.json"

    @classmethod
    def parse(cls, text: str) -> Kind:
        """`group/kind_version` (as in the catalog layout, `.json` optional)."""
        group, _, rest = text.removesuffix(".json").partition("/")
        kind, _, version = rest.rpartition("_")
        if not (group and kind and version):
            raise CrdSchemaError(f"kind {text!r} is not <group>/<kind>_<version>")
        return cls(group, kind.lower(), version)


def structural(schema: Any) -> Any:
    """The schema without description texts; everything validation reads is kept."""
    if isinstance(schema, list):
        return [structural(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _TEXT_KEYWORDS and isinstance(value, str):
            continue
        if key in _DATA_KEYWORDS:
            out[key] = value
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: structural(sub) for name, sub in value.items()}
        else:
            out[key] = structural(value)
    return out


def git_blob_id(data: bytes) -> str:
    """The id git gives this content (`git hash-object`), to compare with the catalog's tree."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 (git's own id, not security)


def _read_source(src: str, kind: Kind, timeout: float) -> bytes:
    if "://" in src:
        url = (
            src.replace("{{.Group}}", kind.group)
            .replace("{{.ResourceKind}}", kind.kind)
            .replace("{{.ResourceAPIVersion}}", kind.version)
        )
        if not url.startswith(("https://", "http://")):
            raise CrdSchemaError(f"unsupported URL scheme in {url}")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (scheme checked above)
                data: bytes = resp.read()
                return data
        except OSError as exc:
            raise CrdSchemaError(f"{kind.relpath}: cannot fetch {url}: {exc}") from exc
    path = Path(src) / kind.relpath
    if not path.is_file():
        raise CrdSchemaError(f"{kind.relpath}: not in the catalog at {src}")
    return path.read_bytes()


def load_manifest(out: Path) -> dict[str, Any]:
    path = out / MANIFEST
    if not path.is_file():
        raise CrdSchemaError(f"{path} is missing: it lists the kinds to generate")
    manifest = yaml.safe_load(path.read_text()) or {}
    if not isinstance(manifest, dict) or not isinstance(manifest.get("kinds"), list) or not manifest["kinds"]:
        raise CrdSchemaError(f"{path}: `kinds` must be a non-empty list of <group>/<kind>_<version>")
    return manifest


def generate(src: str, out: Path = DEFAULT_OUT, ref: str | None = None, timeout: float = 20.0) -> list[Path]:
    """Write the structural schema of every kind in `out/SOURCE.yaml` from `src`; update the manifest.

    All sources are read and converted before anything is written, so a missing kind leaves the
    existing copy untouched. Files of kinds no longer listed are removed.
    """
    manifest = load_manifest(out)
    kinds = [Kind.parse(str(k)) for k in manifest["kinds"]]
    converted: dict[Kind, tuple[bytes, bytes]] = {}
    for kind in kinds:
        raw = _read_source(src, kind, timeout)
        try:
            schema = json.loads(raw)
        except ValueError as exc:
            raise CrdSchemaError(f"{kind.relpath}: not JSON ({exc})") from exc
        text = json.dumps(structural(schema), indent=1, sort_keys=True) + "\n"
        converted[kind] = (raw, text.encode())

    written: list[Path] = []
    files: dict[str, dict[str, str]] = {}
    for kind, (raw, data) in converted.items():
        dest = out / kind.relpath
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".json.tmp")
        tmp.write_bytes(data)
        tmp.replace(dest)
        written.append(dest)
        files[kind.relpath] = {"source_blob": git_blob_id(raw), "sha256": hashlib.sha256(data).hexdigest()}
    keep = {p.resolve() for p in written}
    for stale in out.glob("*/*.json"):
        if stale.resolve() not in keep:
            stale.unlink()

    source = dict(manifest.get("source") or {})
    source["location"] = src if "://" in src else source.get("location", src)
    if ref:
        source["commit"] = ref
    manifest["source"] = source
    manifest["kinds"] = [k.relpath.removesuffix(".json") for k in kinds]
    manifest["files"] = files
    (out / MANIFEST).write_text(yaml.safe_dump(manifest, sort_keys=False, width=120))
    return written


def check(out: Path = DEFAULT_OUT) -> list[str]:
    """Problems with the copy: a listed kind without its file, or a file that differs from the manifest."""
    manifest = load_manifest(out)
    recorded = manifest.get("files") or {}
    problems = []
    for text in manifest["kinds"]:
        rel = Kind.parse(str(text)).relpath
        path = out / rel
        if not path.is_file():
            problems.append(f"{rel}: listed in {MANIFEST} but missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != (recorded.get(rel) or {}).get("sha256"):
            problems.append(f"{rel}: differs from the sha256 in {MANIFEST} (regenerate with `make crd-schemas`)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.checks.crd_schemas", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    gen = sub.add_parser("generate", help="regenerate the repository's copy from a catalog")
    gen.add_argument("--src", required=True, help="catalog directory or kubeconform-style URL template")
    gen.add_argument("--ref", help="the catalog's commit (recorded in SOURCE.yaml)")
    gen.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the copy to write (default: %(default)s)")
    chk = sub.add_parser("check", help="verify the copy against its manifest")
    chk.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "generate":
            for path in generate(args.src, args.out, args.ref):
                print(f"wrote {path}")
            return 0
        problems = check(args.out)
    except CrdSchemaError as exc:
        print(f"crd-schemas: {exc}", file=sys.stderr)
        return 2
    for p in problems:
        print(f"crd-schemas: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
