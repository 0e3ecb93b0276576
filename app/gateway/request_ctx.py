"""Per-request context of the gateway: the facts for the audit line and metrics, request ids,
the raw-ASGI response helper, and the request checks that run before validation."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.types import Send

from app.gateway.auth import Principal
from app.gateway.ratelimit import Decision
from app.gateway.rbac import Policy

REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
JSON = "application/json"
Headers = list[tuple[bytes, bytes]]
JSON_CT = (b"content-type", b"application/json")
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # Proxies in front (nginx) must not buffer the stream either.
    (b"x-accel-buffering", b"no"),
]
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


@dataclass(slots=True)
class Ctx:
    """Per-request facts, gathered for the audit line and the metrics."""

    route: str
    request_id: str
    t0: float
    principal: Principal | None = None
    policy: Policy | None = None
    model: str | None = None
    status: int = 200
    error: str | None = None
    stream: bool = False
    estimate: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    decision: Decision | None = None
    ttft: float | None = None
    text: dict[str, Any] | None = field(default=None)
    finished: bool = False
    # The id vLLM sees: unique per request (vLLM rejects duplicate running ids), unlike the client's.
    upstream_id: str = ""
    disconnected: bool = False


def new_request_id() -> str:
    """A random UUID4 in hex, without uuid.uuid4()'s urandom syscall and object per request
    (request ids need to be unique, not unguessable; each worker process seeds itself)."""
    return "%032x" % ((random.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET)


def valid_request_id(rid: str | None) -> str:
    if rid and REQUEST_ID_RE.fullmatch(rid):
        return rid
    return new_request_id()


def request_id_of(request: Request) -> str:
    return valid_request_id(request.headers.get("x-request-id"))


async def send_response(send: Send, status: int, body: bytes, headers: Headers, ctype: tuple[bytes, bytes]) -> None:
    """A complete response in two ASGI messages (what starlette's Response does, minus its overhead)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [ctype, (b"content-length", b"%d" % len(body)), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """True if a parsed JSON value nests objects/arrays deeper than `limit` (iterative: no recursion limit)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values() if isinstance(x, dict | list))
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v if isinstance(x, dict | list))
    return False


TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "dict", "list"})


def param_of(loc: tuple[int | str, ...]) -> str | None:
    """The field path of a validation error, without pydantic's union-member tags (`str`, `list[str]`)."""
    parts: list[str] = []
    for p in loc:
        if isinstance(p, str) and ("[" in p or p in TYPE_TAGS):
            break
        parts.append(str(p))
    return ".".join(parts) or None
