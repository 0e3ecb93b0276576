"""End to end with the real simulator: pipeline.runtime.local_stack.local_stack + the OpenAI SDK."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from pipeline.runtime.local_stack import local_stack


@pytest.mark.slow
def test_local_stack_with_simulator(tmp_path: Path) -> None:
    with local_stack(tmp_path, model="sim-llama", simulator_args=["--itl-ms", "1"]) as stack:
        assert stack.simulator is not None and stack.simulator.alive()
        sdk = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=stack.mint(sub="e2e"), max_retries=0)
        out = sdk.chat.completions.create(model="sim-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
        assert out.choices[0].message.content and out.usage is not None and out.usage.completion_tokens == 8
        chunks = list(
            sdk.chat.completions.create(
                model="sim-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=5, stream=True
            )
        )
        assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 5
        assert [m.id for m in sdk.models.list()] == ["sim-llama"]
        # Unknown model is refused by the gateway, before the simulator: 404 for a caller
        # allowed any model ("*"), 403 for one that may not use it (no model enumeration).
        admin = openai.OpenAI(
            base_url=f"{stack.gateway_url}/v1", api_key=stack.mint(sub="e2e", roles=("admin",)), max_retries=0
        )
        with pytest.raises(openai.NotFoundError):
            admin.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.PermissionDeniedError):
            sdk.completions.create(model="other", prompt="hi")
        ready = stack.gateway.wait_http  # readiness needs one successful probe generation
        ready(f"{stack.internal_url}/readyz", timeout=15)
        assert httpx.get(f"{stack.internal_url}/readyz").json()["ready"] is True
        assert stack.audit_log.read_text().count('"route":"/v1/chat/completions"') == 3
        gw = stack.gateway
    assert not gw.alive() and stack.simulator is not None and not stack.simulator.alive()
