"""Train the stand-in chat model (recipe "tiny-chat") on the task set, on CPU, deterministically.

Run with the vLLM venv's interpreter (torch, transformers and tokenizers live only there):

    <vllm-venv>/bin/python pipeline/models/trainer.py --items items.jsonl --seed 1234 --steps 600 --out DIR

Like pipeline/runtime/tiny_model.py, the module is stdlib-only at import time (heavy imports
inside `train()`), so the project's venv imports the recipe constants below to key the cache.

What the model learns: every item rendered through the model's OWN chat template (the one
saved into tokenizer_config.json and applied by vLLM when it serves the chat API), with the loss
on the answer tokens + EOS only. A template that dropped the user's text would leave nothing
to tell the items apart, and the served answers would fail the eval.

What determines the output bytes: the items, the seed, the steps, the recipe constants below,
this file's code, the thread count (fixed: float reductions depend on it) and the versions
of torch, transformers, tokenizers and safetensors in the venv. `standin.recipe_spec()` hashes
them all to key the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

RECIPE = "tiny-chat"
# One thread: beside other work on a 2-core machine, two OpenMP threads spin against each other
# (measured: ~4x the CPU per step under load); the count is part of the recipe (float sums depend on it).
THREADS = 1
BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
USER, ASSISTANT, SYSTEM = "<|user|>", "<|assistant|>", "<|system|>"
SPECIAL_TOKENS = (BOS, EOS, PAD, UNK, USER, ASSISTANT, SYSTEM)
VOCAB_SIZE = 640

# Role markers are special tokens; the generation prompt ends where the answer starts.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<|system|>\n{{ message['content'] | trim }}\n"
    "{% elif message['role'] == 'user' %}<|user|>\n{{ message['content'] | trim }}\n"
    "{% elif message['role'] == 'assistant' %}<|assistant|>\n{{ message['content'] | trim }}{{ eos_token }}\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# head_dim = 64 / 1 = 64 (vLLM's CPU attention rejects smaller heads). RoPE makes a long
# max_position_embeddings free, so app/model.yaml's serving.maxModelLen (4096) fits. This is about
# the smallest shape that memorises the 90 items with wide margins (172k parameters, 90/90 served).
MODEL_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 1,
    "num_key_value_heads": 1,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "initializer_range": 0.02,
}
OPTIMIZER: dict[str, Any] = {"lr": 3e-3, "warmup": 30, "weight_decay": 0.0, "betas": [0.9, 0.98]}
SAVE_DTYPE = "bfloat16"  # what vLLM serves (vllm_cpu.server_argv --dtype); the self-check uses it too

Item = dict[str, str]


def recipe_constants() -> dict[str, Any]:
    """The recipe's fixed parts (the cache key adds items, seed, steps, this file and versions)."""
    return {
        "recipe": RECIPE,
        "threads": THREADS,
        "special_tokens": list(SPECIAL_TOKENS),
        "vocab_size": VOCAB_SIZE,
        "chat_template": CHAT_TEMPLATE,
        "model": MODEL_CONFIG,
        "optimizer": OPTIMIZER,
        "save_dtype": SAVE_DTYPE,
    }


def read_items(path: Path) -> list[Item]:
    items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for n, item in enumerate(items, start=1):
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("id", "prompt", "answer")):
            raise SystemExit(f"{path}:{n}: an item needs string id, prompt and answer")
    return items


def train(items: list[Item], seed: int, steps: int, out: Path) -> dict[str, Any]:
    """Train and save into `out` (must not exist; the caller renames it into place). Returns stats."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"  # BPE training: one thread, one merge order
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    t0 = time.monotonic()
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)

    # Tokenizer: byte-level BPE (any input encodes) with merges learnt from the task set itself.
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    bpe = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([f"{i['prompt']}\n{i['answer']}" for i in items], trainer=bpe)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=[USER, ASSISTANT, SYSTEM],
        model_max_length=int(MODEL_CONFIG["max_position_embeddings"]),
    )
    fast.chat_template = CHAT_TEMPLATE
    ids = {t: int(fast.convert_tokens_to_ids(t)) for t in (BOS, EOS, PAD)}

    # Examples through the model's own template: prompt = generation prompt, target = answer + EOS.
    prompts: list[list[int]] = []
    targets: list[list[int]] = []
    for item in items:
        user = [{"role": "user", "content": item["prompt"]}]
        prompt_text = str(fast.apply_chat_template(user, tokenize=False, add_generation_prompt=True))
        full_text = str(
            fast.apply_chat_template([*user, {"role": "assistant", "content": item["answer"]}], tokenize=False)
        )
        if not full_text.startswith(prompt_text + item["answer"] + EOS):
            raise SystemExit(f"{item['id']}: the chat template does not put the answer after the generation prompt")
        prompts.append(fast(prompt_text, add_special_tokens=False)["input_ids"])
        targets.append(fast(item["answer"], add_special_tokens=False)["input_ids"] + [ids[EOS]])
    width = max(len(p) + len(t) for p, t in zip(prompts, targets, strict=True))
    input_ids = torch.full((len(items), width), ids[PAD], dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    attention = torch.zeros((len(items), width), dtype=torch.long)
    for row, (p, t) in enumerate(zip(prompts, targets, strict=True)):
        seq = p + t
        input_ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, len(p) : len(seq)] = torch.tensor(t)  # the model shifts labels itself
        attention[row, : len(seq)] = 1

    config = LlamaConfig(
        **MODEL_CONFIG,
        vocab_size=len(fast),
        bos_token_id=ids[BOS],
        eos_token_id=ids[EOS],
        pad_token_id=ids[PAD],
    )
    model = LlamaForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=OPTIMIZER["lr"],
        betas=tuple(OPTIMIZER["betas"]),
        weight_decay=OPTIMIZER["weight_decay"],
    )
    warmup = min(int(OPTIMIZER["warmup"]), max(steps // 10, 1))

    def lr_at(step: int) -> float:
        # Linear warm-up, then linear decay to 10 % (the last steps settle the margins).
        if step < warmup:
            return (step + 1) / warmup
        return 1.0 - 0.9 * (step - warmup) / max(steps - warmup, 1)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    loss_value = float("nan")
    for step in range(steps):
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss_value = float(loss.detach())
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step + 1}/{steps} loss {loss_value:.4f}", file=sys.stderr, flush=True)
    train_seconds = time.monotonic() - t0

    model = model.to(getattr(torch, SAVE_DTYPE)).eval()
    model.generation_config.do_sample = False
    correct = _self_check(model, prompts, targets, ids[EOS])

    out.mkdir(parents=True)
    model.save_pretrained(out, safe_serialization=True)
    fast.save_pretrained(out)
    # Newer transformers write the template to chat_template.jinja; keep it in
    # tokenizer_config.json too so every reader (vLLM, older transformers) finds it.
    cfg_path = out / "tokenizer_config.json"
    tok_cfg = json.loads(cfg_path.read_text())
    tok_cfg["chat_template"] = CHAT_TEMPLATE
    cfg_path.write_text(json.dumps(tok_cfg, indent=2, sort_keys=True) + "\n")
    return {
        "steps": steps,
        "seed": seed,
        "params": params,
        "final_loss": round(loss_value, 6) if steps else None,
        "train_seconds": round(train_seconds, 1),
        "self_check_correct": correct,
        "n_items": len(items),
    }


def _self_check(model: Any, prompts: list[list[int]], targets: list[list[int]], eos: int) -> int:
    """Greedy-decode each prompt in the saved dtype; count exact target-token matches (incl. EOS)."""
    import torch

    correct = 0
    with torch.no_grad():
        for p, t in zip(prompts, targets, strict=True):
            seq = list(p)
            for _ in range(len(t)):
                logits = model(input_ids=torch.tensor([seq])).logits[0, -1]
                seq.append(int(logits.argmax()))
                if seq[-1] == eos:
                    break
            correct += seq[len(p) :] == t
    return correct


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--items", type=Path, required=True, help="task set as JSON lines (id, prompt, answer)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True, help="optimizer steps (0 = the untrained model)")
    parser.add_argument("--out", type=Path, required=True, help="model directory to create (must not exist)")
    args = parser.parse_args(argv)
    if args.steps < 0:
        parser.error("--steps must be >= 0")
    if args.out.exists():
        parser.error(f"--out {args.out} exists")
    stats = train(read_items(args.items), args.seed, args.steps, args.out)
    # Last stdout line: the stats as JSON (the caller parses it).
    print(json.dumps(stats, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
