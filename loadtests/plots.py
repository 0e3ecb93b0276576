"""PNG plots of a run from its per-request samples (matplotlib, headless Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display here or in CI

import matplotlib.pyplot as plt

from loadtests.metrics import Sample, percentile
from loadtests.slo import SLO

BUCKET_S = 2.0


def _buckets(samples: Sequence[Sample], t0: float, bucket_s: float) -> dict[int, list[Sample]]:
    """Group by completion time, so a bucket's throughput counts the work finished in it."""
    out: dict[int, list[Sample]] = {}
    for s in samples:
        out.setdefault(int((s.start + s.e2e_ms / 1000.0 - t0) // bucket_s), []).append(s)
    return out


def _shade_warmup(ax: Any, warmup_s: float) -> None:
    if warmup_s > 0:
        ax.axvspan(0, warmup_s, color="grey", alpha=0.15, label="warm-up (excluded)")


def latency_over_time(samples: Sequence[Sample], t0: float, warmup_s: float, path: Path) -> Path:
    b = _buckets(samples, t0, BUCKET_S)
    xs = sorted(b)
    t = [(k + 0.5) * BUCKET_S for k in xs]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for q, style in ((50, "-"), (95, "--"), (99, ":")):
        ttft = [percentile([s.ttft_ms for s in b[k] if s.ok and s.ttft_ms is not None], q) for k in xs]
        itl = [percentile([g for s in b[k] if s.ok for g in s.itl_ms], q) for k in xs]
        e2e = [percentile([s.e2e_ms for s in b[k] if s.ok], q) for k in xs]
        ax1.plot(t, ttft, style, color="tab:blue", label=f"TTFT p{q}")
        ax1.plot(t, itl, style, color="tab:orange", label=f"ITL p{q}")
        ax2.plot(t, e2e, style, color="tab:green", label=f"E2E p{q}")
    for ax in (ax1, ax2):
        _shade_warmup(ax, warmup_s)
        ax.set_ylabel("ms")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=4)
    ax1.set_title(f"Latency percentiles per {BUCKET_S:g}s (by completion time)")
    ax2.set_xlabel("seconds since start")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def throughput_over_time(
    samples: Sequence[Sample], t0: float, warmup_s: float, path: Path, t_end: float | None = None
) -> Path:
    b = _buckets(samples, t0, BUCKET_S)
    xs = sorted(b)
    t = [(k + 0.5) * BUCKET_S for k in xs]

    def span(k: int) -> float:
        # The last bucket may be cut short by the end of the run; rate over the part that ran.
        end = (k + 1) * BUCKET_S if t_end is None else min((k + 1) * BUCKET_S, t_end - t0)
        return max(end - k * BUCKET_S, 0.25)

    rps = [sum(1 for s in b[k] if s.ok) / span(k) for k in xs]
    eps = [sum(1 for s in b[k] if not s.ok) / span(k) for k in xs]
    tok = [sum(s.output_tokens for s in b[k] if s.ok) / span(k) for k in xs]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(t, rps, color="tab:blue", label="requests/s (ok)")
    ax.plot(t, eps, color="tab:red", label="errors/s")
    ax.set_ylabel("requests/s")
    ax2 = ax.twinx()
    ax2.plot(t, tok, color="tab:purple", linestyle="--", label="output tokens/s")
    ax2.set_ylabel("output tokens/s")
    _shade_warmup(ax, warmup_s)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower right")
    ax.set_xlabel("seconds since start")
    ax.set_title("Throughput over time")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def distribution(values: Sequence[float], title: str, limits: dict[str, float], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    if values:
        ax.hist(values, bins=min(60, max(10, len(values) // 10)), color="tab:blue", alpha=0.8)
        for q, colour in ((50, "tab:green"), (95, "tab:orange"), (99, "tab:red")):
            v = percentile(values, q)
            ax.axvline(v, color=colour, linestyle="--", label=f"p{q} = {v:.1f} ms")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    for name, lim in limits.items():
        ax.axvline(lim, color="black", linestyle=":", label=f"SLO {name} = {lim:g} ms")
    ax.set_xlabel("ms")
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_plots(samples: Sequence[Sample], t0: float, slo: SLO, out_dir: Path, t_end: float | None = None) -> list[Path]:
    """The four plots of a load-test run; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    warm = slo.run.warmup_s
    kept = [s for s in samples if s.start >= t0 + warm and s.ok]
    th = slo.thresholds

    def lims(p: object) -> dict[str, float]:
        return {k: v for k, v in (p.model_dump() if hasattr(p, "model_dump") else {}).items() if v is not None}

    return [
        latency_over_time(samples, t0, warm, out_dir / "latency_over_time.png"),
        throughput_over_time(samples, t0, warm, out_dir / "throughput_over_time.png", t_end),
        distribution(
            [s.ttft_ms for s in kept if s.ttft_ms is not None],
            "TTFT distribution (warm-up excluded)",
            lims(th.ttft_ms),
            out_dir / "ttft_distribution.png",
        ),
        distribution(
            [g for s in kept for g in s.itl_ms],
            "Inter-token latency distribution (warm-up excluded)",
            lims(th.itl_ms),
            out_dir / "itl_distribution.png",
        ),
    ]


def goodput_vs_concurrency(
    levels: Sequence[int],
    goodput_rps: Sequence[float],
    goodput_ratio: Sequence[float],
    target: float,
    best: int | None,
    path: Path,
) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(levels, goodput_rps, marker="o", color="tab:blue", label="goodput (good req/s)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(levels), [str(c) for c in levels])
    ax.set_xlabel("concurrent users (one replica)")
    ax.set_ylabel("good requests/s")
    ax2 = ax.twinx()
    ax2.plot(levels, goodput_ratio, marker="s", linestyle="--", color="tab:orange", label="good share")
    ax2.axhline(target, color="tab:red", linestyle=":", label=f"target share {target:g}")
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("share of requests meeting all latency SLOs")
    if best is not None:
        ax.axvline(best, color="tab:green", alpha=0.5, label=f"max SLO-meeting load: {best}")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower left")
    ax.set_title("Goodput vs concurrency")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
