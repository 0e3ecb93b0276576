"""Release pins of the model artifact: values layout, round trip, all-or-none, and promotion cleanup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from pipeline.gitops.promotion import pin_updates
from pipeline.gitops.release import OPTIONAL_PINS, Release
from pipeline.gitops.repo import REMOVE, edit_yaml

REPO = "127.0.0.1:5000/model"
DIGEST = "sha256:" + "d" * 64
CONTENT = "sha256:" + "e" * 64
MODEL_PINS = {"model_repository": REPO, "model_digest": DIGEST, "model_content_digest": CONTENT}


def _release(**kw: Any) -> Release:
    base: dict[str, Any] = {
        "id": "0.1.0+g1a2b3c4",
        "commit": "1a2b3c4" + "0" * 33,
        "chart_version": "0.1.0-g1a2b3c4",
        "gateway_digest": "sha256:" + "a" * 64,
        "vllm_digest": "sha256:" + "b" * 64,
        "model_revision": "e1945c40cd546c78e41f1151f4db032b271faeaa",
    }
    return Release.model_validate(base | kw)


def test_pinned_artifact_becomes_chart_values_and_round_trips() -> None:
    rel = _release(**MODEL_PINS)
    model = rel.to_values()["vllm"]["model"]
    assert model == {
        "revision": rel.model_revision,
        "source": "artifact",
        "artifact": {"repository": REPO, "digest": DIGEST, "contentDigest": CONTENT},
    }
    assert rel.model_artifact == f"{REPO}@{DIGEST}"
    assert Release.from_values(rel.to_values()) == rel


def test_hub_release_writes_no_artifact_keys_and_round_trips() -> None:
    rel = _release()
    assert rel.to_values()["vllm"]["model"] == {"revision": rel.model_revision}
    assert rel.model_artifact is None
    assert Release.from_values(rel.to_values()) == rel


@pytest.mark.parametrize("missing", sorted(MODEL_PINS))
def test_artifact_pins_are_all_or_none(missing: str) -> None:
    partial = {k: v for k, v in MODEL_PINS.items() if k != missing}
    with pytest.raises(ValidationError, match=f"missing {missing}"):
        _release(**partial)


@pytest.mark.parametrize(
    ("field", "bad", "what"),
    [
        ("model_digest", "sha256:abc", "OCI manifest digest"),
        ("model_content_digest", "d" * 64, "model content digest"),
        ("model_repository", "Registry.Example.com/Model", "artifact repository"),
        ("model_repository", "model", "artifact repository"),
    ],
)
def test_bad_artifact_pins_are_refused_naming_the_field(field: str, bad: str, what: str) -> None:
    with pytest.raises(ValidationError, match=what):
        _release(**(MODEL_PINS | {field: bad}))


def test_promoting_a_hub_release_removes_a_previous_artifact_pin() -> None:
    # release.yaml of an env that served an artifact, then a hub-pinned release is promoted over it.
    updates = pin_updates(_release())
    for key in (
        ("vllm", "model", "source"),
        *(("vllm", "model", "artifact", k) for k in ("repository", "digest", "contentDigest")),
    ):
        assert key in OPTIONAL_PINS
        assert updates[key] is REMOVE
    pinned = pin_updates(_release(**MODEL_PINS))
    assert pinned[("vllm", "model", "artifact", "digest")] == DIGEST
    assert pinned[("vllm", "model", "source")] == "artifact"


def test_release_yaml_edit_from_artifact_to_hub_reads_back_as_the_hub_release(tmp_path: Path) -> None:
    path = tmp_path / "release.yaml"
    path.write_text("# pins\n" + yaml.safe_dump(_release(**MODEL_PINS).to_values(), sort_keys=False))
    hub = _release(id="0.1.1+g2b3c4d5")
    edit_yaml(path, pin_updates(hub), "release.yaml")
    values = yaml.safe_load(path.read_text())
    assert Release.from_values(values) == hub
    assert "source" not in values["vllm"]["model"]
