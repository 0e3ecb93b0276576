"""Real podman, the project's local Debian base and the embedded registry, for the slow image tests.

They FAIL, with the reason, when podman / docker-registry / debootstrap are missing: `make test`
installs them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.runtime import base_image, engine, registry


@pytest.fixture(scope="module")
def podman() -> engine.Engine:
    st = engine.detect()
    if st.engine is None or st.engine.kind != "podman":
        pytest.fail(f"these tests need podman (`make test` installs it): {st.reason}")
    return st.engine


@pytest.fixture(scope="module")
def base(podman: engine.Engine) -> str:
    """The project's local Debian base (made once, cached by recipe): has python3, no network needed after."""
    if shutil.which("debootstrap") is None and shutil.which("debootstrap", path="/usr/sbin") is None:
        pytest.fail("debootstrap missing (`make test` installs it)")
    return base_image.ensure_local(podman, replaced="test").name


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[registry.Registry]:
    sdir = tmp_path / "registry"
    if shutil.which(registry.BINARY) is None:
        pytest.fail("docker-registry missing (`make test` installs it)")
    r = registry.ensure(sdir)
    try:
        yield r
    finally:
        registry.stop(sdir)
