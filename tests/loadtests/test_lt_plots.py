"""Plots are real PNG images with the expected size; the workload distributions behave."""

from __future__ import annotations

import random
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from loadtest_helpers import make_sample

from loadtests.plots import goodput_vs_concurrency, run_plots
from loadtests.slo import SLO
from loadtests.workload import Distribution, PromptFactory, load_prompts

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = 1_000_000.0


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 300


def test_run_plots_are_pngs(dev_slo: SLO, tmp_path: Path) -> None:
    rng = random.Random(1)
    samples = [make_sample(T0 + i * 0.05, ttft=rng.uniform(40, 90), itl=rng.uniform(5, 15)) for i in range(300)]
    samples += [make_sample(T0 + 5, ok=False)]
    paths = run_plots(samples, T0, dev_slo, tmp_path, T0 + 15)
    assert [p.name for p in paths] == [
        "latency_over_time.png",
        "throughput_over_time.png",
        "ttft_distribution.png",
        "itl_distribution.png",
    ]
    for p in paths:
        assert_png(p)


def test_plots_survive_no_data(dev_slo: SLO, tmp_path: Path) -> None:
    for p in run_plots([], T0, dev_slo, tmp_path):
        assert_png(p)


def test_goodput_plot(tmp_path: Path) -> None:
    assert_png(goodput_vs_concurrency([1, 2, 4, 8], [2, 3.9, 7.5, 6], [1, 1, 0.97, 0.6], 0.9, 4, tmp_path / "g.png"))


@pytest.mark.parametrize(
    ("spec", "lo", "hi", "mean"),
    [("fixed:32", 32, 32, 32), ("uniform:10:20", 10, 20, 15), ("normal:100:10", 40, 160, 100)],
)
def test_distributions(spec: str, lo: int, hi: int, mean: float) -> None:
    d = Distribution.parse(spec)
    rng = random.Random(0)
    xs = [d.sample(rng) for _ in range(2000)]
    assert lo <= min(xs) and max(xs) <= hi
    assert sum(xs) / len(xs) == pytest.approx(mean, rel=0.05)
    assert d.mean == pytest.approx(mean)


def test_bad_distribution_and_prompt_lengths() -> None:
    with pytest.raises(ValueError, match="bad distribution"):
        Distribution.parse("poisson:3")
    f = PromptFactory(load_prompts(), random.Random(0))
    assert len(f.make(4).split()) <= 4
    long = f.make(400)
    assert 250 <= len(long.split()) <= 330  # ~400 tokens at ~1.3 tokens/word, plus the framing words
