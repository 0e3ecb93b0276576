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
- the gateway forwards the validated values (`forward()`), never the raw JSON.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ModelName = Annotated[str, Field(min_length=1, max_length=256)]
Short = Annotated[str, Field(max_length=256)]
Stop = str | Annotated[list[str], Field(max_length=16)] | None
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
FreeObject = dict[str, Any]
MAX_PARTS = 64  # content parts per message
MAX_TOOLS = 128


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class Sampling(_Strict):
    """Parameters shared by both endpoints (OpenAI's and vLLM's)."""

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
    # vLLM guided / structured decoding (schemas pass through, bounded by the body and depth caps).
    structured_outputs: FreeObject | None = None
    guided_json: str | FreeObject | None = None
    guided_regex: Annotated[str, Field(max_length=4096)] | None = None
    guided_choice: Annotated[list[str], Field(max_length=256)] | None = None
    guided_grammar: str | None = None
    guided_decoding_backend: Short | None = None
    guided_whitespace_pattern: Short | None = None
    # Newer OpenAI fields.
    metadata: Annotated[dict[str, Short], Field(max_length=16)] | None = None
    store: bool | None = None
    service_tier: Short | None = None
    prompt_cache_key: Short | None = None
    safety_identifier: Short | None = None

    def forward(self) -> dict[str, Any]:
        """The validated request as JSON-ready values (what the client set, nulls included)."""
        return self.model_dump(exclude_unset=True)  # plain JSON types already: python mode is faster


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

    def _texts(self) -> list[str]:
        c = self.content
        if c is None:
            return []
        if isinstance(c, str):
            return [c]
        return [p.text if isinstance(p, TextPart) else p.refusal for p in c if isinstance(p, TextPart | RefusalPart)]

    def text_len(self) -> int:
        return sum(len(t) for t in self._texts())

    def text_bytes(self) -> int:
        return sum(len(t.encode()) for t in self._texts())


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

    def prompt_chars(self) -> int:
        return sum(m.text_len() for m in self.messages)

    def prompt_token_bound(self) -> int:
        """An upper bound on the prompt's tokens: one per UTF-8 byte, a few per message for the template."""
        return sum(m.text_bytes() + 8 for m in self.messages)

    def message_count(self) -> int:
        return len(self.messages)


class CompletionRequest(Sampling):
    # Text, a batch of texts, token ids, or a batch of token-id lists.
    prompt: str | Annotated[list[str], Field(min_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]
    echo: bool | None = None
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    suffix: str | None = None
    best_of: Annotated[int, Field(ge=1)] | None = None

    def _prompts(self) -> list[str] | list[list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and isinstance(p[0], int):
            return [p]
        return p  # type: ignore[return-value]

    def prompt_chars(self) -> int:
        # A token id counts as 4 characters (the estimate's ~4 characters per token).
        return sum(len(p) if isinstance(p, str) else 4 * len(p) for p in self._prompts())

    def prompt_token_bound(self) -> int:
        """An upper bound on the (longest) prompt's tokens: one per UTF-8 byte, or its token count."""
        return max(len(p.encode()) if isinstance(p, str) else len(p) for p in self._prompts())

    def message_count(self) -> int:
        return len(self._prompts())
