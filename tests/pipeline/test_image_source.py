"""Where Trivy reads a pushed image: TLS is skipped only for the embedded registry on loopback."""

from __future__ import annotations

import pytest

from pipeline.checks.image_source import remote

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize("host", ["127.0.0.1:5000", "localhost:41299", "[::1]:5000"])
def test_the_embedded_registry_is_read_over_plain_http(host: str) -> None:
    ref = f"{host}/llm/gateway@{DIGEST}"
    source = remote(ref)
    assert (source.flags, source.target) == (["--image-src", "remote", "--insecure"], [ref])
    assert source.described == f"registry {host}"


@pytest.mark.parametrize("host", ["registry.example.com", "registry.example.com:5000", "127.0.0.1.example.com:1"])
def test_any_other_registry_is_read_with_tls_verified(host: str) -> None:
    ref = f"{host}/llm/gateway@{DIGEST}"
    source = remote(ref)
    assert (source.flags, source.target) == (["--image-src", "remote"], [ref])
