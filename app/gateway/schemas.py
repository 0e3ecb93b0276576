"""Pydantic models of the OpenAI request shapes the gateway accepts.

Unknown top-level fields are rejected (they would otherwise reach vLLM unchecked); the
vLLM sampling extras that are safe to expose are declared explicitly.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ModelName = Annotated[str, Field(min_length=1, max_length=256)]
Stop = str | Annotated[list[str], Field(max_length=16)] | None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class Sampling(BaseModel):
    """Parameters shared by both endpoints."""

    model_config = ConfigDict(extra="forbid")
    model: ModelName
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    n: Annotated[int, Field(ge=1)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    stop: Stop = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    seed: int | None = None
    user: Annotated[str, Field(max_length=256)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    # vLLM extras.
    top_k: Annotated[int, Field(ge=-1)] | None = None
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=2)] | None = None
    min_tokens: Annotated[int, Field(ge=0)] | None = None


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: Annotated[str, Field(max_length=256)] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    def text_len(self) -> int:
        c = self.content
        if c is None:
            return 0
        if isinstance(c, str):
            return len(c)
        return sum(len(p.text) for p in c)

    def text_bytes(self) -> int:
        c = self.content
        if c is None:
            return 0
        if isinstance(c, str):
            return len(c.encode())
        return sum(len(p.text.encode()) for p in c)


class ChatCompletionRequest(Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None

    def prompt_chars(self) -> int:
        return sum(m.text_len() for m in self.messages)

    def prompt_token_bound(self) -> int:
        """An upper bound on the prompt's tokens: one per UTF-8 byte, a few per message for the template."""
        return sum(m.text_bytes() + 8 for m in self.messages)

    def message_count(self) -> int:
        return len(self.messages)


class CompletionRequest(Sampling):
    prompt: str | Annotated[list[str], Field(min_length=1)]
    echo: bool | None = None
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    suffix: str | None = None

    def prompt_chars(self) -> int:
        return len(self.prompt) if isinstance(self.prompt, str) else sum(len(p) for p in self.prompt)

    def prompt_token_bound(self) -> int:
        """An upper bound on the (longest) prompt's tokens: one per UTF-8 byte."""
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        return max(len(p.encode()) for p in prompts)

    def message_count(self) -> int:
        return 1 if isinstance(self.prompt, str) else len(self.prompt)
