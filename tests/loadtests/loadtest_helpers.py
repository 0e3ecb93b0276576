"""Synthetic per-request samples for the gate and plot tests."""

from __future__ import annotations

from loadtests.metrics import Sample


def make_sample(
    start: float, ttft: float = 50.0, itl: float = 10.0, tokens: int = 20, ok: bool = True, error: str = ""
) -> Sample:
    if not ok:
        return Sample(start=start, ok=False, e2e_ms=5.0, status=500, error=error or "HTTP 500")
    return Sample(
        start=start,
        ok=True,
        e2e_ms=ttft + itl * (tokens - 1),
        ttft_ms=ttft,
        itl_ms=[itl] * (tokens - 1),
        output_tokens=tokens,
        prompt_tokens=100,
        status=200,
    )
