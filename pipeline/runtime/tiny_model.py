"""Build a tiny random-weight Llama that the REAL vLLM engine can serve (no download possible).

Run it with the vLLM venv's interpreter (it needs torch, transformers and tokenizers, which
never enter the project's own venv):

    <vllm-venv>/bin/python pipeline/runtime/tiny_model.py --out .cache/tiny-llama

The module is self-contained on purpose (stdlib at import time, heavy imports inside
`build()`), so it runs as a plain script in that venv, while the pure parts below (spec,
chat template, completeness marker) are importable and testable from the project's venv.
The output is deterministic (seeded weights, fixed corpus) and about a megabyte; the model
generates gibberish tokens, which is all the smoke stage needs from it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

SEED = 1234
BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
SPECIAL_TOKENS = (BOS, EOS, PAD, UNK)
# Byte-level BPE starts from the 256 byte symbols; ~100 merges on top keeps it tiny.
VOCAB_SIZE = 384

# A handful of sentences: enough for the BPE trainer to learn merges for the words the
# smoke requests use; what the model does with them is random anyway.
CORPUS = (
    "Hello! How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "Say hello to the gateway and the model server.",
    "You are a helpful assistant. Answer briefly.",
    "Large language models generate one token at a time.",
    "The smoke test checks health, models, chat and streaming.",
    "Tokens per second, time to first token, and latency percentiles.",
    "user assistant system: what is the capital of France? Paris.",
)

# Llama-2-style markers, written with the tokenizer's own specials so the engine stops on EOS.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<<SYS>> {{ message['content'] }} <</SYS>>\n"
    "{% elif message['role'] == 'user' %}[INST] {{ message['content'] }} [/INST]\n"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}\n"
    "{% endif %}"
    "{% endfor %}"
)

# head_dim = hidden / heads = 64: vLLM's CPU attention kernel rejects small head sizes (16).
MODEL_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "initializer_range": 0.02,
}

# Files a complete model directory holds (the marker is written last).
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
MARKER = ".tiny-model.json"


def spec() -> dict[str, Any]:
    """Everything that determines the output; its hash keys the cache."""
    return {
        "seed": SEED,
        "vocab_size": VOCAB_SIZE,
        "special_tokens": list(SPECIAL_TOKENS),
        "corpus": list(CORPUS),
        "chat_template": CHAT_TEMPLATE,
        "model": MODEL_CONFIG,
    }


def spec_hash() -> str:
    return hashlib.sha256(json.dumps(spec(), sort_keys=True).encode()).hexdigest()[:16]


def head_dim(config: dict[str, Any] | None = None) -> int:
    cfg = config or MODEL_CONFIG
    return int(cfg["hidden_size"]) // int(cfg["num_attention_heads"])


def model_config(vocab_size: int, token_ids: dict[str, int]) -> dict[str, Any]:
    """The LlamaConfig kwargs: the fixed shape plus what the trained tokenizer decided."""
    return {
        **{k: v for k, v in MODEL_CONFIG.items() if k not in ("architectures", "model_type")},
        "vocab_size": vocab_size,
        "bos_token_id": token_ids[BOS],
        "eos_token_id": token_ids[EOS],
        "pad_token_id": token_ids[PAD],
    }


def is_complete(out: Path) -> bool:
    """True when `out` holds a model built from the current spec (so it can be reused)."""
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("spec") == spec_hash() and all((out / name).is_file() for name in REQUIRED_FILES)


def build(out: Path) -> Path:
    """Train the tokenizer, initialise the model, save both into `out` (atomically)."""
    # Heavy imports here: this only runs inside the vLLM venv.
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.manual_seed(SEED)

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(CORPUS), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=int(MODEL_CONFIG["max_position_embeddings"]),
    )
    fast.chat_template = CHAT_TEMPLATE
    ids = {t: int(fast.convert_tokens_to_ids(t)) for t in SPECIAL_TOKENS}

    config = LlamaConfig(**model_config(len(fast), ids))
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    model.generation_config.do_sample = False

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-model-", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        fast.save_pretrained(tmp)
        # Newer transformers write the template to chat_template.jinja; keep it in
        # tokenizer_config.json too so any reader (vLLM, older transformers) finds it.
        cfg_path = tmp / "tokenizer_config.json"
        tok_cfg = json.loads(cfg_path.read_text())
        tok_cfg["chat_template"] = CHAT_TEMPLATE
        cfg_path.write_text(json.dumps(tok_cfg, indent=2) + "\n")
        (tmp / MARKER).write_text(json.dumps({"spec": spec_hash(), "vocab_size": len(fast), **ids}) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="model directory to create (reused when complete)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete model is there")
    args = parser.parse_args(argv)
    if is_complete(args.out) and not args.force:
        print(f"tiny model: reusing {args.out}")
        return 0
    build(args.out)
    size = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(f"tiny model: built {args.out} ({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
