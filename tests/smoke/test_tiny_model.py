"""The tiny model's spec, cache marker and chat template: pure logic, no torch needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.runtime import tiny_model


def test_head_dim_is_one_the_cpu_attention_kernel_accepts() -> None:
    # vLLM's CPU kernel rejected head_dim 16; 64 is a standard Llama head size.
    assert tiny_model.head_dim() == 64
    assert tiny_model.MODEL_CONFIG["hidden_size"] % tiny_model.MODEL_CONFIG["num_attention_heads"] == 0


def test_model_config_takes_vocab_and_special_ids_from_the_tokenizer() -> None:
    ids = {tiny_model.BOS: 0, tiny_model.EOS: 1, tiny_model.PAD: 2, tiny_model.UNK: 3}
    cfg = tiny_model.model_config(300, ids)
    assert cfg["vocab_size"] == 300
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (0, 1, 2)
    # LlamaConfig kwargs only: the architecture/model_type keys belong to config.json.
    assert "architectures" not in cfg
    assert "model_type" not in cfg


def test_spec_hash_is_stable_and_tracks_every_input(monkeypatch: pytest.MonkeyPatch) -> None:
    before = tiny_model.spec_hash()
    assert before == tiny_model.spec_hash()
    monkeypatch.setattr(tiny_model, "SEED", tiny_model.SEED + 1)
    assert tiny_model.spec_hash() != before
    monkeypatch.undo()
    monkeypatch.setattr(tiny_model, "CHAT_TEMPLATE", tiny_model.CHAT_TEMPLATE + " ")
    assert tiny_model.spec_hash() != before


def _fake_model_dir(path: Path, spec: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in tiny_model.REQUIRED_FILES:
        (path / name).write_text("{}")
    (path / tiny_model.MARKER).write_text(json.dumps({"spec": spec}))
    return path


def test_is_complete_needs_every_file_and_the_current_spec(tmp_path: Path) -> None:
    assert not tiny_model.is_complete(tmp_path / "absent")
    good = _fake_model_dir(tmp_path / "good", tiny_model.spec_hash())
    assert tiny_model.is_complete(good)
    stale = _fake_model_dir(tmp_path / "stale", "0" * 16)
    assert not tiny_model.is_complete(stale)
    partial = _fake_model_dir(tmp_path / "partial", tiny_model.spec_hash())
    (partial / "model.safetensors").unlink()
    assert not tiny_model.is_complete(partial)


def test_main_reuses_a_complete_model_without_importing_torch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _fake_model_dir(tmp_path / "m", tiny_model.spec_hash())
    assert tiny_model.main(["--out", str(out)]) == 0
    assert "reusing" in capsys.readouterr().out


def test_chat_template_renders_a_conversation() -> None:
    jinja2 = pytest.importorskip("jinja2")
    template = jinja2.Environment(autoescape=False).from_string(tiny_model.CHAT_TEMPLATE)
    text = template.render(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi"},
            {"role": "user", "content": "Again"},
        ],
        bos_token=tiny_model.BOS,
        eos_token=tiny_model.EOS,
        add_generation_prompt=True,
    )
    assert text.startswith(tiny_model.BOS + "<<SYS>> Be brief. <</SYS>>")
    assert "[INST] Hello [/INST]\nHi" + tiny_model.EOS in text
    assert text.endswith("[INST] Again [/INST]\n")


def test_corpus_covers_the_smoke_prompt_words() -> None:
    from pipeline.probes.smoke_checks import PROMPT

    corpus_words = {w.strip(".,!?:").lower() for s in tiny_model.CORPUS for w in s.split()}
    prompt_words = {w.strip(".,!?:").lower() for w in PROMPT.split()}
    assert prompt_words <= corpus_words
