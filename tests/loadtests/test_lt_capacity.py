"""Capacity math: the plan's numbers follow from a given sweep; memory estimate; the values edit."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from loadtests.slo import SLO, CapacitySpec, ModelSpec, TokenMix
from pipeline.probes.capacity_plan import (
    GpuType,
    Prices,
    Step,
    autoscaling_edit,
    best_step,
    load_prices,
    memory_estimate,
    placements,
    plan,
)

REPO = Path(__file__).resolve().parents[2]

LLAMA_8B = ModelSpec(
    params_b=8.0, layers=32, kv_heads=8, head_dim=128, weight_precision="bf16", max_model_len=4096, max_num_seqs=32
)
PRICES = Prices(
    "USD",
    730,
    {
        "S": GpuType("S", 24, 1.0, 0.4),
        "M": GpuType("M", 48, 2.0, 0.8),
        "L": GpuType("L", 80, 4.0, 1.5),
    },
)


def step(c: int, good_rps: float, passed: bool, out_tokens: float = 32.0) -> Step:
    return Step(
        c, 100, good_rps, good_rps * out_tokens, 1.0 if passed else 0.5, good_rps, 0.0, 1, 1, 1, out_tokens, passed
    )


SWEEP = [step(1, 2.0, True), step(2, 3.9, True), step(4, 7.5, True), step(8, 9.0, False), step(16, 8.0, False)]


def test_best_step_is_max_goodput_among_passing_levels() -> None:
    best = best_step(SWEEP)
    assert best is not None and best.concurrency == 4
    assert best_step([step(1, 1.0, False)]) is None
    # A higher level that passes with less goodput does not win.
    assert best_step([step(4, 7.5, True), step(8, 7.0, True)]).concurrency == 4  # type: ignore[union-attr]


def test_memory_estimate_llama_8b() -> None:
    est = memory_estimate(LLAMA_8B)
    assert est.weights_gib == pytest.approx(8e9 * 2 / 1024**3)  # 14.9 GiB
    assert est.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2  # 128 KiB per token
    assert est.kv_cache_gib == pytest.approx(131072 * 4096 * 32 / 1024**3)  # 16 GiB
    int4 = memory_estimate(LLAMA_8B.model_copy(update={"weight_precision": "awq"}))
    assert int4.weights_gib == pytest.approx(est.weights_gib / 4)


def test_placement_picks_cheapest_fit_and_smallest_tp() -> None:
    # need = (14.9 + 16) / tp + 2 GiB; usable = 0.9 x memory
    fits = placements(LLAMA_8B, PRICES)
    by_gpu = {p.gpu: p.tp for p in fits}
    assert by_gpu == {"S": 2, "M": 1, "L": 1}  # 24 GB: 32.9 > 21.6 at TP1, 17.5 fits at TP2
    assert fits[0].gpu in {"S", "M"} and fits[0].replica_on_demand_hourly == 2.0
    assert placements(LLAMA_8B, PRICES, ["L"])[0].gpu == "L"
    huge = LLAMA_8B.model_copy(update={"params_b": 400.0})
    assert placements(huge, PRICES) == []


def test_plan_numbers_follow_from_the_sweep() -> None:
    best = best_step(SWEEP)
    assert best is not None
    cap = CapacitySpec(
        concurrency=[1, 2, 4, 8, 16],
        target_rps=20,
        peak_rps=50,
        headroom=0.8,
        min_replicas_floor=2,
        tokens=TokenMix(prompt_mean=200, output_mean=64),
        model=LLAMA_8B,
    )
    place = next(p for p in placements(LLAMA_8B, PRICES) if p.gpu == "S")  # TP 2, 2.0/h on-demand, 0.8/h spot
    p = plan(best, cap, place, PRICES)
    # measured 7.5 good req/s at 32 output tokens; planned mix has 64 -> half the rate per replica
    assert p.mix_factor == pytest.approx(0.5)
    assert p.per_replica_good_rps == pytest.approx(3.75)
    assert p.usable_rps_per_replica == pytest.approx(3.0)
    assert p.min_replicas == math.ceil(20 / 3.0) == 7
    assert p.max_replicas == math.ceil(50 / 3.0) == 17
    assert (p.gpus_min, p.gpus_max) == (14, 34)
    assert p.monthly_on_demand_min == pytest.approx(7 * 2.0 * 730)
    assert p.monthly_spot_max == pytest.approx(17 * 0.8 * 730)
    # 7 replicas x 2.0/h for 20 req/s x 64 tokens x 3600 s
    assert p.cost_per_million_output_tokens_on_demand == pytest.approx(14.0 / (20 * 64 * 3600) * 1e6)


def test_plan_floor_and_no_goodput() -> None:
    cap = CapacitySpec(concurrency=[1], target_rps=0.1, peak_rps=0.1, min_replicas_floor=3, model=LLAMA_8B)
    place = placements(LLAMA_8B, PRICES)[0]
    p = plan(step(1, 10.0, True), cap, place, PRICES)
    assert (p.min_replicas, p.max_replicas) == (3, 3)
    with pytest.raises(ValueError, match="no goodput"):
        plan(step(1, 0.0, True), cap, place, PRICES)


def test_shipped_prices_and_capacity_sections_plan(dev_slo: SLO) -> None:
    prices = load_prices()
    assert {"L4", "A100-80GB", "H100-80GB"} <= set(prices.gpus)
    assert dev_slo.capacity is not None
    fits = placements(dev_slo.capacity.model, prices)
    assert fits, "the dev model must fit some GPU in the prices file"


def test_autoscaling_edit_changes_only_the_bounds(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    shutil.copy(REPO / "environments" / "prod" / "values.yaml", values)
    before = values.read_text()
    new, diff, notes = autoscaling_edit(values, 4, 10)
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert (
        sorted(changed) == sorted([line for line in changed if "minReplicas" in line or "maxReplicas" in line])
        and len(changed) == 4
    )
    assert "+  minReplicas: 4" in diff and "+  maxReplicas: 10" in diff
    # Everything else (comments, order) is byte-identical.
    strip = [line for line in new.splitlines() if "Replicas" not in line]
    assert strip == [line for line in before.splitlines() if "Replicas" not in line]
    assert values.read_text() == before  # the function only proposes; the command writes
    assert notes == []
