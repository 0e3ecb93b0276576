"""A model directory's content identity: MANIFEST.sha256 and the content digest.

MANIFEST.sha256 is in `sha256sum` format (`<hex>  <relpath>`, one line per file, sorted by
path, the manifest itself left out), so the artifact's init container checks it with plain
`sha256sum -c MANIFEST.sha256` and compares `sha256sum MANIFEST.sha256` with the digest the
release pins; no Python in the artifact. The content digest is `sha256:` + the sha256 of the
manifest's bytes: it names the weights, tokenizer and config together, whatever image or
registry carries them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

MANIFEST = "MANIFEST.sha256"
_CHUNK = 1 << 20


class ContentMismatch(ValueError):
    """The directory is not the content expected; the message names the first differing file."""


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(directory: Path) -> list[str]:
    """Relative POSIX paths of every regular file (the manifest excluded), sorted."""
    if not directory.is_dir():
        raise ContentMismatch(f"{directory}: not a directory")
    names: list[str] = []
    for path in directory.rglob("*"):
        rel = path.relative_to(directory).as_posix()
        if path.is_symlink():
            raise ContentMismatch(f"{rel}: symlinks are not allowed in a model directory")
        if not path.is_file() or rel == MANIFEST:
            continue
        # sha256sum escapes these with a backslash prefix; refuse them instead of mis-checking.
        if any(c in rel for c in "\\\n\r"):
            raise ContentMismatch(f"{rel!r}: a file name with a backslash or newline cannot go in {MANIFEST}")
        names.append(rel)
    return sorted(names)


def manifest_text(directory: Path) -> str:
    """What MANIFEST.sha256 must hold for the directory as it is now."""
    return "".join(f"{_sha256_file(directory / rel)}  {rel}\n" for rel in _files(directory))


def digest_of(manifest: bytes) -> str:
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def write_manifest(directory: Path) -> str:
    """(Re)write MANIFEST.sha256 for `directory` (atomically); return the content digest."""
    data = manifest_text(directory).encode()
    if not data:
        raise ContentMismatch(f"{directory}: no files to put in {MANIFEST}")
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_bytes(data)
    tmp.replace(directory / MANIFEST)
    return digest_of(data)


def content_digest(directory: Path) -> str:
    """The content digest the directory's MANIFEST.sha256 claims (`verify` checks the claim)."""
    try:
        return digest_of((directory / MANIFEST).read_bytes())
    except OSError as exc:
        raise ContentMismatch(f"{directory}: no readable {MANIFEST} ({exc.strerror})") from exc


def _parse(manifest: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    for n, line in enumerate(manifest.splitlines(), start=1):
        hexdigest, sep, rel = line.partition("  ")
        if not sep or len(hexdigest) != 64 or not rel:
            raise ContentMismatch(f"{MANIFEST}:{n}: not a `<sha256>  <path>` line: {line[:80]!r}")
        entries[rel] = hexdigest
    return entries


def verify(directory: Path, expected: str | None = None) -> None:
    """Check every file against MANIFEST.sha256 (no file missing, extra or changed) and, when
    `expected` is given, the manifest against that content digest. Raises ContentMismatch."""
    entries = _parse((directory / MANIFEST).read_text() if (directory / MANIFEST).is_file() else "")
    if not entries:
        raise ContentMismatch(f"{directory}: {MANIFEST} is missing or empty")
    present = _files(directory)
    for rel in sorted(set(entries) | set(present)):
        if rel not in present:
            raise ContentMismatch(f"{rel}: listed in {MANIFEST} but missing")
        if rel not in entries:
            raise ContentMismatch(f"{rel}: present but not listed in {MANIFEST}")
        actual = _sha256_file(directory / rel)
        if actual != entries[rel]:
            raise ContentMismatch(f"{rel}: sha256 {actual[:12]}… differs from {MANIFEST}'s {entries[rel][:12]}…")
    if expected is not None:
        actual_digest = content_digest(directory)
        if actual_digest != expected:
            raise ContentMismatch(f"{MANIFEST}: content digest {actual_digest} differs from the expected {expected}")
