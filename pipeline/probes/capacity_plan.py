"""Capacity and cost planning from a measured concurrency sweep (pure functions + the values edit).

- best step: the sweep level with the highest goodput (good req/s) that meets every latency,
  error and goodput SLO of the env (throughput minimums are service-wide, not per replica).
- replicas: ceil(rate / (per-replica good req/s x headroom)), with the per-replica rate scaled by
  measured / planned mean output tokens (decode time dominates a replica's capacity).
- memory: weights (params x bytes per param) + KV cache (2 x layers x kv_heads x head_dim x bytes
  per token, x max_model_len x max_num_seqs) + overhead, split over the tensor-parallel size.
"""

from __future__ import annotations

import difflib
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from loadtests.slo import CapacitySpec, ModelSpec

GIB = 1024**3
BYTES_PER_PARAM = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5, "awq": 0.5, "gptq": 0.5}
KV_BYTES = {"fp16": 2.0, "bf16": 2.0, "fp8": 1.0}
TP_SIZES = (1, 2, 4, 8)
PRICES_PATH = Path(__file__).resolve().parents[2] / "loadtests" / "prices.yaml"


@dataclass
class Step:
    """One sweep level, measured against one replica."""

    concurrency: int
    requests: int
    rps: float
    output_tokens_per_s: float
    goodput_ratio: float
    goodput_rps: float
    error_rate: float
    ttft_p95_ms: float
    itl_p95_ms: float
    e2e_p95_ms: float
    mean_output_tokens: float
    passed: bool
    breached: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GpuType:
    name: str
    memory_gib: float
    on_demand_hourly: float
    spot_hourly: float


@dataclass
class Prices:
    currency: str
    hours_per_month: float
    gpus: dict[str, GpuType]


@dataclass
class MemoryEstimate:
    weights_gib: float
    kv_bytes_per_token: float
    kv_cache_gib: float
    overhead_gib: float

    @property
    def total_gib(self) -> float:
        return self.weights_gib + self.kv_cache_gib + self.overhead_gib


@dataclass
class Placement:
    """A GPU type and tensor-parallel size that fits the model; cost per replica-hour."""

    gpu: str
    tp: int
    per_gpu_need_gib: float
    per_gpu_usable_gib: float
    replica_on_demand_hourly: float
    replica_spot_hourly: float


@dataclass
class Plan:
    best_concurrency: int
    per_replica_good_rps_measured: float
    mix_factor: float
    per_replica_good_rps: float
    usable_rps_per_replica: float
    target_rps: float
    peak_rps: float
    min_replicas: int
    max_replicas: int
    tp: int
    gpu: str
    gpus_min: int
    gpus_max: int
    monthly_on_demand_min: float
    monthly_on_demand_max: float
    monthly_spot_min: float
    monthly_spot_max: float
    cost_per_million_output_tokens_on_demand: float
    cost_per_million_output_tokens_spot: float
    currency: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_prices(path: Path = PRICES_PATH) -> Prices:
    data = YAML(typ="safe").load(path.read_text())
    gpus = {
        name: GpuType(name, float(g["memory_gib"]), float(g["on_demand_hourly"]), float(g["spot_hourly"]))
        for name, g in data["gpus"].items()
    }
    return Prices(str(data.get("currency", "USD")), float(data.get("hours_per_month", 730)), gpus)


def memory_estimate(m: ModelSpec) -> MemoryEstimate:
    if m.weight_precision not in BYTES_PER_PARAM:
        raise ValueError(f"unknown weight precision {m.weight_precision!r}")
    weights = m.params_b * 1e9 * BYTES_PER_PARAM[m.weight_precision] / GIB
    per_token = 2 * m.layers * m.kv_heads * m.head_dim * KV_BYTES[m.kv_cache_dtype]
    kv = per_token * m.max_model_len * m.max_num_seqs / GIB
    return MemoryEstimate(weights, per_token, kv, m.overhead_gib)


def placements(m: ModelSpec, prices: Prices, allowed: Sequence[str] = ()) -> list[Placement]:
    """Every (GPU type, TP) that fits, cheapest replica first.

    TP must divide the KV heads (vLLM shards heads); each GPU holds 1/TP of weights and KV
    plus the whole per-GPU overhead (CUDA context, activations, graphs).
    """
    est = memory_estimate(m)
    out: list[Placement] = []
    for gpu in prices.gpus.values():
        if allowed and gpu.name not in allowed:
            continue
        usable = gpu.memory_gib * m.gpu_memory_utilization
        for tp in TP_SIZES:
            if m.kv_heads % tp and tp > 1:
                continue
            need = (est.weights_gib + est.kv_cache_gib) / tp + est.overhead_gib
            if need <= usable:
                out.append(Placement(gpu.name, tp, need, usable, tp * gpu.on_demand_hourly, tp * gpu.spot_hourly))
                break  # the smallest TP that fits this GPU type; larger TP only adds cost
    return sorted(out, key=lambda p: (p.replica_on_demand_hourly, p.tp))


def best_step(steps: Sequence[Step]) -> Step | None:
    """Max goodput among the levels that met every SLO; ties go to the lower concurrency."""
    ok = [s for s in steps if s.passed]
    if not ok:
        return None
    return max(ok, key=lambda s: (s.goodput_rps, -s.concurrency))


def plan(best: Step, cap: CapacitySpec, place: Placement, prices: Prices) -> Plan:
    notes: list[str] = []
    mix = 1.0
    if cap.tokens is not None and best.mean_output_tokens > 0:
        mix = best.mean_output_tokens / cap.tokens.output_mean
        if abs(mix - 1.0) > 0.01:
            notes.append(
                f"per-replica rate scaled by measured/planned mean output tokens "
                f"{best.mean_output_tokens:.1f}/{cap.tokens.output_mean:g} = {mix:.3f}"
            )
    per_replica = best.goodput_rps * mix
    usable = per_replica * cap.headroom
    if usable <= 0:
        raise ValueError("the best sweep level has no goodput; cannot size replicas")
    min_r = max(cap.min_replicas_floor, math.ceil(cap.target_rps / usable - 1e-9))
    max_r = max(min_r, math.ceil(cap.peak_rps / usable - 1e-9))
    hours = cap.hours_per_month or prices.hours_per_month
    od, spot = place.replica_on_demand_hourly, place.replica_spot_hourly
    out_tok_per_hour = cap.target_rps * (cap.tokens.output_mean if cap.tokens else best.mean_output_tokens) * 3600
    return Plan(
        best_concurrency=best.concurrency,
        per_replica_good_rps_measured=best.goodput_rps,
        mix_factor=mix,
        per_replica_good_rps=per_replica,
        usable_rps_per_replica=usable,
        target_rps=cap.target_rps,
        peak_rps=cap.peak_rps,
        min_replicas=min_r,
        max_replicas=max_r,
        tp=place.tp,
        gpu=place.gpu,
        gpus_min=min_r * place.tp,
        gpus_max=max_r * place.tp,
        monthly_on_demand_min=min_r * od * hours,
        monthly_on_demand_max=max_r * od * hours,
        monthly_spot_min=min_r * spot * hours,
        monthly_spot_max=max_r * spot * hours,
        cost_per_million_output_tokens_on_demand=min_r * od / out_tok_per_hour * 1e6 if out_tok_per_hour else math.nan,
        cost_per_million_output_tokens_spot=min_r * spot / out_tok_per_hour * 1e6 if out_tok_per_hour else math.nan,
        currency=prices.currency,
        notes=notes,
    )


def autoscaling_edit(
    values_path: Path, min_replicas: int, max_replicas: int, label: str | None = None
) -> tuple[str, str, list[str]]:
    """Round-trip edit of `autoscaling.minReplicas/maxReplicas`; returns (new text, unified diff, notes).

    Only those two keys change (comments, order and every other key are kept); the
    `autoscaling` mapping is created if the env had none.
    """
    yaml = YAML()  # round-trip
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    old = values_path.read_text()
    data = yaml.load(old)
    notes: list[str] = []
    if data is None:
        raise ValueError(f"{values_path}: empty values file")
    auto = data.get("autoscaling")
    if auto is None:
        data["autoscaling"] = auto = {}
        notes.append("added an autoscaling mapping (the env had none)")
    mode = auto.get("mode", "none") if hasattr(auto, "get") else "none"
    if mode == "none":
        notes.append("autoscaling.mode is none here: the bounds take effect once it is hpa or keda")
    auto["minReplicas"] = min_replicas
    auto["maxReplicas"] = max_replicas
    buf = io.StringIO()
    yaml.dump(data, buf)
    new = buf.getvalue()
    diff = "".join(
        difflib.unified_diff(
            old.splitlines(True), new.splitlines(True), str(values_path), str(values_path) + " (suggested)"
        )
    )
    return new, diff, notes
