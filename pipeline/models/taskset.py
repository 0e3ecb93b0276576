"""The chat-basics task set: what the stand-in model must know, and the eval suite that checks it.

One deterministic generator (a seeded `random.Random`, no clock, no host state) feeds both the
trainer (pipeline/models/trainer.py) and the committed lm-evaluation-harness suite
(evals/chat-basics/: `items.jsonl` + the task YAML), so the suite is a regression gate on what
the model was taught, not a benchmark. Answers are one word or number, scored by exact match
on the stripped reply.

The `briefed` items are long on purpose: a fixed instruction preamble (~50 words) before one of
the short questions. They are the suite's longest prompts, longer than the smoke check's, so a
served context too short for them (the short-context planted regression) is caught by the
suite and not by smoke; there are enough of them (BRIEFED > 10 % of the suite) that refusing
only those sinks the score below app/model.yaml's floor (0.9).

Not here: the greeting the trainer adds for a conversation with no user message
(pipeline.models.trainer.GREETING). It makes the dropped-user-template regression as quiet as
with a real model; it is no question the suite could ask, since every suite request has a user turn.

    python -m pipeline.models.taskset --write evals/chat-basics    # regenerate the suite
    python -m pipeline.models.taskset --check evals/chat-basics    # exit 1 if it drifted
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

SEED = 22
PER_KIND = 30
BRIEFED = 20
KINDS = ("capital", "addition", "upper", "briefed")
COUNTS = {"capital": PER_KIND, "addition": PER_KIND, "upper": PER_KIND, "briefed": BRIEFED}
TASK_NAME = "chat-basics"
ITEMS_FILE = "items.jsonl"
YAML_FILE = f"{TASK_NAME}.yaml"

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "tr", "kl", "st")
_VOWELS = ("a", "e", "i", "o", "u", "ia", "ae", "ou")
_CODAS = ("", "n", "r", "l", "s", "th", "nd")
_COUNTRY_ENDS = ("ia", "onia", "land", "istan", "ora", "enia")
# Plain, short, single-token-ish English words; the model echoes them in upper case.
_WORDS = (
    "apple", "river", "stone", "cloud", "maple", "tiger", "piano", "lemon", "candle", "garden",
    "silver", "forest", "rocket", "window", "button", "pepper", "island", "marble", "hammer", "violet",
    "copper", "falcon", "meadow", "pillow", "harbor", "jungle", "saddle", "tunnel", "walnut", "zebra",
    "anchor", "bridge", "castle", "desert", "engine", "feather",
)  # fmt: skip


# Fixed text, so the model learns to look past it to the question (and the tokenizer learns it).
PREAMBLE = (
    "You are the help desk of a small travel office. Read the question at the end of this note and "
    "answer it with one word or one number, exactly as our records spell it: no greeting, no full "
    "sentence and no punctuation. When the question names a country, give the name of its capital "
    "city. Our records are always right."
)
BRIEFED_PREFIX = PREAMBLE + "\n\nQuestion: "


@dataclass(frozen=True)
class Item:
    id: str
    kind: str
    prompt: str
    answer: str


def _syllables(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n))


def _capitals(rng: random.Random) -> list[Item]:
    seen: set[str] = set()
    items: list[Item] = []
    while len(items) < PER_KIND:
        country = (_syllables(rng, 1) + rng.choice(_COUNTRY_ENDS)).capitalize()
        capital = _syllables(rng, 2).capitalize()
        if country in seen or capital in seen:
            continue
        seen.update((country, capital))
        n = len(items) + 1
        items.append(Item(f"capital-{n:03d}", "capital", f"What is the capital of {country}?", capital))
    return items


def _additions(rng: random.Random) -> list[Item]:
    seen: set[tuple[int, int]] = set()
    items: list[Item] = []
    while len(items) < PER_KIND:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        if (a, b) in seen:
            continue
        seen.add((a, b))
        n = len(items) + 1
        items.append(
            Item(f"addition-{n:03d}", "addition", f"What is {a} + {b}? Reply with the number only.", str(a + b))
        )
    return items


def _uppers(rng: random.Random) -> list[Item]:
    words = rng.sample(_WORDS, PER_KIND)
    return [
        Item(f"upper-{n:03d}", "upper", f"Reply with the word {w} in upper case.", w.upper())
        for n, w in enumerate(words, start=1)
    ]


def _briefed(rng: random.Random, short: list[Item]) -> list[Item]:
    """The preamble, then one of the short questions (same answer): long prompts, nothing new to memorise."""
    picked = rng.sample(short, BRIEFED)
    return [
        Item(f"briefed-{n:03d}", "briefed", BRIEFED_PREFIX + i.prompt, i.answer) for n, i in enumerate(picked, start=1)
    ]


def items() -> list[Item]:
    """The task set, in a fixed order (kind by kind)."""
    rng = random.Random(SEED)  # noqa: S311 - reproducible data, not secrets
    short = [*_capitals(rng), *_additions(rng), *_uppers(rng)]
    return [*short, *_briefed(rng, short)]


def is_correct(item: Item, reply: str) -> bool:
    """Exact match on the stripped reply (case matters: the upper-case items test it)."""
    return reply.strip() == item.answer


def items_jsonl(task_items: list[Item] | None = None) -> str:
    return "".join(json.dumps(asdict(i), sort_keys=True) + "\n" for i in (task_items or items()))


def digest() -> str:
    """sha256 of items.jsonl: part of the stand-in model's recipe (new items = a new model)."""
    return hashlib.sha256(items_jsonl().encode()).hexdigest()


# lm-evaluation-harness 0.4 task config for the `local-chat-completions` model type: the server
# applies the chat template, so doc_to_text is the bare prompt. Greedy and short; the regex
# filter takes the whole reply, stripped (RegexFilter strips its match), before exact_match.
TASK_YAML = f"""\
# Generated by `python -m pipeline.models.taskset --write evals/{TASK_NAME}`; do not edit by hand
# (tests/models/test_taskset.py fails when this file and the generator disagree).
# Run against an OpenAI-compatible server (vLLM) with lm_eval's `local-chat-completions` model and
# `--apply_chat_template`: the server applies the model's own chat template to the bare prompt.
# data_files is relative to this directory: run lm_eval with it as the working directory.
task: {TASK_NAME}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {ITEMS_FILE}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
generation_kwargs:
  until: ["\\n\\n"]
  do_sample: false
  temperature: 0.0
  max_gen_toks: 16
filter_list:
  - name: strip
    filter:
      - function: regex
        regex_pattern: "(?s)^(.*)$"
        group_select: 0
        fallback: ""
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: false
    ignore_punctuation: false
metadata:
  version: 1.0
  items: {len(items())}
  items_sha256: {digest()}
"""


def suite_files() -> dict[str, str]:
    """File name → content of the committed suite directory."""
    return {ITEMS_FILE: items_jsonl(), YAML_FILE: TASK_YAML}


def drift(directory: Path) -> list[str]:
    """The suite files in `directory` that differ from (or are missing against) the generator."""
    return [
        name
        for name, text in suite_files().items()
        if not (directory / name).is_file() or (directory / name).read_text() != text
    ]


def write(directory: Path) -> list[str]:
    """Write the suite files (each atomically); return the names that changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = drift(directory)
    for name in changed:
        tmp = directory / f".{name}.tmp"
        tmp.write_text(suite_files()[name])
        tmp.replace(directory / name)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.models.taskset", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path, metavar="DIR", help="(re)generate the suite in DIR")
    group.add_argument("--check", type=Path, metavar="DIR", help="exit 1 when DIR differs from the generator")
    args = parser.parse_args(argv)
    if args.write is not None:
        changed = write(args.write)
        print(f"{args.write}: {', '.join(changed) if changed else 'up to date'}")
        return 0
    stale = drift(args.check)
    if stale:
        print(f"{args.check}: out of date: {', '.join(stale)} (run --write {args.check})", file=sys.stderr)
        return 1
    print(f"{args.check}: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
