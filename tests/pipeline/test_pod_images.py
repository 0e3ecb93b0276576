"""pod_images_for: which images the release's pod plays (loadtest --attach, the drill on pods)."""

from __future__ import annotations

from pipeline.artifacts.images import build_tag
from pipeline.artifacts.release_pod import pod_images_for
from pipeline.gitops.release import Release

GW = "sha256:" + "a" * 64
COMMIT = "1234567890abcdef1234567890abcdef12345678"


def release(**kw: object) -> Release:
    base = dict(
        id="0.3.0+g1234567",
        commit=COMMIT,
        chart_version="0.3.0",
        gateway_digest=GW,
        vllm_digest="sha256:" + "b" * 64,
        model_revision="r",
    )
    return Release(**{**base, **kw})


def test_the_simulator_is_the_same_builds_tag_also_for_a_dirty_tree() -> None:
    clean = pod_images_for(release(), "127.0.0.1:5000", True)
    assert clean.vllm == f"127.0.0.1:5000/llm/simulator:{build_tag('0.3.0', COMMIT, False)}"
    dirty = pod_images_for(release(id="0.3.0+g1234567.dirty"), "127.0.0.1:5000", True)
    assert dirty.vllm.endswith(":" + build_tag("0.3.0", COMMIT, True)) and dirty.vllm.endswith("-dirty")
    assert clean.gateway == f"127.0.0.1:5000/llm/gateway@{GW}" and not clean.tls_verify


def test_a_release_pushed_elsewhere_is_pulled_from_where_its_pins_say() -> None:
    rel = release(registry="registry.example.com/llm-ci", gateway_repository="registry.example.com/llm-ci/llm/gateway")
    images = pod_images_for(rel, "127.0.0.1:5000", True)
    assert images.gateway == f"registry.example.com/llm-ci/llm/gateway@{GW}"
    assert images.vllm.startswith("registry.example.com/llm-ci/llm/simulator:")
    assert images.tls_verify  # not the embedded plain-HTTP registry


def test_a_release_pushed_to_another_loopback_registry_is_pulled_over_plain_http() -> None:
    # `--registry 127.0.0.1:6000` is pushed to without TLS (registry.external); pulls must match.
    rel = release(registry="127.0.0.1:6000", gateway_repository="127.0.0.1:6000/llm/gateway")
    images = pod_images_for(rel, "127.0.0.1:5000", True)
    assert images.gateway == f"127.0.0.1:6000/llm/gateway@{GW}" and not images.tls_verify
