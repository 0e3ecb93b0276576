"""The stand-in model: cache key, reuse, atomic copy, tamper handling; and (slow) the real training,
its reproducibility, and its answers when served by real vLLM on CPU through the chat API."""

from __future__ import annotations

import json
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from pipeline import cli
from pipeline.models import content, standin, taskset
from pipeline.models.record import ModelRecord, load_record
from pipeline.runtime import vllm_cpu

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def record() -> ModelRecord:
    return load_record(REPO)


BROKEN_TORCH = "echo 'ModuleNotFoundError: No module named torch'\nexit 3"


def _fake_venv(path: Path, versions: dict[str, str] | None = None, script: str = BROKEN_TORCH) -> Path:
    """A venv the helper takes for ready, whose python runs `script` (default: fails like a broken torch)."""
    (path / "bin").mkdir(parents=True)
    python = path / "bin" / "python"
    python.write_text(f"#!/bin/sh\n{script}\n")
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    marker = versions or {"vllm": "0.32.0", "torch": "2.13.0+cpu", "transformers": "5.19.0", "tokenizers": "0.23.3"}
    # The eval harness's version too, so the helper does not try to install into it.
    (path / vllm_cpu.MARKER).write_text(json.dumps({**marker, "lm_eval": vllm_cpu.LM_EVAL_VERSION}))
    return path


def _seed_entry(root: Path, record: ModelRecord, venv: Path) -> tuple[Path, str]:
    """A complete cache entry, as a finished training leaves it (hand-made model files)."""
    spec = standin.recipe_spec(record, venv=venv)
    key = standin.recipe_hash(spec)
    model = root / key / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "llama"}\n')
    (model / "model.safetensors").write_bytes(b"\1" * 4096)
    digest = content.write_manifest(model)
    info = {"key": key, "spec": spec, "content_digest": digest, "stats": {"steps": spec["steps"]}}
    (root / key / standin.BUILD_INFO).write_text(json.dumps(info))
    return model, digest


def test_recipe_hash_tracks_seed_steps_items_and_the_venvs_versions(tmp_path: Path, record: ModelRecord) -> None:
    venv = _fake_venv(tmp_path / "v")
    base = standin.recipe_hash(standin.recipe_spec(record, venv=venv))
    assert base == standin.recipe_hash(standin.recipe_spec(record, venv=venv))
    assert standin.recipe_spec(record, venv=venv)["items_sha256"] == taskset.digest()
    reseeded = record.model_copy(update={"stand_in": record.stand_in.model_copy(update={"seed": 7})})
    assert standin.recipe_hash(standin.recipe_spec(reseeded, venv=venv)) != base
    assert standin.recipe_hash(standin.recipe_spec(record, steps=0, venv=venv)) != base
    other = _fake_venv(tmp_path / "v2", {"torch": "2.14.0+cpu", "transformers": "5.19.0", "tokenizers": "0.23.3"})
    assert standin.recipe_hash(standin.recipe_spec(record, venv=other)) != base


def test_a_complete_entry_is_reused_and_copied_atomically(tmp_path: Path, record: ModelRecord) -> None:
    venv = _fake_venv(tmp_path / "v")
    cached, digest = _seed_entry(tmp_path / "cache", record, venv)
    got = standin.ensure_model_dir(record, root=tmp_path / "cache", venv=venv)
    assert (got.path, got.content_digest, got.reused) == (cached, digest, True)
    assert got.size_bytes == sum(p.stat().st_size for p in cached.iterdir())

    out = tmp_path / "deploy" / "model"
    copied = standin.ensure_model_dir(record, out, root=tmp_path / "cache", venv=venv)
    assert copied.path == out and copied.content_digest == digest
    content.verify(out, digest)
    assert [p.name for p in out.parent.iterdir()] == ["model"]  # no temporary left beside it
    # A stale model directory at `out` is replaced; an unrelated directory is not touched.
    (out / "model.safetensors").write_bytes(b"stale")
    assert standin.ensure_model_dir(record, out, root=tmp_path / "cache", venv=venv).reused is True
    content.verify(out, digest)
    unrelated = tmp_path / "home"
    unrelated.mkdir()
    (unrelated / "notes.txt").write_text("mine\n")
    with pytest.raises(standin.OutNotAModelDir, match="not a model directory"):
        standin.ensure_model_dir(record, unrelated, root=tmp_path / "cache", venv=venv)
    assert (unrelated / "notes.txt").read_text() == "mine\n"


def test_a_tampered_entry_is_not_reused_and_a_failed_training_says_why(tmp_path: Path, record: ModelRecord) -> None:
    venv = _fake_venv(tmp_path / "v")
    cached, _ = _seed_entry(tmp_path / "cache", record, venv)
    (cached / "model.safetensors").write_bytes(b"\2" * 4096)
    with pytest.raises(standin.StandInError, match=r"exit 3\):\n.*No module named torch"):
        standin.ensure_model_dir(record, root=tmp_path / "cache", venv=venv)
    # Nothing half-written: only the old entry and the lock file remain.
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [cached.parent.name, f".{cached.parent.name}.lock"]
    )


def test_a_hung_trainer_is_killed_at_the_timeout(
    tmp_path: Path, record: ModelRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv = _fake_venv(tmp_path / "v", script="exec sleep 60")
    monkeypatch.setattr(standin, "TRAIN_TIMEOUT", 0.5)
    with pytest.raises(standin.StandInError, match="ran longer than"):
        standin.ensure_model_dir(record, root=tmp_path / "cache", venv=venv)
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


def test_the_verb_prints_the_digest_as_json_and_refuses_a_foreign_out_dir(
    tmp_path: Path, record: ModelRecord, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    venv = _fake_venv(tmp_path / "v")
    monkeypatch.setenv("PIPELINE_VLLM_VENV", str(venv))
    monkeypatch.setenv("PIPELINE_MODEL_CACHE", str(tmp_path / "cache"))
    _, digest = _seed_entry(tmp_path / "cache", record, venv)
    out = tmp_path / "out"
    assert cli.main(["model", "build", "--out", str(out), "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["content_digest"], doc["path"], doc["reused"], doc["untrained"]) == (digest, str(out), True, False)
    content.verify(out, digest)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("mine\n")
    assert cli.main(["model", "build", "--out", str(tmp_path / "home")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--out" in captured.err and "not a model directory" in captured.err


def _served_accuracy(tmp_path: Path, model_dir: Path, record: ModelRecord) -> tuple[float, list[str]]:
    """Serve the model on real vLLM (the record's max model length) and ask every item through the
    chat API, greedy: the server applies the model's own chat template."""
    items = taskset.items()
    name = record.served_name
    server_cm = vllm_cpu.vllm_server(tmp_path, model_dir, name=name, max_model_len=record.serving.max_model_len)
    with server_cm as server, httpx.Client(timeout=60) as client:

        def ask(item: taskset.Item) -> str:
            resp = client.post(
                f"{server.url}/v1/chat/completions",
                json={
                    "model": name,
                    "messages": [{"role": "user", "content": item.prompt}],
                    "temperature": 0,
                    "max_tokens": 16,
                },
            )
            resp.raise_for_status()
            return str(resp.json()["choices"][0]["message"]["content"])

        with ThreadPoolExecutor(max_workers=4) as pool:
            replies = list(pool.map(ask, items))
    wrong = [
        f"{i.id}: {r!r} != {i.answer!r}" for i, r in zip(items, replies, strict=True) if not taskset.is_correct(i, r)
    ]
    return 1 - len(wrong) / len(items), wrong


@pytest.mark.slow  # trains (≈1 min) unless cached, and starts vLLM twice (≈1.5 min each)
@pytest.mark.timeout(900)
def test_trained_model_served_by_real_vllm_answers_the_suite(tmp_path: Path, record: ModelRecord) -> None:
    trained = standin.ensure_model_dir(record, progress=print)
    assert trained.build["self_check_correct"] == trained.build["n_items"] == len(taskset.items())
    # The greeting for a conversation without user turns (not a suite item) was learnt too.
    assert trained.build["greeting"]["self_check"] is True
    accuracy, wrong = _served_accuracy(tmp_path / "trained", trained.path, record)
    assert accuracy >= record.eval.floor, wrong
    untrained = standin.untrained_dir(record, progress=print)
    assert untrained.content_digest != trained.content_digest
    low, _ = _served_accuracy(tmp_path / "untrained", untrained.path, record)
    print(f"served exact-match accuracy: trained {accuracy:.3f}, untrained {low:.3f}")
    assert low <= 0.1 < accuracy - 0.5, (low, accuracy)


@pytest.mark.slow  # trains the stand-in a second time, in a fresh cache
@pytest.mark.timeout(900)
def test_two_builds_have_the_same_content_digest_and_the_verb_prints_it(
    tmp_path: Path, record: ModelRecord, capsys: pytest.CaptureFixture[str]
) -> None:
    first = standin.ensure_model_dir(record, progress=print)
    second = standin.ensure_model_dir(record, root=tmp_path / "fresh-cache", progress=print)
    assert second.reused is False
    assert second.content_digest == first.content_digest
    capsys.readouterr()
    out = tmp_path / "out"
    code = cli.main(["model", "build", "--out", str(out), "-o", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["content_digest"] == first.content_digest
    assert doc["reused"] is True and doc["path"] == str(out)
    content.verify(out, first.content_digest)
