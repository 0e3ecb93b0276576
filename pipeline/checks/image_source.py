"""Where Trivy reads a built image from: the registry it was pushed to, else an exported archive.

A pushed image is read from the registry by digest (`--image-src remote`): that is exactly what a
pod pulls, and nothing is written to disk but Trivy's per-layer analysis cache. Exporting instead
costs the image's full uncompressed size (vllm-cpu: ~4.2 GB) under the run directory; CI ran out
of disk doing that. The export stays as the fallback (an image that was not pushed, or a registry
Trivy cannot read, e.g. credentials it does not find), guarded by a free-space check that names
the space it needs.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.runtime.engine import Engine
from pipeline.runtime.registry import is_loopback

# Beyond the image itself: the archive's tar headers and manifests, and room for everything else.
EXPORT_HEADROOM_BYTES = 512 * 1024 * 1024


class ImageSourceError(RuntimeError):
    """The image can be read neither from its registry nor from an export; the message says why."""


@dataclass(frozen=True)
class ImageSource:
    flags: list[str]  # `trivy image` flags that select the source
    target: list[str]  # the positional image reference, if any (`--input` takes none)
    described: str  # for the check's detail: where the image was read from


def remote(ref: str) -> ImageSource:
    """Read `registry/repo@sha256:…` from its registry; the embedded one on loopback is plain HTTP."""
    insecure = ["--insecure"] if is_loopback(ref) else []
    return ImageSource(["--image-src", "remote", *insecure], [ref], f"registry {ref.split('/', 1)[0]}")


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def image_size(engine: Engine, ref: str) -> int | None:
    proc = engine.run(["image", "inspect", "--format", "{{.Size}}", ref], timeout=60)
    try:
        return int(proc.stdout.strip()) if proc.returncode == 0 else None
    except ValueError:
        return None


def _gib(n: float) -> str:
    return f"{n / 1024**3:.1f} GiB"


@contextmanager
def exported(engine: Engine, ref: str, archive: Path) -> Iterator[ImageSource]:
    """`<engine> image save` to `archive` for the scan, removed afterwards (also on failure).

    Refuses up front, naming the numbers, when the archive's file system lacks the room.
    """
    archive.parent.mkdir(parents=True, exist_ok=True)
    size = image_size(engine, ref)
    if size is None:
        raise ImageSourceError(f"{engine.kind} has no image {ref} to export")
    free = free_bytes(archive.parent)
    if free < size + EXPORT_HEADROOM_BYTES:
        raise ImageSourceError(
            f"exporting {ref} for the scan needs {_gib(size + EXPORT_HEADROOM_BYTES)} free under "
            f"{archive.parent}, {_gib(free)} free (push it to a registry to scan it there instead)"
        )
    archive.unlink(missing_ok=True)
    try:
        saved = engine.run(["image", "save", "--format", "docker-archive", "-o", str(archive), ref], timeout=1800)
        if saved.returncode != 0:
            why = (saved.stderr or saved.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ImageSourceError(f"cannot export {ref}: {why[0]}")
        yield ImageSource(["--input", str(archive)], [], f"exported {_gib(size)} archive")
    finally:
        archive.unlink(missing_ok=True)
