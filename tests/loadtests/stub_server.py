"""A tiny OpenAI-compatible streaming server with exact TTFT/ITL and planted faults.

Only for the load-test suite when the real simulator is not wanted: every token after
`--ttft-ms`, then one chunk per `--itl-ms`; `--error-rate` answers `--error-status`,
`--broken-rate` answers 200 with a stream that stops mid-way (no finish, no [DONE]).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def build(args: argparse.Namespace) -> Starlette:
    rng = random.Random(args.seed)

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def chat(request: Request) -> Response:
        body = await request.json()
        if rng.random() < args.error_rate:
            return JSONResponse({"error": {"message": "planted failure", "type": "server_error"}}, args.error_status)
        n = int(body.get("max_tokens") or 16)
        broken = rng.random() < args.broken_rate
        created = int(time.time())

        def chunk(delta: dict[str, str], finish: str | None = None) -> str:
            obj = {
                "id": "chatcmpl-stub",
                "object": "chat.completion.chunk",
                "created": created,
                "model": args.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(obj)}\n\n"

        async def stream() -> AsyncIterator[str]:
            yield chunk({"role": "assistant"})
            await asyncio.sleep(args.ttft_ms / 1000)
            for i in range(n):
                if i:
                    await asyncio.sleep(args.itl_ms / 1000)
                if broken and i == n // 2:
                    return
                yield chunk({"content": f"tok{i} "})
            yield chunk({}, "length")
            usage = {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": n + 10}
            yield f"data: {json.dumps({'id': 'chatcmpl-stub', 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    return Starlette(routes=[Route("/health", health), Route("/v1/chat/completions", chat, methods=["POST"])])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", default="sim-llama")
    p.add_argument("--ttft-ms", type=float, default=20.0)
    p.add_argument("--itl-ms", type=float, default=5.0)
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--error-status", type=int, default=500)
    p.add_argument("--broken-rate", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    uvicorn.run(build(args), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
