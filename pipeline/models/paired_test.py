"""The eval gate's verdict: an absolute floor plus an exact McNemar test on paired items.

Both models answer the same items, so the comparison is paired: only the discordant items
carry information — b = baseline right and candidate wrong, c = baseline wrong and candidate
right. Under "the candidate is no worse" each discordant item is a fair coin, so the exact
one-sided McNemar p-value is P(X >= b) for X ~ Binomial(b + c, 1/2) (scipy's `binomtest`).
The candidate is blocked when that p-value is below alpha, or when its accuracy is below the
floor. Pure: no I/O, so the arithmetic is unit-tested with hand-computed cases.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from scipy.stats import binomtest

Verdict = Literal["pass", "blocked"]


class PairingError(ValueError):
    """The two runs did not answer the same items; the message names the differing ids."""


@dataclass(frozen=True)
class McNemar:
    b: int  # baseline correct, candidate wrong
    c: int  # baseline wrong, candidate correct
    statistic: int  # the exact test's statistic: b, the count of "candidate got worse" pairs
    p_value: float  # one-sided: P(X >= b), X ~ Binomial(b + c, 1/2); 1.0 with no discordant pair


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reasons: list[str]
    candidate_score: float
    candidate_correct: int
    baseline_score: float | None
    baseline_correct: int | None
    n_items: int
    mcnemar: McNemar | None
    floor: float
    alpha: float
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def mcnemar_exact(b: int, c: int) -> McNemar:
    """Exact one-sided McNemar test of "the candidate is worse" from the discordant counts."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b} c={c}")
    n = b + c
    p = 1.0 if n == 0 else float(binomtest(b, n, 0.5, alternative="greater").pvalue)
    return McNemar(b=b, c=c, statistic=b, p_value=p)


def discordant(baseline: Mapping[str, bool], candidate: Mapping[str, bool]) -> tuple[int, int]:
    """(b, c) over the items both answered; PairingError when the item sets differ."""
    if set(baseline) != set(candidate):
        only_b = sorted(set(baseline) - set(candidate))[:5]
        only_c = sorted(set(candidate) - set(baseline))[:5]
        raise PairingError(f"runs answered different items: only baseline {only_b}, only candidate {only_c}")
    b = sum(1 for i, ok in baseline.items() if ok and not candidate[i])
    c = sum(1 for i, ok in baseline.items() if not ok and candidate[i])
    return b, c


def decide(
    candidate: Mapping[str, bool],
    baseline: Mapping[str, bool] | None,
    *,
    floor: float,
    alpha: float,
) -> Decision:
    """Pass only if the candidate reaches the floor and is not significantly worse than the baseline."""
    if not candidate:
        raise PairingError("the candidate answered no items")
    if not 0.0 <= floor <= 1.0 or not 0.0 < alpha < 1.0:
        raise ValueError(f"floor must be in [0, 1] and alpha in (0, 1), got floor={floor} alpha={alpha}")
    n = len(candidate)
    cand_correct = sum(1 for ok in candidate.values() if ok)
    cand_score = cand_correct / n
    reasons: list[str] = []
    if cand_score < floor:
        reasons.append(f"candidate accuracy {cand_score:.3f} ({cand_correct}/{n}) is below the floor {floor}")
    test: McNemar | None = None
    base_correct: int | None = None
    base_score: float | None = None
    if baseline is not None:
        b, c = discordant(baseline, candidate)
        test = mcnemar_exact(b, c)
        base_correct = sum(1 for ok in baseline.values() if ok)
        base_score = base_correct / n
        if test.p_value < alpha:
            reasons.append(
                f"candidate is significantly worse than the baseline: {b} items regressed, {c} improved "
                f"(exact McNemar one-sided p={test.p_value:.3g} < alpha {alpha})"
            )
    return Decision(
        verdict="blocked" if reasons else "pass",
        reasons=reasons,
        candidate_score=cand_score,
        candidate_correct=cand_correct,
        baseline_score=base_score,
        baseline_correct=base_correct,
        n_items=n,
        mcnemar=test,
        floor=floor,
        alpha=alpha,
    )
