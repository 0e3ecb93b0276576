"""The unmodified OpenAI SDK's `responses.create` (unary and stream) and `embeddings.create` through
the gateway in front of real vLLM CPU (issue 21, item 10): the repo's tiny Llama served for generation,
and the same weights served a second time as an embedding model (`--runner pooling --convert embed`)."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from pipeline.runtime import vllm_cpu
from pipeline.runtime.local_stack import Stack, local_stack
from pipeline.runtime.procs import ManagedProcess, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


@contextlib.contextmanager
def embedding_vllm(work: Path, model_dir: Path, name: str) -> Iterator[str]:
    """vLLM serving the tiny model as an embedding model (vLLM 0.32 converts a causal LM with these flags)."""
    port = free_port()
    argv = [*vllm_cpu.server_argv(model_dir, name, port), "--runner", "pooling", "--convert", "embed"]
    proc = ManagedProcess("vllm-embed", argv, work / "vllm-embed.log", env=vllm_cpu.server_env()).start()
    try:
        proc.wait_http(f"http://127.0.0.1:{port}/health", timeout=vllm_cpu.DEFAULT_READY_TIMEOUT)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop(grace=15.0)


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Stack]]:
    work = tmp_path_factory.mktemp("real-vllm-endpoints")
    vllm_cpu.ensure_venv()
    model_dir = vllm_cpu.ensure_tiny_model()
    with (
        vllm_cpu.vllm_server(work / "gen", model_dir, name="tiny") as server,
        embedding_vllm(work, model_dir, "tiny-embed") as embed_url,
        local_stack(work / "stack", upstream_url=server.url, model="tiny") as gen,
        local_stack(work / "stack-embed", upstream_url=embed_url, model="tiny-embed") as emb,
    ):
        yield gen, emb


def test_sdk_responses_unary_and_stream(stacks: tuple[Stack, Stack]) -> None:
    st, _ = stacks
    sdk = openai.OpenAI(base_url=f"{st.gateway_url}/v1", api_key=st.mint(sub="responses"), max_retries=0)
    out = sdk.responses.create(model="tiny", input="Hello there", max_output_tokens=8)
    assert out.status in ("completed", "incomplete") and out.usage is not None and out.usage.output_tokens >= 1
    events = list(sdk.responses.create(model="tiny", input="Hello there", max_output_tokens=8, stream=True))
    assert events[0].type == "response.created" and events[-1].type in ("response.completed", "response.incomplete")
    assert any(e.type == "response.output_text.delta" for e in events)
    audit = [json.loads(line) for line in st.audit_log.read_text().splitlines()]
    mine = [a for a in audit if a["route"] == "/v1/responses"]
    assert [(a["status"], a["stream"]) for a in mine] == [(200, False), (200, True)]
    assert all(a["prompt_tokens"] and a["completion_tokens"] for a in mine)  # usage read from vLLM's replies


def test_sdk_embeddings(stacks: tuple[Stack, Stack]) -> None:
    _, st = stacks
    sdk = openai.OpenAI(base_url=f"{st.gateway_url}/v1", api_key=st.mint(sub="embeddings"), max_retries=0)
    out = sdk.embeddings.create(model="tiny-embed", input=["hello", "world"])
    assert [d.index for d in out.data] == [0, 1] and len(out.data[0].embedding) > 1
    b64 = sdk.embeddings.create(model="tiny-embed", input="hello", encoding_format="base64")
    # Asked for explicitly, the SDK hands back vLLM's base64 of little-endian float32s as it came.
    assert len(base64.b64decode(str(b64.data[0].embedding))) == 4 * len(out.data[0].embedding)
    audit = [json.loads(line) for line in st.audit_log.read_text().splitlines()]
    mine = [a for a in audit if a["route"] == "/v1/embeddings"]
    assert [a["status"] for a in mine] == [200, 200] and mine[0]["prompt_tokens"] >= 2
