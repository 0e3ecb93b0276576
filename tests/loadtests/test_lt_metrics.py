"""The SSE parser (what counts as a token, a broken stream) and percentiles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loadtests.metrics import Sample, StreamError, StreamParser, percentile


def chunk(content: str | None = None, finish: str | None = None) -> str:
    delta = {"content": content} if content is not None else {}
    return "data: " + json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def feed_all(lines: list[tuple[str, float]]) -> StreamParser:
    p = StreamParser()
    for line, at in lines:
        p.feed(line, at)
    return p


def test_valid_stream_gives_ttft_itl_tokens() -> None:
    p = feed_all(
        [
            ('data: {"choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}', 5.0),
            (chunk("Hel"), 100.0),
            ("", 100.0),
            (chunk("lo"), 120.0),
            (chunk(" you"), 150.0),
            (chunk(None, "length"), 151.0),
            ('data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}', 152.0),
            ("data: [DONE]", 153.0),
        ]
    )
    p.finish()
    assert p.ttft_ms == 100.0
    assert p.itl_ms == [20.0, 30.0]
    assert p.output_tokens == 3
    assert p.usage_prompt_tokens == 7


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([chunk("a"), chunk(None, "stop")], r"without data: \[DONE\]"),
        ([chunk("a"), "data: [DONE]"], "without finish_reason"),
        ([chunk(None, "stop"), "data: [DONE]"], "without any content token"),
    ],
)
def test_incomplete_stream_is_a_failure(lines: list[str], message: str) -> None:
    p = feed_all([(line, 1.0) for line in lines])
    with pytest.raises(StreamError, match=message):
        p.finish()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("data: {not json", "not JSON"),
        ('data: {"error": {"message": "engine dead"}}', "engine dead"),
        ('data: {"id": "x"}', "no choices"),
    ],
)
def test_bad_chunk_is_a_failure(line: str, message: str) -> None:
    with pytest.raises(StreamError, match=message):
        StreamParser().feed(line, 1.0)


def test_tpot_follows_vllm_definition() -> None:
    s = Sample(start=0, ok=True, e2e_ms=1000.0, ttft_ms=100.0, output_tokens=10)
    assert s.tpot_ms == pytest.approx(100.0)  # (1000 - 100) / (10 - 1)
    assert s.tokens_per_s == pytest.approx(10.0)
    assert Sample(start=0, ok=True, e2e_ms=50.0, ttft_ms=50.0, output_tokens=1).tpot_ms is None


def test_percentile_matches_numpy() -> None:
    xs = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.3]
    for q in (0, 50, 95, 99, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert np.isnan(percentile([], 50))
