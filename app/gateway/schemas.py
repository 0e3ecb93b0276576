"""Pydantic models of the OpenAI (and vLLM) request shapes the gateway accepts.

The rule for fields (docs/gateway.md, "Request fields"):
- every field OpenAI's API or vLLM's sampling/decoding options define, and every field the
  OpenAI SDK sends back on an assistant message (`refusal`, `annotations`, `audio`,
  `function_call`, `reasoning_content`, nulls included), is declared and validated here;
- any other top-level or message field is rejected with a 400 naming it (it would
  otherwise reach vLLM unchecked: `request_id`, `chat_template`, `kv_transfer_params`,
  `vllm_xargs`, `mm_processor_kwargs`, `prompt_embeds` are deliberately not accepted);
- free-form objects (`response_format`, `tools`, `tool_calls`, `metadata`, guided-decoding
  schemas, `chat_template_kwargs`) pass through as they are, bounded by the body size cap
  and the nesting depth cap;
- the gateway forwards the validated values (`forward()`), never the raw JSON;
- vLLM's removed guided-decoding fields (`guided_json`, ... removed in vLLM 0.12, which
  ignores them and answers unconstrained) are refused with a 400 naming the replacement
  (`REMOVED_FIELDS`); `OPENAI_ONLY` lists the declared fields the pinned vLLM does not
  declare (OpenAI's, accepted and ignored by vLLM): tests/gateway/test_vllm_protocol.py
  checks every other declared field against the pinned vLLM's request models.

Prompt size: `rendered_texts()` yields every text a chat template (or the completion/embedding
tokenizer) renders; the prompt cap, the rate-limit estimate and the default `max_tokens` bound
are all computed from it (`prompt_chars`, `prompt_token_bound`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

ModelName = Annotated[str, Field(min_length=1, max_length=256)]
Short = Annotated[str, Field(max_length=256)]
Stop = str | Annotated[list[str], Field(max_length=16)] | None
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
FreeObject = dict[str, Any]
MAX_PARTS = 64  # content parts per message
MAX_TOOLS = 128


# Removed from vLLM's request models in 0.12 (vllm/entrypoints/serve/engine/protocol.py,
# `_REMOVED_GUIDED_FIELDS`): vLLM ignores them, so they are refused, naming the replacement.
REMOVED_FIELDS: dict[str, str] = {
    "guided_json": "'structured_outputs': {'json': <schema>} (or 'response_format')",
    "guided_regex": "'structured_outputs': {'regex': <pattern>}",
    "guided_choice": "'structured_outputs': {'choice': [...]}",
    "guided_grammar": "'structured_outputs': {'grammar': <grammar>}",
    "guided_whitespace_pattern": "'structured_outputs': {'whitespace_pattern': <pattern>}",
    "guided_decoding_backend": "nothing: the backend is a server setting (--structured-outputs-config.backend)",
}
PER_MESSAGE_TOKENS = 8  # chat-template tokens around each message or input item (role, separators)


def _dump(value: Any) -> str:
    """The JSON text of a free-form object, as a template renders it (tool schemas, tool calls)."""
    return orjson.dumps(value).decode()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class Prompted(_Strict):
    """A request with a prompt: its size comes from one place, `rendered_texts()`."""

    model: ModelName

    # Declared fields the pinned vLLM's request model does not declare (see the module doc).
    OPENAI_ONLY: ClassVar[frozenset[str]] = frozenset()
    # The field that holds the prompt (named by size errors).
    PROMPT_PARAM: ClassVar[str] = "prompt"
    # The field that bounds the output; None: the endpoint generates nothing (embeddings).
    OUTPUT_PARAM: ClassVar[str | None] = "max_tokens"

    def output_request(self) -> tuple[str | None, int | None]:
        """(the field that bounds the output, the value the client asked for)."""
        name = self.OUTPUT_PARAM
        return name, getattr(self, name) if name is not None else None

    def streams(self) -> bool:
        return bool(getattr(self, "stream", None))

    def choices(self) -> int:
        """Outputs generated per prompt (`n`)."""
        return getattr(self, "n", None) or 1

    def rendered_texts(self) -> Iterator[str]:
        """Every text a chat template or the engine renders from this request (each request kind
        defines it: chat, completions, embeddings, responses); the base class has none to give."""
        raise NotImplementedError(f"{type(self).__name__} must define rendered_texts()")

    def message_count(self) -> int:
        """Messages (or prompts) in the request; defined by each request kind, as rendered_texts()."""
        raise NotImplementedError(f"{type(self).__name__} must define message_count()")

    def prompt_chars(self) -> int:
        """Characters of everything rendered into the prompt(s) (the cap and the rate-limit estimate)."""
        return sum(len(t) for t in self.rendered_texts())

    def prompt_token_bound(self) -> int:
        """An upper bound on the prompt's tokens: one per UTF-8 byte of everything rendered, plus the
        template's tokens around each message."""
        return sum(len(t.encode()) for t in self.rendered_texts()) + PER_MESSAGE_TOKENS * self.message_count()

    def forward(self) -> dict[str, Any]:
        """The validated request as JSON-ready values (what the client set, nulls included)."""
        return self.model_dump(exclude_unset=True)  # plain JSON types already: python mode is faster


class StructuredOutputs(_Strict):
    """vLLM's `StructuredOutputsParams` (vllm/sampling_params.py); vLLM itself checks that exactly one
    constraint is set."""

    json_: str | FreeObject | None = Field(default=None, alias="json")
    regex: Annotated[str, Field(max_length=4096)] | None = None
    choice: Annotated[list[str], Field(min_length=1, max_length=256)] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    disable_any_whitespace: bool | None = None
    disable_additional_properties: bool | None = None
    whitespace_pattern: Short | None = None
    structural_tag: str | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def forward(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, by_alias=True)


class Sampling(Prompted):
    """Parameters shared by both generation endpoints (OpenAI's and vLLM's)."""

    OPENAI_ONLY = frozenset({"metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier"})

    model: ModelName
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    n: Annotated[int, Field(ge=1)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    stop: Stop = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    seed: int | None = None
    user: Short | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    # vLLM sampling extras.
    top_k: Annotated[int, Field(ge=-1)] | None = None
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=2)] | None = None
    min_tokens: Annotated[int, Field(ge=0)] | None = None
    ignore_eos: bool | None = None
    use_beam_search: bool | None = None
    length_penalty: float | None = None
    stop_token_ids: Annotated[list[int], Field(max_length=64)] | None = None
    include_stop_str_in_output: bool | None = None
    skip_special_tokens: bool | None = None
    spaces_between_special_tokens: bool | None = None
    truncate_prompt_tokens: Annotated[int, Field(ge=-1)] | None = None
    prompt_logprobs: Annotated[int, Field(ge=-1, le=20)] | None = None
    allowed_token_ids: Annotated[list[int], Field(max_length=4096)] | None = None
    bad_words: Annotated[list[Short], Field(max_length=64)] | None = None
    add_special_tokens: bool | None = None
    return_tokens_as_token_ids: bool | None = None
    return_token_ids: bool | None = None
    priority: int | None = None
    cache_salt: Short | None = None
    # vLLM structured outputs (schemas pass through, bounded by the body and depth caps).
    structured_outputs: StructuredOutputs | None = None
    # Newer OpenAI fields.
    metadata: Annotated[dict[str, Short], Field(max_length=16)] | None = None
    store: bool | None = None
    service_tier: Short | None = None
    prompt_cache_key: Short | None = None
    safety_identifier: Short | None = None

    def forward(self) -> dict[str, Any]:
        data = self.model_dump(exclude_unset=True, exclude={"structured_outputs"})
        if "structured_outputs" in self.model_fields_set:
            so = self.structured_outputs
            data["structured_outputs"] = so.forward() if so is not None else None
        return data


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageUrl(_Strict):
    url: Annotated[str, Field(max_length=1_000_000)]  # data: URLs included; the body cap bounds it anyway
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageUrl


class InputAudio(_Strict):
    data: str
    format: Literal["wav", "mp3"]


class AudioPart(_Strict):
    type: Literal["input_audio"]
    input_audio: InputAudio


class RefusalPart(_Strict):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[TextPart | ImagePart | AudioPart | RefusalPart, Field(discriminator="type")]


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | Annotated[list[ContentPart], Field(max_length=MAX_PARTS)] | None = None
    name: Short | None = None
    tool_calls: Annotated[list[FreeObject], Field(max_length=MAX_TOOLS)] | None = None
    tool_call_id: Short | None = None
    # What the OpenAI SDK (and vLLM) put on assistant messages, sent back verbatim in multi-turn chats.
    refusal: str | None = None
    annotations: list[FreeObject] | None = None
    audio: FreeObject | None = None
    function_call: FreeObject | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None

    def rendered_texts(self) -> Iterator[str]:
        """Every field a chat template renders: the content (text and refusal parts; images and audio
        become tokens of their own, not text), name, reasoning, refusal, tool calls (names and
        arguments, as the JSON templates print) and the tool call id."""
        c = self.content
        if isinstance(c, str):
            yield c
        elif c is not None:
            for p in c:
                if isinstance(p, TextPart):
                    yield p.text
                elif isinstance(p, RefusalPart):
                    yield p.refusal
        for text in (self.name, self.refusal, self.reasoning_content, self.reasoning, self.tool_call_id):
            if text:
                yield text
        for call in self.tool_calls or ():
            yield _dump(call)
        if self.function_call:
            yield _dump(self.function_call)


class ChatCompletionRequest(Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    response_format: FreeObject | None = None
    tools: Annotated[list[FreeObject], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: str | FreeObject | None = None
    parallel_tool_calls: bool | None = None
    functions: Annotated[list[FreeObject], Field(max_length=MAX_TOOLS)] | None = None
    function_call: str | FreeObject | None = None
    reasoning_effort: Short | None = None
    verbosity: Short | None = None
    prediction: FreeObject | None = None
    modalities: Annotated[list[Short], Field(max_length=4)] | None = None
    audio: FreeObject | None = None
    web_search_options: FreeObject | None = None
    # vLLM chat extras.
    echo: bool | None = None
    add_generation_prompt: bool | None = None
    continue_final_message: bool | None = None
    chat_template_kwargs: FreeObject | None = None

    PROMPT_PARAM = "messages"
    OPENAI_ONLY = Sampling.OPENAI_ONLY | {
        "functions",
        "function_call",
        "verbosity",
        "prediction",
        "modalities",
        "audio",
        "web_search_options",
    }

    def output_request(self) -> tuple[str | None, int | None]:
        if self.max_completion_tokens is not None:
            return "max_completion_tokens", self.max_completion_tokens
        return "max_tokens", self.max_tokens

    def rendered_texts(self) -> Iterator[str]:
        for m in self.messages:
            yield from m.rendered_texts()
        # Templates print the tool definitions (name, description, parameters) as JSON.
        for tool in (*(self.tools or ()), *(self.functions or ())):
            yield _dump(tool)

    def message_count(self) -> int:
        return len(self.messages)


class CompletionRequest(Sampling):
    # Text, a batch of texts, token ids, or a batch of token-id lists.
    prompt: str | Annotated[list[str], Field(min_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]
    echo: bool | None = None
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    suffix: str | None = None
    best_of: Annotated[int, Field(ge=1)] | None = None

    OPENAI_ONLY = Sampling.OPENAI_ONLY | {"best_of"}

    def _prompts(self) -> list[str] | list[list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and isinstance(p[0], int):
            return [p]
        return p  # type: ignore[return-value]

    def rendered_texts(self) -> Iterator[str]:
        # A token id counts as 4 characters (the estimate's ~4 characters per token).
        for p in self._prompts():
            yield p if isinstance(p, str) else "0000" * len(p)
        if self.suffix:
            yield self.suffix

    def prompt_token_bound(self) -> int:
        """An upper bound on the (longest) prompt's tokens: one per UTF-8 byte, or its token count."""
        suffix = len(self.suffix.encode()) if self.suffix else 0
        return suffix + max(len(p.encode()) if isinstance(p, str) else len(p) for p in self._prompts())

    def message_count(self) -> int:
        return len(self._prompts())


class EmbeddingRequest(Prompted):
    """POST /v1/embeddings: OpenAI's fields and vLLM's (vllm/entrypoints/pooling/embed/protocol.py,
    `EmbeddingCompletionRequest`)."""

    PROMPT_PARAM = "input"
    OUTPUT_PARAM = None

    model: ModelName
    input: str | Annotated[list[str], Field(min_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]
    encoding_format: Literal["float", "base64", "bytes"] | None = None
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: Short | None = None
    # vLLM extras.
    truncate_prompt_tokens: Annotated[int, Field(ge=-1)] | None = None
    truncation_side: Literal["left", "right"] | None = None
    add_special_tokens: bool | None = None
    priority: int | None = None
    cache_salt: Short | None = None
    embed_dtype: Short | None = None
    endianness: Short | None = None

    def _inputs(self) -> list[str] | list[list[int]]:
        i = self.input
        if isinstance(i, str):
            return [i]
        if i and isinstance(i[0], int):
            return [i]
        return i  # type: ignore[return-value]

    def rendered_texts(self) -> Iterator[str]:
        for p in self._inputs():
            yield p if isinstance(p, str) else "0000" * len(p)

    def message_count(self) -> int:
        return len(self._inputs())


class ResponsesRequest(Prompted):
    """POST /v1/responses: OpenAI's Responses API fields and vLLM's
    (vllm/entrypoints/openai/responses/protocol.py, `ResponsesRequest`).

    Not accepted: `previous_response_id`, `background`, `conversation` and `prompt` (they refer to
    responses stored in vLLM, which are not per user and which the gateway does not serve back)."""

    PROMPT_PARAM = "input"
    OUTPUT_PARAM = "max_output_tokens"

    model: ModelName
    input: str | Annotated[list[FreeObject], Field(min_length=1, max_length=1024)]
    instructions: str | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    stream: bool | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    tools: Annotated[list[FreeObject], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: str | FreeObject | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: Annotated[int, Field(ge=1)] | None = None
    reasoning: FreeObject | None = None
    text: FreeObject | None = None
    truncation: Literal["auto", "disabled"] | None = None
    include: Annotated[list[Short], Field(max_length=16)] | None = None
    store: bool | None = None
    metadata: Annotated[dict[str, Short], Field(max_length=16)] | None = None
    user: Short | None = None
    service_tier: Short | None = None
    prompt_cache_key: Short | None = None
    # vLLM extras.
    top_k: Annotated[int, Field(ge=-1)] | None = None
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=2)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    seed: int | None = None
    stop: Stop = None
    stop_token_ids: Annotated[list[int], Field(max_length=64)] | None = None
    ignore_eos: bool | None = None
    skip_special_tokens: bool | None = None
    include_stop_str_in_output: bool | None = None
    priority: int | None = None
    cache_salt: Short | None = None
    structured_outputs: StructuredOutputs | None = None
    chat_template_kwargs: FreeObject | None = None

    def forward(self) -> dict[str, Any]:
        data = self.model_dump(exclude_unset=True, exclude={"structured_outputs"})
        if "structured_outputs" in self.model_fields_set:
            so = self.structured_outputs
            data["structured_outputs"] = so.forward() if so is not None else None
        return data

    def rendered_texts(self) -> Iterator[str]:
        """The instructions, every input item (message text; other items, such as function calls and
        their outputs, as the JSON a template prints) and the tool definitions."""
        if self.instructions:
            yield self.instructions
        items = self.input
        if isinstance(items, str):
            yield items
        else:
            for item in items:
                content = item.get("content")
                if isinstance(content, str):
                    yield content
                elif isinstance(content, list):
                    for part in content:
                        if isinstance(part, dict) and isinstance(part.get("text"), str):
                            yield part["text"]
                rest = {k: v for k, v in item.items() if k not in ("content", "role", "type")}
                if rest:
                    yield _dump(rest)
        for tool in self.tools or ():
            yield _dump(tool)

    def message_count(self) -> int:
        return 1 if isinstance(self.input, str) else len(self.input)
