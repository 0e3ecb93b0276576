"""Planted regressions: model changes the eval gate must block while smoke and the load gate still pass.

Each is a ModelSpec the gate serves like any candidate:
  - `noisy`: the weights with Gaussian noise (each matrix + N(0, (scale·std)²), seeded);
  - `untrained`: the same recipe with 0 training steps (pipeline.models.standin.untrained_dir,
    the "wrong revision" case);
  - `template`: the good weights with a chat template that drops the user's messages: every
    request then renders as a conversation with no user message, which a chat model answers
    with generic text (the stand-in: trainer.GREETING), fluent and wrong;
  - `short-context`: the good weights served with a max_model_len (a serving-arg override) one
    token below the suite's long (`briefed`) prompts and still above what the smoke checks send:
    vLLM refuses the long items (HTTP 400, scored wrong), answers everything else.
All four still answer health, models, chat, streaming (the smoke checks pass) and carry the load
gate's SLO (latency, errors, output tokens): only the suite notices. The stand-in was taught its
greeting so the template case stays that quiet: answering with an immediate EOS instead, it
would fail the load gate on broken streams, unlike a real model.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

from pipeline.models import content, trainer
from pipeline.models.eval_gate import ModelSpec, dir_spec
from pipeline.runtime import vllm_cpu

# Keeps the tensors' dtype (bfloat16 has no numpy type, hence torch in the vLLM venv).
_NOISE_SCRIPT = """
import sys, torch
from safetensors.torch import load_file, save_file
path, scale, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
gen = torch.Generator().manual_seed(seed)
tensors = load_file(path)
for name, t in tensors.items():
    if t.is_floating_point() and t.dim() >= 2:
        f = t.float()
        tensors[name] = (f + torch.randn(f.shape, generator=gen) * f.std() * scale).to(t.dtype)
save_file(tensors, path, metadata={"format": "pt"})
"""
# Prepended to the model's own template: the user's turns never reach the model. Defined beside
# the trainer, which teaches the stand-in its greeting for exactly what this renders.
DROP_USER = trainer.DROP_USER


class PlantError(RuntimeError):
    """A planted regression could not be built; the message says which and why."""


@dataclass(frozen=True)
class Planted:
    name: str
    spec: ModelSpec
    what: str


def _copy(src: Path, out: Path) -> Path:
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out)
    return out


def noisy(src: Path, out: Path, *, scale: float = 1.0, seed: int = 7) -> Planted:
    """A copy of `src` whose weight matrices carry noise of `scale` times their own std."""
    _copy(src, out)
    weights = sorted(out.glob("*.safetensors"))
    if not weights:
        raise PlantError(f"noisy: {src} has no *.safetensors")
    for w in weights:
        proc = subprocess.run(
            [str(vllm_cpu.venv_python()), "-c", _NOISE_SCRIPT, str(w), str(scale), str(seed)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            raise PlantError(f"noisy: perturbing {w.name} failed:\n{proc.stderr[-1500:]}")
    content.write_manifest(out)
    return Planted("noisy", dir_spec(out, label="noisy"), f"weights + N(0, ({scale}·std)²) noise, seed {seed}")


def untrained(path: Path) -> Planted:
    """The recipe's model before training (built by pipeline.models.standin.untrained_dir)."""
    return Planted("untrained", dir_spec(path, label="untrained"), "the same recipe, 0 training steps")


def model_chat_template(model_dir: Path) -> str:
    """The chat template the tokenizer ships (chat_template.jinja, or tokenizer_config.json's)."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    try:
        template = json.loads((model_dir / "tokenizer_config.json").read_text()).get("chat_template")
    except (OSError, ValueError) as exc:
        raise PlantError(f"{model_dir}: cannot read tokenizer_config.json: {exc}") from exc
    if not isinstance(template, str) or not template:
        raise PlantError(f"{model_dir}: the tokenizer ships no chat template")
    return template


def dropped_user_template(good: ModelSpec, out: Path) -> Planted:
    """The good weights, served with the model's template minus every user message."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(DROP_USER + model_chat_template(good.path))
    spec = ModelSpec(good.path, good.content_digest, good.source, chat_template=out, label="template")
    return Planted("template", spec, "a chat template that drops the user's messages")


def prompt_tokens(upstream_url: str, model: str, prompts: Iterable[str], timeout: float = 30.0) -> list[int]:
    """Each prompt's length in tokens as the served model renders it (vLLM's /tokenize, chat template applied)."""
    counts: list[int] = []
    with httpx.Client(timeout=timeout) as client:
        for text in prompts:
            body = {"model": model, "messages": [{"role": "user", "content": text}], "add_generation_prompt": True}
            r = client.post(f"{upstream_url}/tokenize", json=body)
            r.raise_for_status()
            counts.append(int(r.json()["count"]))
    if not counts:
        raise PlantError("prompt_tokens: no prompts given")
    return counts


def short_context(good: ModelSpec, *, must_refuse: int, must_fit: int) -> Planted:
    """The good weights with a context one token shorter than `must_refuse` (the shortest prompt to
    break, in tokens), which must still hold `must_fit` tokens (the longest request that must pass:
    prompt + max_tokens of the smoke checks)."""
    n = must_refuse - 1
    if n < must_fit:
        raise PlantError(
            f"short_context: no max_model_len refuses a {must_refuse}-token prompt yet fits a {must_fit}-token "
            "request: the suite's long prompts must be longer than the smoke request"
        )
    spec = ModelSpec(good.path, good.content_digest, good.source, max_model_len=n, label="short")
    return Planted("short-context", spec, f"max_model_len {n}: below the suite's {must_refuse}-token prompts")
