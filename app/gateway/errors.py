"""OpenAI-shaped error bodies: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.responses import Response

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "upstream_error",
    503: "upstream_error",
    504: "upstream_error",
}


class GatewayError(Exception):
    """An error that becomes an OpenAI-shaped response; raised anywhere, rendered at the edge."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        kind: str | None = None,
        type_: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})
        # A short machine label for metrics and the audit log.
        self.kind = kind or code or _TYPES.get(status, "error")
        # The OpenAI error type; by default derived from the status.
        self.type = type_

    def body(self) -> bytes:
        return error_body(self.status, self.message, code=self.code, param=self.param, type_=self.type)

    def response(self, request_id: str | None = None) -> Response:
        headers = dict(self.headers)
        if request_id:
            headers["x-request-id"] = request_id
        return Response(self.body(), status_code=self.status, headers=headers, media_type="application/json")


def error_body(
    status: int, message: str, *, code: str | None = None, param: str | None = None, type_: str | None = None
) -> bytes:
    etype = type_ or _TYPES.get(status, "api_error")
    return orjson.dumps({"error": {"message": message, "type": etype, "param": param, "code": code}})


def sse_error_event(status: int, message: str, code: str) -> bytes:
    """An SSE event carrying an OpenAI error (the SDK raises APIError on it)."""
    return b"data: " + error_body(status, message, code=code) + b"\n\n"


# vLLM's context-length refusals (vllm/renderers/params.py `_token_len_check`/`_text_len_check`:
# "This model's maximum context length is N tokens. ..."; vllm/v1/engine/input_processor.py:
# "... longer than the maximum model length of N"; vllm/entrypoints/serve/utils/api_utils.py:
# "Input length (N) exceeds model's maximum context length (M).").
_CONTEXT_LENGTH = ("maximum context length", "maximum model length")


def upstream_error_body(status: int, content: bytes, route: str) -> bytes:
    """A vLLM error body in OpenAI's shape.

    vLLM answers `{"error": {"message", "type": "BadRequestError", "param", "code": 400}}`
    (vllm/entrypoints/serve/exception_handling/error_response.py); OpenAI's clients expect
    `type: invalid_request_error` and a string `code` (`context_length_exceeded` where it applies)."""
    try:
        obj = orjson.loads(content)
    except orjson.JSONDecodeError:
        obj = None
    err = obj.get("error") if isinstance(obj, dict) else None
    message = err.get("message") if isinstance(err, dict) else None
    if not isinstance(message, str) or not message:
        message = f"The model server refused the request (HTTP {status})."
    param = err.get("param") if isinstance(err, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    code = code if isinstance(code, str) else None
    if any(marker in message.lower() for marker in _CONTEXT_LENGTH):
        code = "context_length_exceeded"
        param = "messages" if route == "/v1/chat/completions" else "input" if route != "/v1/completions" else "prompt"
    etype = _TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return error_body(status, message, code=code, param=param if isinstance(param, str) else None, type_=etype)
