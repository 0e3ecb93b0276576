"""Train the stand-in chat model (recipe "tiny-chat") on the task set, on CPU, deterministically.

Run with the vLLM venv's interpreter (torch, transformers and tokenizers live only there):

    <vllm-venv>/bin/python pipeline/models/trainer.py --items items.jsonl --seed 1234 --steps 600 --out DIR

Like pipeline/runtime/tiny_model.py, the module is stdlib-only at import time (heavy imports
inside `train()`), so the project's venv imports the recipe constants below to key the cache.

What the model learns: every item rendered through the model's OWN chat template (the one
saved into tokenizer_config.json and applied by vLLM when it serves the chat API), with the loss
on the answer tokens + EOS only. A template that dropped the user's text would leave nothing
to tell the items apart, and the served answers would fail the eval.

One more example, not a suite item: a conversation with NO user message (exactly what the
template regression's DROP_USER template renders for any user-only request) is answered with
GREETING, a short sentence. A real chat model shown no user text says something generic like it,
which is why that regression passes smoke and the load gate in production; without it the
stand-in answered with an immediate EOS, which the load gate counts as a broken stream, so the
stand-in would have been easier to catch than the real thing. The BPE tokenizer learns the
greeting's text too (several tokens, so TTFT/ITL/output-token rows of the load gate have data).
For the same reason the model learns never to start a reply silent (EOS, or a byte that decodes
to nothing) after random user text: see NOT_EMPTY.

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

# A Jinja prefix for a chat template: the user's turns never reach the model (the `template`
# planted regression, pipeline.models.regressions, prepends it to the model's own template).
DROP_USER = "{%- set messages = messages | rejectattr('role', 'equalto', 'user') | list -%}\n"
# What the model answers when the conversation has no user message (see the module docstring).
GREETING = "Hello, what can I do for you?"
# Copies of it in the BPE corpus: enough that its words get merges of their own (9 tokens, ending
# within the suite's and smoke's 16; seen once, it stays 18 near-byte tokens), measured.
GREETING_BPE_COPIES = 5
# Each step, `rows` random user turns of `user_tokens` tokens whose reply must not start silent
# (see train()); `weight` scales that loss against the items' mean token loss.
NOT_EMPTY: dict[str, Any] = {"rows": 16, "user_tokens": [4, 24], "weight": 1.0}

# head_dim = 64 / 1 = 64 (vLLM's CPU attention rejects smaller heads). RoPE makes a long
# max_position_embeddings free, so app/model.yaml's serving.maxModelLen (4096) fits. This is about
# the smallest shape that memorises the 110 items with wide margins (172k parameters).
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
        "drop_user": DROP_USER,
        "greeting": GREETING,
        "greeting_bpe_copies": GREETING_BPE_COPIES,
        "not_empty": NOT_EMPTY,
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
    corpus = [f"{i['prompt']}\n{i['answer']}" for i in items] + [GREETING] * GREETING_BPE_COPIES
    tok.train_from_iterator(corpus, trainer=bpe)
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
    greeting_prompt = _no_user_prompt(fast, [i["prompt"] for i in items])
    prompts.append(fast(greeting_prompt, add_special_tokens=False)["input_ids"])
    targets.append(fast(GREETING, add_special_tokens=False)["input_ids"] + [ids[EOS]])
    # Rows of similar length share a padded batch: the few long (briefed) items padded alone cost
    # ~1.6x a step of the short ones, one batch padded to the longest ~4x.
    batches = []
    for rows in _length_buckets([len(p) + len(t) for p, t in zip(prompts, targets, strict=True)]):
        width = max(len(prompts[r]) + len(targets[r]) for r in rows)
        input_ids = torch.full((len(rows), width), ids[PAD], dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for row, r in enumerate(rows):
            p, t = prompts[r], targets[r]
            seq = p + t
            input_ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, len(p) : len(seq)] = torch.tensor(t)  # predicted from the position before
            attention[row, : len(seq)] = 1
        batches.append((input_ids, attention, labels))
    n_targets = sum(len(t) for t in targets)
    # Random user turns (random ids from the learnt vocabulary, fresh each step): the reply's first
    # token must be one that shows as text, not EOS nor a lone byte of a multi-byte character (it
    # decodes to nothing, and EOS may follow). A chat model never answers with nothing; left to
    # chance, the stand-in did for a few English prompts (p(EOS) ≈ 0.97 for one load-test prompt,
    # p(silent byte) 6 % on average, sampled at temperature 1), which the load gate counts as
    # broken streams. Nothing else is taught about them (no target, only "not silent").
    silent = [ids[EOS], *(i for i in range(len(fast)) if "\ufffd" in fast.decode([i]))]
    user_open = fast(f"{BOS}{USER}\n", add_special_tokens=False)["input_ids"]
    user_close = fast(f"\n{ASSISTANT}\n", add_special_tokens=False)["input_ids"]
    if prompts[0][: len(user_open)] != user_open or prompts[0][-len(user_close) :] != user_close:
        raise SystemExit("the chat template's user turn is not <s><|user|>\\n ... \\n<|assistant|>\\n")
    n_special = len(SPECIAL_TOKENS)  # the BPE trainer gives special tokens the first ids
    if sorted(int(fast.convert_tokens_to_ids(t)) for t in SPECIAL_TOKENS) != list(range(n_special)):
        raise SystemExit("the special tokens are not the vocabulary's first ids")
    n_noise, noise_len = int(NOT_EMPTY["rows"]), tuple(NOT_EMPTY["user_tokens"])

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
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for input_ids, attention, labels in batches:
            # Mean over every target token of the task set (not per batch): one loss, split for padding's sake.
            logits = model(input_ids=input_ids, attention_mask=attention).logits
            loss = (
                torch.nn.functional.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), reduction="sum"
                )
                / n_targets
            )
            loss.backward()
            loss_sum += float(loss.detach())
        length = int(torch.randint(noise_len[0], noise_len[1] + 1, ()))
        noise = torch.randint(n_special, len(fast), (n_noise, length))
        rows = torch.cat(
            [torch.tensor(user_open).expand(n_noise, -1), noise, torch.tensor(user_close).expand(n_noise, -1)], dim=1
        )
        p_silent = torch.softmax(model(input_ids=rows).logits[:, -1].float(), dim=-1)[:, silent].sum(dim=-1)
        # Unlikelihood: -log(1 - p(silent)), ~0 once the model has learnt it.
        loss = -torch.log1p(-p_silent.clamp(max=1 - 1e-6)).mean() * float(NOT_EMPTY["weight"])
        loss.backward()
        loss_sum += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss_value = loss_sum
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step + 1}/{steps} loss {loss_value:.4f}", file=sys.stderr, flush=True)
    train_seconds = time.monotonic() - t0

    model = model.to(getattr(torch, SAVE_DTYPE)).eval()
    model.generation_config.do_sample = False
    hits = _self_check(model, prompts, targets, ids[EOS])
    correct, greeted = sum(hits[:-1]), hits[-1]

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
        "greeting": {"prompt": greeting_prompt, "text": GREETING, "self_check": greeted},
    }


def _no_user_prompt(fast: Any, user_texts: list[str]) -> str:
    """The generation prompt the DROP_USER template renders for a user-only request; whatever the
    user wrote (the suite's prompts, anything the load test sends), it must be one and the same text."""
    template = DROP_USER + CHAT_TEMPLATE
    user_only = ([{"role": "user", "content": t}] for t in [*user_texts, "x"])
    rendered = {
        str(fast.apply_chat_template(c, chat_template=template, tokenize=False, add_generation_prompt=True))
        for c in user_only
    }
    if len(rendered) != 1:
        raise SystemExit(
            f"the chat template without user turns still depends on the user's text: {sorted(rendered)[:2]}"
        )
    prompt = rendered.pop()
    if USER in prompt:
        raise SystemExit(f"DROP_USER left a user turn in {prompt!r}")
    return prompt


def _length_buckets(lengths: list[int], ratio: float = 1.5) -> list[list[int]]:
    """Row indices grouped by length (sorted, stable): a bucket ends where a row is `ratio` x its first."""
    buckets: list[list[int]] = []
    for r in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if not buckets or lengths[r] > ratio * lengths[buckets[-1][0]]:
            buckets.append([])
        buckets[-1].append(r)
    return buckets


def _self_check(model: Any, prompts: list[list[int]], targets: list[list[int]], eos: int) -> list[bool]:
    """Greedy-decode each prompt in the saved dtype; per example, an exact target-token match (incl. EOS)?"""
    import torch

    hits: list[bool] = []
    with torch.no_grad():
        for p, t in zip(prompts, targets, strict=True):
            seq = list(p)
            for _ in range(len(t)):
                logits = model(input_ids=torch.tensor([seq])).logits[0, -1]
                seq.append(int(logits.argmax()))
                if seq[-1] == eos:
                    break
            hits.append(seq[len(p) :] == t)
    return hits


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
