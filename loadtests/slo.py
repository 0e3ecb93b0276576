"""SLO files (`loadtests/slo/<env>.yaml`): schema validation with errors that name the key, typed access."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, Field
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

SLO_DIR = Path(__file__).resolve().parent / "slo"
SCHEMA_PATH = SLO_DIR / "schema.json"


class SLOFileError(ValueError):
    """The SLO file is missing, not YAML, or breaks the schema; the message names file and key."""


class RunSpec(BaseModel):
    users: int
    spawn_rate: float | None = None
    duration_s: float
    warmup_s: float
    shape: Literal["steady", "ramp", "spike"]
    # Wall-clock bound for the whole Locust process (start-up + run + reports).
    timeout_s: float | None = None


class Workload(BaseModel):
    prompt_tokens: str
    output_tokens: str


class Percentiles(BaseModel):
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class Thresholds(BaseModel):
    ttft_ms: Percentiles | None = None
    itl_ms: Percentiles | None = None
    e2e_ms: Percentiles | None = None
    error_rate: float
    min_rps: float | None = None
    min_output_tokens_per_s: float | None = None


class Goodput(BaseModel):
    """vLLM's goodput: a request is good when every given latency is within its SLO."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None
    target: float


class Abort(BaseModel):
    error_rate: float
    grace_s: float = 5.0
    window_s: float = 5.0
    min_requests: int = 20


class TokenMix(BaseModel):
    prompt_mean: float
    output_mean: float


class ModelSpec(BaseModel):
    name: str = "model"
    params_b: float
    layers: int
    kv_heads: int
    head_dim: int
    weight_precision: str
    kv_cache_dtype: str = "fp16"
    max_model_len: int
    max_num_seqs: int
    gpu_memory_utilization: float = 0.9
    overhead_gib: float = 2.0


class CapacitySpec(BaseModel):
    concurrency: list[int]
    step_duration_s: float = 10.0
    target_rps: float
    peak_rps: float
    headroom: float = 0.8
    min_replicas_floor: int = 1
    hours_per_month: float = 730.0
    tokens: TokenMix | None = None
    model: ModelSpec
    gpu_types: list[str] = Field(default_factory=list)


class SLO(BaseModel):
    env: str
    run: RunSpec
    workload: Workload
    thresholds: Thresholds
    goodput: Goodput
    abort: Abort | None = None
    capacity: CapacitySpec | None = None


def _key_path(err: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in err.absolute_path]
    # additionalProperties errors sit on the parent; name the offending key itself.
    if err.validator == "additionalProperties":
        extra = re.findall(r"'([^']+)'", err.message.split("(")[-1])
        if extra:
            parts.append(extra[0])
    if err.validator == "required":
        missing = re.findall(r"'([^']+)'", err.message)
        if missing:
            parts.append(missing[0])
    return ".".join(parts) or "<root>"


def validate(data: Any, source: str = "<slo>") -> SLO:
    """Validate a parsed SLO document; raise SLOFileError naming every bad key."""
    schema = json.loads(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        lines = [f"{_key_path(e)}: {e.message}" for e in errors]
        raise SLOFileError(f"{source}: invalid SLO file:\n  " + "\n  ".join(lines))
    return SLO.model_validate(data)


def load(path: Path) -> SLO:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SLOFileError(f"{path}: cannot read SLO file ({exc.strerror})") from exc
    try:
        data = YAML(typ="safe").load(text)
    except YAMLError as exc:
        raise SLOFileError(f"{path}: not valid YAML: {exc}") from exc
    return validate(data, str(path))


def path_for(env: str, slo_dir: Path = SLO_DIR) -> Path:
    return slo_dir / f"{env}.yaml"


def load_env(env: str, slo_dir: Path = SLO_DIR) -> SLO:
    return load(path_for(env, slo_dir))
