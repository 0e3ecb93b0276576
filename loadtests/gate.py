"""The SLO gate: every threshold of an SLO file against the measured samples -> value/limit/margin rows.

Pure: takes samples and the measurement window, returns a report. The locustfile calls it
in its `quitting` listener (exit code) and the pipeline reads the `slo.json` it writes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from loadtests.metrics import Sample, percentile
from loadtests.slo import SLO, Goodput

Op = Literal["<=", ">="]


@dataclass
class Row:
    """One threshold: `value op limit` must hold. margin > 0 means room left, < 0 means breached."""

    name: str
    value: float
    op: Op
    limit: float
    unit: str
    passed: bool
    margin: float
    margin_pct: float
    detail: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Row:
        """Back from slo.json (null = no data = NaN)."""

        def num(key: str) -> float:
            v = d.get(key)
            return math.nan if v is None else float(v)

        return cls(
            name=str(d["name"]),
            value=num("value"),
            op="<=" if d["op"] == "<=" else ">=",
            limit=num("limit"),
            unit=str(d.get("unit", "")),
            passed=bool(d["passed"]),
            margin=num("margin"),
            margin_pct=num("margin_pct"),
            detail=str(d.get("detail", "")),
        )


@dataclass
class Summary:
    """What was measured in the window (warm-up excluded)."""

    requests: int = 0
    ok: int = 0
    failed: int = 0
    warmup_excluded: int = 0
    window_s: float = 0.0
    rps: float = 0.0
    output_tokens_per_s: float = 0.0
    error_rate: float = 0.0
    goodput_ratio: float = 0.0
    goodput_rps: float = 0.0
    mean_output_tokens: float = 0.0
    mean_prompt_tokens: float = 0.0
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class GateReport:
    env: str
    passed: bool
    rows: list[Row]
    summary: Summary
    aborted: str = ""
    # Wall-clock (epoch s) test start and end; the measured window starts warmup_s after t_start.
    t_start: float = 0.0
    t_end: float = 0.0
    warmup_s: float = 0.0

    def failures(self) -> list[Row]:
        return [r for r in self.rows if not r.passed]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # JSON has no NaN; "no data" is null.
        return nan_to_none(d)  # type: ignore[no-any-return]

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def table(self) -> str:
        """Plain-text table for logs; the pipeline renders Markdown from the same rows."""
        head = f"{'threshold':<26} {'value':>12} {'op':^4} {'limit':>12} {'margin':>12}  result"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            val = "no data" if math.isnan(r.value) else f"{r.value:.3f}"
            margin = "" if math.isnan(r.margin) else f"{r.margin:+.3f}"
            lines.append(
                f"{r.name:<26} {val:>12} {r.op:^4} {r.limit:>12.3f} {margin:>12}  {'PASS' if r.passed else 'FAIL'}"
            )
        if self.aborted:
            lines.append(f"ABORTED: {self.aborted}")
        lines.append(f"SLO gate ({self.env}): {'PASSED' if self.passed else 'FAILED'}")
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = ["| threshold | value | limit | margin | result |", "|---|---:|---:|---:|---|"]
        for r in self.rows:
            val = "no data" if math.isnan(r.value) else f"{r.value:.2f} {r.unit}".strip()
            margin = "" if math.isnan(r.margin) else f"{r.margin:+.2f} ({r.margin_pct:+.0f}%)"
            lines.append(
                f"| `{r.name}` | {val} | {r.op} {r.limit:g} {r.unit} | {margin} | {'pass' if r.passed else '**FAIL**'} |"
            )
        return "\n".join(lines)


def nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [nan_to_none(v) for v in x]
    return x


def row(name: str, value: float, op: Op, limit: float, unit: str = "", detail: str = "") -> Row:
    if math.isnan(value):
        return Row(name, value, op, limit, unit, False, math.nan, math.nan, detail or "no data")
    margin = limit - value if op == "<=" else value - limit
    passed = margin >= 0
    pct = (margin / limit * 100.0) if limit else (0.0 if margin == 0 else math.copysign(math.inf, margin))
    return Row(name, value, op, limit, unit, passed, margin, pct, detail)


def is_good(s: Sample, g: Goodput) -> bool:
    """vLLM benchmark goodput: successful and within every configured latency SLO."""
    if not s.ok:
        return False
    if g.ttft_ms is not None and (s.ttft_ms is None or s.ttft_ms > g.ttft_ms):
        return False
    tpot = s.tpot_ms
    # A one-token answer has no TPOT; vLLM treats it as 0 there, so it cannot breach.
    if g.tpot_ms is not None and tpot is not None and tpot > g.tpot_ms:
        return False
    return not (g.e2e_ms is not None and s.e2e_ms > g.e2e_ms)


def measured(samples: Sequence[Sample], t_start: float, warmup_s: float) -> tuple[list[Sample], int]:
    """Samples started after the warm-up, and how many were excluded as warm-up."""
    cut = t_start + warmup_s
    kept = [s for s in samples if s.start >= cut]
    return kept, len(samples) - len(kept)


def summarize(samples: Sequence[Sample], window_s: float, goodput: Goodput | None) -> Summary:
    ok = [s for s in samples if s.ok]
    n = len(samples)
    ttft = [s.ttft_ms for s in ok if s.ttft_ms is not None]
    itl = [x for s in ok for x in s.itl_ms]
    tpot = [t for s in ok if (t := s.tpot_ms) is not None]
    e2e = [s.e2e_ms for s in ok]
    lat = {
        name: {f"p{q}": percentile(vals, q) for q in (50, 95, 99)}
        | {"mean": sum(vals) / len(vals) if vals else math.nan}
        for name, vals in (("ttft_ms", ttft), ("itl_ms", itl), ("tpot_ms", tpot), ("e2e_ms", e2e))
    }
    errors: dict[str, int] = {}
    for s in samples:
        if not s.ok:
            key = s.error[:80] or f"HTTP {s.status}"
            errors[key] = errors.get(key, 0) + 1
    good = sum(1 for s in samples if is_good(s, goodput)) if goodput else len(ok)
    w = max(window_s, 1e-9)
    return Summary(
        requests=n,
        ok=len(ok),
        failed=n - len(ok),
        window_s=window_s,
        rps=len(ok) / w,
        output_tokens_per_s=sum(s.output_tokens for s in ok) / w,
        error_rate=(n - len(ok)) / n if n else math.nan,
        goodput_ratio=good / n if n else math.nan,
        goodput_rps=good / w,
        mean_output_tokens=sum(s.output_tokens for s in ok) / len(ok) if ok else math.nan,
        mean_prompt_tokens=sum(s.prompt_tokens for s in ok) / len(ok) if ok else math.nan,
        latency_ms=lat,
        errors=errors,
    )


def evaluate(
    slo: SLO,
    samples: Sequence[Sample],
    *,
    t_start: float,
    t_end: float,
    aborted: str = "",
    include_throughput: bool = True,
) -> GateReport:
    """Judge the run. `include_throughput=False` skips min RPS/tokens (a capacity sweep step at low load)."""
    kept, excluded = measured(samples, t_start, slo.run.warmup_s)
    window = max(t_end - (t_start + slo.run.warmup_s), 0.0)
    summ = summarize(kept, window, slo.goodput)
    summ.warmup_excluded = excluded
    th = slo.thresholds
    rows: list[Row] = []
    for metric in ("ttft_ms", "itl_ms", "e2e_ms"):
        pcts = getattr(th, metric)
        if pcts is None:
            continue
        for q in ("p50", "p95", "p99"):
            limit = getattr(pcts, q)
            if limit is not None:
                rows.append(row(f"{metric.removesuffix('_ms')}.{q}", summ.latency_ms[metric][q], "<=", limit, "ms"))
    rows.append(row("error_rate", summ.error_rate, "<=", th.error_rate))
    if include_throughput and th.min_rps is not None:
        rows.append(row("rps", summ.rps, ">=", th.min_rps, "req/s"))
    if include_throughput and th.min_output_tokens_per_s is not None:
        rows.append(row("output_tokens_per_s", summ.output_tokens_per_s, ">=", th.min_output_tokens_per_s, "tok/s"))
    g = slo.goodput
    slos = ", ".join(
        f"{k}<={v:g}" for k, v in (("ttft_ms", g.ttft_ms), ("tpot_ms", g.tpot_ms), ("e2e_ms", g.e2e_ms)) if v
    )
    rows.append(row("goodput", summ.goodput_ratio, ">=", g.target, "", detail=f"share of requests with {slos}"))
    if aborted:
        rows.append(Row("aborted", math.nan, "<=", 0.0, "", False, math.nan, math.nan, aborted))
    return GateReport(
        env=slo.env,
        passed=all(r.passed for r in rows) and not aborted,
        rows=rows,
        summary=summ,
        aborted=aborted,
        t_start=t_start,
        t_end=t_end,
        warmup_s=slo.run.warmup_s,
    )
