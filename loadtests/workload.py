"""What the simulated users ask: prompts from the shipped set, lengths from configurable distributions."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

PROMPTS_PATH = Path(__file__).resolve().parent / "prompts.jsonl"


@dataclass(frozen=True)
class Distribution:
    """`fixed:N`, `uniform:LO:HI`, `normal:MEAN:STD`, `lognormal:MEDIAN:SIGMA`; samples are ints >= 1."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> Distribution:
        kind, _, rest = spec.partition(":")
        try:
            nums = [float(x) for x in rest.split(":")] if rest else []
        except ValueError as exc:
            raise ValueError(f"bad distribution {spec!r}: numbers expected after {kind}:") from exc
        arity = {"fixed": 1, "uniform": 2, "normal": 2, "lognormal": 2}
        if kind not in arity or len(nums) != arity[kind]:
            raise ValueError(
                f"bad distribution {spec!r}: use fixed:N | uniform:LO:HI | normal:MEAN:STD | lognormal:MEDIAN:SIGMA"
            )
        if kind == "uniform" and nums[0] > nums[1]:
            raise ValueError(f"bad distribution {spec!r}: LO > HI")
        return cls(kind, nums[0], nums[1] if len(nums) > 1 else 0.0)

    def sample(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            x = self.a
        elif self.kind == "uniform":
            x = rng.uniform(self.a, self.b)
        elif self.kind == "normal":
            x = rng.gauss(self.a, self.b)
        else:
            x = rng.lognormvariate(math.log(max(self.a, 1.0)), self.b)
        return max(1, round(x))

    @property
    def mean(self) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        if self.kind == "normal":
            return self.a
        return self.a * math.exp(self.b**2 / 2)


def load_prompts(path: Path = PROMPTS_PATH) -> list[str]:
    prompts = [json.loads(line)["prompt"] for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


@dataclass
class PromptFactory:
    """Builds a prompt of about N tokens: a shipped prompt, padded with context from the others.

    Tokens are approximated as words (~1.3 tokens each for English BPE); exact counts come
    back in the server's usage chunk.
    """

    prompts: list[str]
    rng: random.Random

    def make(self, target_tokens: int) -> str:
        base = self.rng.choice(self.prompts)
        words = base.split()
        target_words = max(1, round(target_tokens / 1.3))
        if len(words) >= target_words:
            return " ".join(words[:target_words])
        pool = " ".join(self.prompts).split()
        context: list[str] = []
        while len(context) + len(words) < target_words:
            context.extend(pool[: target_words - len(words) - len(context)])
        return "Context: " + " ".join(context) + "\n\nQuestion: " + base
