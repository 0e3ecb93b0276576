"""app/model.yaml owns the model's revision (a model release edits it); platform.yaml decides which
model the organisation serves (id, served name), and a new model starts from its revision."""

from __future__ import annotations

from pathlib import Path

import pytest
from ruamel.yaml import YAML

from pipeline.core.platform import Model, load_platform
from pipeline.models.record import MODEL_FILE, load_record
from pipeline.platform_config import derived
from tests.platform_config.test_platform_config import cli, copy_tree, snapshot

NEW_REVISION = "2" * 40


def edit_record(root: Path, **values: str) -> None:
    yaml = YAML(typ="rt")
    path = root / MODEL_FILE
    doc = yaml.load(path.read_text())
    doc.update(values)
    with path.open("w") as f:
        yaml.dump(doc, f)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_tree(tmp_path_factory.mktemp("repo"))


def test_a_model_only_release_is_no_drift(tree: Path) -> None:
    before = (tree / MODEL_FILE).read_text()
    try:
        edit_record(tree, revision=NEW_REVISION, tokenizerRevision=NEW_REVISION)
        assert load_record(tree).revision == NEW_REVISION
        assert load_platform(tree).model.revision != NEW_REVISION
        assert derived.problems(tree) == []
    finally:
        (tree / MODEL_FILE).write_text(before)


@pytest.mark.parametrize(("key", "value"), [("servedName", "other-name"), ("id", "someone/else")])
def test_the_record_must_name_the_platform_model(tree: Path, key: str, value: str) -> None:
    before = (tree / MODEL_FILE).read_text()
    try:
        edit_record(tree, **{key: value})
        found = [p for p in derived.problems(tree) if p.startswith(MODEL_FILE)]
        assert len(found) == 1 and f"-{key}: {value}" in found[0], found
    finally:
        (tree / MODEL_FILE).write_text(before)


def test_a_new_model_starts_from_the_platform_revision(tree: Path, tmp_path: Path) -> None:
    platform = load_platform(tree)
    new = Model(id="acme/tiny-chat", revision="1" * 40, servedName="tiny-chat")
    changes = {c.path: c for c in derived.derive(tree, platform.model_copy(update={"model": new}))}
    record_text = changes[MODEL_FILE].new_text
    assert record_text is not None
    (tmp_path / "app").mkdir()
    (tmp_path / MODEL_FILE).write_text(record_text)
    record = load_record(tmp_path)
    assert (record.id, record.served_name) == ("acme/tiny-chat", "tiny-chat")
    assert record.revision == record.tokenizer_revision == "1" * 40
    # Everything else in the record (eval gate, serving arguments, stand-in) is the record's own.
    assert record.eval == load_record(tree).eval and record.serving == load_record(tree).serving


def test_init_refuses_a_revision_for_the_model_already_served(tree: Path) -> None:
    before = snapshot(tree)
    done = cli(tree, "init", "--model-revision", NEW_REVISION)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--model-revision goes with a new --model-id" in done.stderr and "app/model.yaml" in done.stderr
    assert snapshot(tree) == before
