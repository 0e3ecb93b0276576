"""Simulator configuration: the static server shape and the run-time fault settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# The vLLM release whose API and metric names the simulator follows (reported by /version).
VLLM_COMPAT_VERSION = "0.11.0"


class Faults(BaseModel):
    """Fault injection settings; the same fields are start flags and the /admin/faults body."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    error_rate: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of requests answered with error_status.")
    error_status: int = Field(500, ge=400, le=599, description="HTTP status of injected errors.")
    added_latency_ms: float = Field(0.0, ge=0.0, description="Delay added before every inference request is queued.")
    hang_rate: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of requests never answered.")
    crash_after_requests: int | None = Field(
        None, ge=0, description="Exit the process when inference request number N+1 arrives."
    )
    stream_cutoff_tokens: int | None = Field(
        None, ge=0, description="Streams fail after this many content tokens (None = never)."
    )
    stream_cutoff_rate: float = Field(1.0, ge=0.0, le=1.0, description="Fraction of streams the cutoff applies to.")
    stream_cutoff_mode: Literal["drop", "error"] = Field(
        "drop", description="drop: close the connection; error: send vLLM's error event and [DONE]."
    )


class FaultsUpdate(BaseModel):
    """Body of PUT /admin/faults: a partial update; `reset` first clears every fault."""

    model_config = ConfigDict(extra="forbid")

    reset: bool = False
    error_rate: float | None = Field(None, ge=0.0, le=1.0)
    error_status: int | None = Field(None, ge=400, le=599)
    added_latency_ms: float | None = Field(None, ge=0.0)
    hang_rate: float | None = Field(None, ge=0.0, le=1.0)
    crash_after_requests: int | None = Field(None, ge=0)
    stream_cutoff_tokens: int | None = Field(None, ge=0)
    stream_cutoff_rate: float | None = Field(None, ge=0.0, le=1.0)
    stream_cutoff_mode: Literal["drop", "error"] | None = None


@dataclass
class SimulatorConfig:
    """Everything `python -m app.simulator` accepts; defaults give a zero-latency, fault-free server."""

    model: str = "sim-model"
    seed: int = 0
    max_num_seqs: int = 256
    max_model_len: int = 4096
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    # Latency multiplier = 1 + load_factor * (running - 1) / max_num_seqs.
    load_factor: float = 1.0
    # KV-cache capacity in tokens; 0 means max_num_seqs * max_model_len.
    kv_cache_tokens: int = 0
    # Used when a request gives no max_tokens (vLLM would use the whole remaining context).
    default_max_tokens: int = 16
    # Per-token probability of an end-of-sequence (finish_reason "stop"); 0 = always run to max_tokens.
    eos_rate: float = 0.0
    admin_token: str | None = None
    faults: Faults = field(default_factory=Faults)

    @property
    def kv_capacity(self) -> int:
        return self.kv_cache_tokens or self.max_num_seqs * self.max_model_len
