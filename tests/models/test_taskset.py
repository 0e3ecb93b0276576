"""The chat-basics task set: deterministic, well-formed answers, and the committed suite equals the generator."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from pipeline.models import taskset

SUITE = Path(__file__).resolve().parents[2] / "evals" / "chat-basics"


def test_items_are_deterministic_unique_and_cover_every_kind() -> None:
    items = taskset.items()
    assert items == taskset.items()
    assert len({i.id for i in items}) == len(items)
    assert len({i.prompt for i in items}) == len(items)
    assert Counter(i.kind for i in items) == taskset.COUNTS
    assert set(taskset.COUNTS) == set(taskset.KINDS)


def test_briefed_prompts_are_the_longest_and_refusing_them_sinks_the_score_below_the_floor() -> None:
    from pipeline.models.record import load_record

    items = taskset.items()
    briefed = [i for i in items if i.kind == "briefed"]
    others = [i for i in items if i.kind != "briefed"]
    # Longest by words (a lower bound on tokens: the byte-level pre-tokenizer splits at every word).
    assert min(len(i.prompt.split()) for i in briefed) > 3 * max(len(i.prompt.split()) for i in others)
    floor = load_record(Path(__file__).resolve().parents[2]).eval.floor
    assert len(others) / len(items) < floor


def test_answers_are_single_short_words_a_tiny_model_can_learn() -> None:
    for item in taskset.items():
        assert re.fullmatch(r"[A-Za-z0-9]{1,12}", item.answer), item


def test_answers_are_right_by_their_own_prompt() -> None:
    for item in taskset.items():
        if item.kind == "addition":
            a, b = map(int, re.findall(r"\d+", item.prompt))
            assert 10 <= a <= 99 and 10 <= b <= 99
            assert item.answer == str(a + b), item
        elif item.kind == "briefed":
            prefix, _, question = item.prompt.rpartition("Question: ")
            assert prefix + "Question: " == taskset.BRIEFED_PREFIX
            short = next(i for i in taskset.items() if i.prompt == question)
            assert item.answer == short.answer
        elif item.kind == "upper":
            word = re.fullmatch(r"Reply with the word (\w+) in upper case\.", item.prompt)
            assert word is not None, item
            assert item.answer == word.group(1).upper()
        else:
            country = re.fullmatch(r"What is the capital of (\w+)\?", item.prompt)
            assert country is not None, item
            assert item.answer != country.group(1)
    # One capital per invented country: the facts cannot contradict each other.
    capitals = [i.answer for i in taskset.items() if i.kind == "capital"]
    assert len(set(capitals)) == len(capitals)


def test_exact_match_strips_whitespace_but_keeps_case() -> None:
    item = next(i for i in taskset.items() if i.kind == "upper")
    assert taskset.is_correct(item, f"  {item.answer}\n")
    assert not taskset.is_correct(item, item.answer.lower())
    assert not taskset.is_correct(item, f"{item.answer}.")


def test_committed_suite_equals_the_generator() -> None:
    assert taskset.drift(SUITE) == [], "run `python -m pipeline.models.taskset --write evals/chat-basics`"
    lines = (SUITE / taskset.ITEMS_FILE).read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [i.id for i in taskset.items()]


def test_task_yaml_is_a_greedy_generate_until_task_over_the_bare_prompt() -> None:
    task = YAML(typ="safe").load((SUITE / taskset.YAML_FILE).read_text())
    assert task["task"] == taskset.TASK_NAME
    assert task["dataset_kwargs"]["data_files"]["test"] == taskset.ITEMS_FILE
    assert task["output_type"] == "generate_until"
    # The server applies the chat template: the request carries the prompt only.
    assert task["doc_to_text"] == "{{prompt}}"
    assert task["doc_to_target"] == "{{answer}}"
    assert task["generation_kwargs"]["do_sample"] is False
    assert task["generation_kwargs"]["temperature"] == 0.0
    assert task["metric_list"][0]["metric"] == "exact_match"
    assert task["metric_list"][0]["ignore_case"] is False
    assert task["metadata"]["items_sha256"] == taskset.digest()
    # The filter lm_eval applies (RegexFilter: findall, first match, .strip()) yields the stripped reply.
    step = task["filter_list"][0]["filter"][0]
    assert step["function"] == "regex"
    found = re.findall(step["regex_pattern"], "  HELLO \n")
    assert found[step["group_select"]].strip() == "HELLO"


def test_drift_names_a_changed_or_missing_file_and_write_restores_it(tmp_path: Path) -> None:
    assert sorted(taskset.drift(tmp_path)) == sorted(taskset.suite_files())
    assert sorted(taskset.write(tmp_path)) == sorted(taskset.suite_files())
    assert taskset.drift(tmp_path) == []
    items = tmp_path / taskset.ITEMS_FILE
    items.write_text(items.read_text().replace('"answer": "', '"answer": "x', 1))
    assert taskset.drift(tmp_path) == [taskset.ITEMS_FILE]
    assert taskset.write(tmp_path) == [taskset.ITEMS_FILE]
    assert taskset.drift(tmp_path) == []


def test_check_cli_fails_on_a_stale_suite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    taskset.write(tmp_path)
    assert taskset.main(["--check", str(tmp_path)]) == 0
    (tmp_path / taskset.YAML_FILE).write_text("task: edited\n")
    assert taskset.main(["--check", str(tmp_path)]) == 1
    assert taskset.YAML_FILE in capsys.readouterr().err
