"""What real OpenAI and vLLM clients send is accepted, and the validated values are what vLLM receives."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from .conftest import Gateway, Upstream, assert_openai_error, chat_body

# An assistant message exactly as the OpenAI SDK returns it from vLLM (model_dump of ChatCompletionMessage).
SDK_ASSISTANT: dict[str, Any] = {
    "content": "a b c",
    "refusal": None,
    "role": "assistant",
    "annotations": None,
    "audio": None,
    "function_call": None,
    "tool_calls": [],
    "reasoning_content": None,
}


@pytest.fixture
def fresh(upstream: Upstream) -> Upstream:
    upstream.reset()
    return upstream


def post(gateway: Gateway, body: dict[str, Any], route: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.post(f"{gateway.url}{route}", json=body, headers=gateway.auth(roles=("admin",)), timeout=10)


def test_sdk_multi_turn_chat(gateway: Gateway, fresh: Upstream) -> None:
    sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.mint(roles=("admin",)), max_retries=0)
    history: list[Any] = [{"role": "user", "content": "hi"}]
    first = sdk.chat.completions.create(model="ok", messages=history, max_tokens=4)
    history += [first.choices[0].message, {"role": "user", "content": "again"}]  # the SDK object itself
    second = sdk.chat.completions.create(model="ok", messages=history, max_tokens=4)
    assert second.choices[0].message.content == "a b c"
    r = post(
        gateway,
        chat_body(messages=[{"role": "user", "content": "hi"}, SDK_ASSISTANT, {"role": "user", "content": "x"}]),
    )
    assert r.status_code == 200, r.text
    assert fresh.state()["bodies"][-1]["messages"][1] == SDK_ASSISTANT


def test_tool_calls_and_tool_results(gateway: Gateway, fresh: Upstream) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    r = post(gateway, chat_body(messages=msgs, tools=tools, tool_choice="auto", parallel_tool_calls=False))
    assert r.status_code == 200, r.text
    assert fresh.state()["bodies"][-1]["messages"][1]["tool_calls"] == [call]


NEWER_AND_VLLM_FIELDS: dict[str, Any] = {
    "reasoning_effort": "low",
    "metadata": {"team": "x"},
    "store": False,
    "service_tier": "auto",
    "prediction": {"type": "content", "content": "a"},
    "modalities": ["text"],
    "ignore_eos": True,
    "chat_template_kwargs": {"enable_thinking": False},
    "structured_outputs": {"json": {"type": "object"}},
    "skip_special_tokens": True,
    "top_k": 5,
    "min_p": 0.1,
    "repetition_penalty": 1.1,
    "stop_token_ids": [1],
    "seed": 3,
    "logprobs": True,
    "top_logprobs": 2,
}


def test_newer_openai_fields_and_vllm_extras_are_forwarded(gateway: Gateway, fresh: Upstream) -> None:
    r = post(gateway, chat_body(**NEWER_AND_VLLM_FIELDS))
    assert r.status_code == 200, r.text
    sent = fresh.state()["bodies"][-1]
    assert {k: sent[k] for k in NEWER_AND_VLLM_FIELDS} == NEWER_AND_VLLM_FIELDS


def test_content_parts(gateway: Gateway, fresh: Upstream) -> None:
    parts = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    ]
    r = post(gateway, chat_body(messages=[{"role": "user", "content": parts}]))
    assert r.status_code == 200, r.text
    assert fresh.state()["bodies"][-1]["messages"][0]["content"] == parts


def test_stream_null_and_token_id_prompts(gateway: Gateway, fresh: Upstream) -> None:
    assert post(gateway, chat_body(stream=None)).status_code == 200
    for prompt in ([1, 2, 3], [[1, 2], [3]]):
        r = post(gateway, {"model": "ok", "prompt": prompt, "max_tokens": 2}, "/v1/completions")
        assert r.status_code == 200, r.text
        assert fresh.state()["bodies"][-1]["prompt"] == prompt


def test_coerced_values_are_forwarded_as_validated(gateway: Gateway, fresh: Upstream) -> None:
    # "false" is False to the gateway's validation, so it must be False (a boolean) to vLLM too.
    r = post(gateway, chat_body(skip_special_tokens="false", stream_options=None, temperature="0.5"))
    assert r.status_code == 200, r.text
    sent = fresh.state()["bodies"][-1]
    assert sent["skip_special_tokens"] is False and sent["temperature"] == 0.5


def test_get_one_model(gateway: Gateway) -> None:
    r = httpx.get(f"{gateway.url}/v1/models/ok", headers=gateway.auth())
    assert r.status_code == 200 and r.json()["id"] == "ok"
    assert_openai_error(httpx.get(f"{gateway.url}/v1/models/nope", headers=gateway.auth()), 404)
    # Exists, but the role may not use it: indistinguishable from a missing model.
    assert_openai_error(httpx.get(f"{gateway.url}/v1/models/err500", headers=gateway.auth()), 404)
    assert httpx.get(f"{gateway.url}/v1/models/ok").status_code == 401
