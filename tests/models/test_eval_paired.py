"""The eval gate's arithmetic (pipeline/models/paired_test.py) against hand-computed cases."""

from __future__ import annotations

import pytest

from pipeline.models.paired_test import PairingError, decide, discordant, mcnemar_exact


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (0, 0, 1.0),  # no discordant pair: no evidence either way
        (5, 0, 1 / 32),  # all 5 discordant pairs regressed: 0.5**5
        (4, 0, 1 / 16),  # 0.0625: not below 0.05
        (3, 1, 5 / 16),  # P(X>=3), X~Bin(4, .5) = (C(4,3)+C(4,4))/16
        (7, 1, 9 / 256),  # (C(8,7)+C(8,8))/256 = 0.03515625
        (6, 1, 8 / 128),  # (C(7,6)+C(7,7))/128 = 0.0625
        (0, 5, 1.0),  # the candidate only improved
    ],
)
def test_exact_one_sided_p_value(b: int, c: int, p: float) -> None:
    result = mcnemar_exact(b, c)
    assert result.b == b and result.c == c and result.statistic == b
    assert result.p_value == pytest.approx(p, rel=1e-12)


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="b=-1"):
        mcnemar_exact(-1, 2)


def _items(pattern: str) -> dict[str, bool]:
    return {f"i{n}": ch == "1" for n, ch in enumerate(pattern)}


def test_discordant_counts_pairs_by_item_id() -> None:
    base = _items("1100110")
    cand = _items("1010111")
    # i1: base right cand wrong (b); i2: base wrong cand right (c); i5 both right; i6: c
    assert discordant(base, cand) == (1, 2)


def test_different_item_sets_are_refused_naming_the_ids() -> None:
    with pytest.raises(PairingError, match=r"only baseline \['i2'\], only candidate \['x'\]"):
        discordant(_items("111"), {"i0": True, "i1": True, "x": True})


def test_floor_only_when_there_is_no_baseline() -> None:
    ok = decide(_items("1111111110"), None, floor=0.9, alpha=0.05)
    assert ok.verdict == "pass" and ok.mcnemar is None and ok.baseline_score is None
    assert ok.candidate_score == pytest.approx(0.9) and ok.candidate_correct == 9
    low = decide(_items("1111111100"), None, floor=0.9, alpha=0.05)
    assert low.verdict == "blocked"
    assert low.reasons == ["candidate accuracy 0.800 (8/10) is below the floor 0.9"]


def test_significantly_worse_candidate_is_blocked_even_above_the_floor() -> None:
    base = _items("1" * 20)
    cand = _items("1" * 15 + "0" * 5)  # b=5, c=0 → p = 1/32
    d = decide(cand, base, floor=0.5, alpha=0.05)
    assert d.verdict == "blocked" and d.mcnemar is not None
    assert (d.mcnemar.b, d.mcnemar.c) == (5, 0)
    assert "p=0.0312 < alpha 0.05" in d.reasons[0]
    # The same regression is not significant at alpha 0.01: the floor alone decides then.
    assert decide(cand, base, floor=0.5, alpha=0.01).verdict == "pass"


def test_noise_is_not_a_regression() -> None:
    base = _items("1100" * 5)
    cand = _items("1010" * 5)  # b=5, c=5 → p = P(X>=5 | n=10) = 638/1024
    d = decide(cand, base, floor=0.0, alpha=0.05)
    assert d.verdict == "pass" and d.mcnemar is not None
    assert d.mcnemar.p_value == pytest.approx(638 / 1024)
    assert d.baseline_score == d.candidate_score == 0.5


def test_identical_runs_pass() -> None:
    runs = _items("1101101111")
    d = decide(runs, dict(runs), floor=0.7, alpha=0.05)
    assert d.verdict == "pass" and d.mcnemar is not None and d.mcnemar.p_value == 1.0


@pytest.mark.parametrize(("floor", "alpha"), [(1.5, 0.05), (0.5, 0.0), (0.5, 1.0)])
def test_bad_thresholds_are_refused(floor: float, alpha: float) -> None:
    with pytest.raises(ValueError, match="floor must be"):
        decide(_items("1"), None, floor=floor, alpha=alpha)


def test_empty_candidate_is_refused() -> None:
    with pytest.raises(PairingError, match="no items"):
        decide({}, None, floor=0.5, alpha=0.05)
