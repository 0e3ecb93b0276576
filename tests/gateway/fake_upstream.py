"""A tiny OpenAI-compatible upstream whose behaviour is chosen by the model name.

Run: python tests/gateway/fake_upstream.py --port P. Models:
  ok            normal replies with usage (stream: 3 content chunks, usage chunk if asked)
  slow-stream   one chunk every 0.2 s for 2 s (to see chunk-by-chunk forwarding / disconnects)
  err500        HTTP 500
  reject400     HTTP 400 with an OpenAI error (vLLM-style rejection)
  malformed     HTTP 200 with a body that is not JSON
  hang          never answers
  die-midstream streams two chunks, then drops the connection
  echo          replies "echo:" + the last message (or prompt) reversed (audit text tests)
  slow-unary    answers after 2 s unless the client disconnects first (counted as cancelled)
  error-midstream streams one chunk, then vLLM's in-band error event, then [DONE]
GET /_state shows what arrived (counts, last request id, cancellations); POST /_reset clears
it; POST /_set {"health": 503, "gen_fail": true} breaks /health or generation.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

MODELS = [
    "ok",
    "slow-stream",
    "err500",
    "reject400",
    "malformed",
    "hang",
    "die-midstream",
    "echo",
    "slow-unary",
    "error-midstream",
]
STATE: dict[str, Any] = {}


def reset() -> None:
    STATE.clear()
    STATE.update(
        requests=0,
        by_model={},
        last_request_id=None,
        cancelled=0,
        finished_streams=0,
        health=200,
        gen_fail=False,
        bodies=[],
    )


reset()


def j(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def chunk(model: str, content: str | None, chat: bool, finish: str | None = None) -> bytes:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
    if chat:
        choice["delta"] = {} if content is None else {"content": content}
    else:
        choice["text"] = content or ""
    obj = {
        "id": "x",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "model": model,
        "choices": [choice],
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def generate(request: Request) -> Response:
    chat = request.url.path.endswith("chat/completions")
    body = orjson.loads(await request.body())
    model = body.get("model")
    if not (request.headers.get("x-request-id") or "").startswith("gateway-ready-probe"):
        STATE["requests"] += 1
        STATE["by_model"][model] = STATE["by_model"].get(model, 0) + 1
        STATE["last_request_id"] = request.headers.get("x-request-id")
        STATE["bodies"].append(body)
    elif STATE["gen_fail"]:
        return j({"error": {"message": "engine dead"}}, 500)
    stream = bool(body.get("stream"))
    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    if model == "err500":
        return j({"error": {"message": "boom"}}, 500)
    if model == "reject400":
        return j({"error": {"message": "context too long", "type": "BadRequestError", "code": 400}}, 400)
    if model == "malformed":
        return Response(b"<html>not json", media_type="application/json")
    if model == "hang":
        await asyncio.sleep(3600)
    if model == "slow-unary" and not stream:
        for _ in range(40):
            if await request.is_disconnected():
                STATE["cancelled"] += 1
                return j({}, 499)
            await asyncio.sleep(0.05)
    text = "a b c"
    if model == "echo":
        last = body["messages"][-1]["content"] if chat else body["prompt"]
        text = "echo:" + str(last)[::-1]
    if not stream:
        msg = {"role": "assistant", "content": text}
        choice = (
            {"index": 0, "message": msg, "finish_reason": "length"}
            if chat
            else {"index": 0, "text": text, "finish_reason": "length"}
        )
        return j(
            {
                "id": "x",
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()),
                "model": model,
                "choices": [choice],
                "usage": usage,
            }
        )

    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    async def events() -> AsyncIterator[bytes]:
        try:
            if model == "slow-stream":
                for i in range(10):
                    yield chunk(model, f"t{i} ", chat)
                    await asyncio.sleep(0.2)
            elif model == "die-midstream":
                yield chunk(model, "a ", chat)
                yield chunk(model, "b ", chat)
                await asyncio.sleep(0.05)
                raise ConnectionAbortedError
            elif model == "error-midstream":
                yield chunk(model, "a ", chat)
                err = {
                    "error": {"object": "error", "message": "engine died", "type": "InternalServerError", "code": 500}
                }
                yield b"data: " + orjson.dumps(err) + b"\n\n"
                yield b"data: [DONE]\n\n"
                return
            elif model == "echo":
                for i in range(0, len(text), 7):
                    yield chunk(model, text[i : i + 7], chat)
            else:
                for t in ("a", " b", " c"):
                    yield chunk(model, t, chat)
            yield chunk(model, None, chat, finish="length")
            if include_usage:
                obj = {"id": "x", "object": "chat.completion.chunk", "model": model, "choices": [], "usage": usage}
                yield b"data: " + orjson.dumps(obj) + b"\n\n"
            yield b"data: [DONE]\n\n"
            STATE["finished_streams"] += 1
        except asyncio.CancelledError:
            STATE["cancelled"] += 1
            raise

    return StreamingResponse(events(), media_type="text/event-stream")


async def models(request: Request) -> Response:
    return j({"object": "list", "data": [{"id": m, "object": "model", "owned_by": "fake"} for m in MODELS]})


async def health(request: Request) -> Response:
    return Response(status_code=STATE["health"])


async def state(request: Request) -> Response:
    return j(STATE)


async def do_reset(request: Request) -> Response:
    reset()
    return j(STATE)


async def do_set(request: Request) -> Response:
    STATE.update(orjson.loads(await request.body()))
    return j(STATE)


app = Starlette(
    routes=[
        Route("/v1/chat/completions", generate, methods=["POST"]),
        Route("/v1/completions", generate, methods=["POST"]),
        Route("/v1/models", models),
        Route("/health", health),
        Route("/_state", state),
        Route("/_reset", do_reset, methods=["POST"]),
        Route("/_set", do_set, methods=["POST"]),
    ]
)

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", timeout_graceful_shutdown=1)
