"""The gateway ASGI application.

Entry point for ASGI servers (one or several workers):

    uvicorn --factory app.gateway.app:create_app --workers N
    gunicorn -k uvicorn.workers.UvicornWorker 'app.gateway.app:create_app()'

The generation routes are raw ASGI endpoints dispatched before FastAPI's middleware and
router (`GatewayApp`), the upstream hop is a keep-alive pool (`upstream.py`, `h1.py`), and everything
derivable once (RBAC policies, JWKS keys, verified tokens, metric children) is cached;
see docs/gateway.md ("Performance"). Beside this module: `components` (built once from the
settings), `request_ctx` (per-request facts, ids, response helper), `relay` (the SSE relay of a
stream), `openapi` (the served OpenAPI description).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from app.gateway import metrics as m
from app.gateway.auth import AuthError
from app.gateway.components import Components, build_components
from app.gateway.config import ConfigError, Settings, load_settings
from app.gateway.errors import GatewayError, error_body, upstream_error_body
from app.gateway.health import Readiness
from app.gateway.openapi import openapi_spec
from app.gateway.rbac import Policy
from app.gateway.relay import DisconnectWatch, StreamRelay
from app.gateway.request_ctx import (
    JSON,
    JSON_CT,
    SSE_HEADERS,
    Ctx,
    Headers,
    json_depth_exceeds,
    new_request_id,
    param_of,
    request_id_of,
    send_response,
    valid_request_id,
)
from app.gateway.schemas import (
    REMOVED_FIELDS,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    Prompted,
    ResponsesRequest,
)
from app.gateway.upstream import (
    TRANSPORT_ERRORS,
    Upstream,
    bad_upstream,
    open_upstream,
    read_capped,
    reply_list,
    reply_text,
    reply_usage,
    upstream_error,
)

__all__ = ["Components", "Gateway", "GatewayApp", "build_components", "create_app", "openapi_spec"]

log = logging.getLogger(__name__)


class Gateway:
    """Request handling; one instance per worker process."""

    def __init__(self, c: Components) -> None:
        self.c = c
        self.s = c.settings
        self.upstream: Upstream | None = None
        self.readiness: Readiness | None = None
        self._bg: set[asyncio.Task[None]] = set()
        self._children: dict[tuple[str, str, int, str], tuple[Any, Any, Any, Any]] = {}
        self._ttft: dict[str, Any] = {}

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self.upstream = open_upstream(self.s)
        self.readiness = Readiness(self.s, self.upstream)
        self.readiness.start()
        jwks = self.c.auth.jwks
        if jwks is not None and jwks.is_url:
            # Load the keys before the first request needs them (the IdP may be down: then
            # requests get 503 until a rate-limited retry succeeds).
            jwks.refresh_soon()

    async def stop(self) -> None:
        if self.readiness:
            await self.readiness.stop()
        if self._bg:
            await asyncio.gather(*self._bg, return_exceptions=True)
        if self.upstream:
            await self.upstream.aclose()
        if self.c.auth.jwks is not None:
            await self.c.auth.jwks.aclose()
        await self.c.limiter.close()
        self.c.audit.close()

    def _background(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    # ---------------------------------------------------------------- bookkeeping
    def model_label(self, model: str | None) -> str:
        """Metric label of a model: only served model names, so label values stay bounded."""
        if model is None:
            return "-"
        rd = self.readiness
        return model if rd is not None and model in rd.model_ids else "unknown"

    def ttft_child(self, model: str) -> Any:
        label = self.model_label(model)
        child = self._ttft.get(label)
        if child is None:
            child = self._ttft[label] = m.TTFT.labels(label)
        return child

    def _finish(self, ctx: Ctx) -> None:
        """Audit line + metrics, exactly once per request."""
        if ctx.finished:
            return
        ctx.finished = True
        elapsed = time.perf_counter() - ctx.t0
        model_label = self.model_label(ctx.model)
        status = ctx.status
        cause = m.CAUSE_NONE if status < 500 else m.cause(status, ctx.error)
        key = (ctx.route, model_label, status, cause)
        children = self._children.get(key)
        if children is None:
            # labels() takes a lock and builds a tuple per call: resolve each combination once
            # (the release label is constant per process).
            release = self.s.release
            children = (
                m.REQUESTS.labels(ctx.route, model_label, str(status), release, cause),
                m.LATENCY.labels(ctx.route, release),
                m.PROMPT_TOKENS.labels(model_label),
                m.COMPLETION_TOKENS.labels(model_label),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(elapsed)
        m.IN_FLIGHT.dec()
        if ctx.prompt_tokens:
            children[2].inc(ctx.prompt_tokens)
        if ctx.completion_tokens:
            children[3].inc(ctx.completion_tokens)
        p = ctx.principal
        rec: dict[str, Any] = {
            "request_id": ctx.request_id,
            "upstream_request_id": ctx.upstream_id or None,
            "subject": p.subject_hash if p else None,
            "roles": list(p.roles) if p else None,
            "model": ctx.model,
            "route": ctx.route,
            "status": ctx.status,
            "stream": ctx.stream,
            "prompt_tokens": ctx.prompt_tokens,
            "completion_tokens": ctx.completion_tokens,
            "latency_ms": round(elapsed * 1000, 3),
            "ttft_ms": round(ctx.ttft * 1000, 3) if ctx.ttft is not None else None,
            "ratelimit": ctx.decision.label if ctx.decision else None,
            "ratelimit_backend": ctx.decision.backend if ctx.decision else None,
            "error": ctx.error,
        }
        if ctx.text is not None:
            rec["text"] = ctx.text
        self.c.audit.write(rec)

    def _error(self, ctx: Ctx, err: GatewayError) -> tuple[int, bytes, Headers]:
        """Status, OpenAI-shaped body and headers of a refusal; records it in ctx."""
        ctx.status = err.status
        ctx.error = err.kind
        if isinstance(err, AuthError):
            m.AUTH_FAILURES.labels(err.reason).inc()
        headers: dict[str, str] = dict(err.headers)
        if ctx.decision is not None:
            headers.update(ctx.decision.headers())
            if err.status != 429:
                headers.pop("retry-after", None)
        headers["x-request-id"] = ctx.request_id
        return err.status, err.body(), [(k.encode(), v.encode()) for k, v in headers.items()]

    def _fail(self, ctx: Ctx, err: GatewayError) -> Response:
        status, body, headers = self._error(ctx, err)
        return Response(body, status_code=status, headers={k.decode(): v.decode() for k, v in headers}, media_type=JSON)

    def _settle(self, ctx: Ctx) -> None:
        """Reconcile the token bucket with what the upstream reported."""
        if ctx.prompt_tokens is None or ctx.policy is None or ctx.principal is None:
            return
        self._adjust(ctx, ctx.prompt_tokens + (ctx.completion_tokens or 0) - ctx.estimate)

    def _refund(self, ctx: Ctx) -> None:
        """Give back the token estimate of a request the upstream refused or failed before any output."""
        if ctx.estimate and ctx.decision is not None and ctx.decision.allowed and ctx.prompt_tokens is None:
            self._adjust(ctx, -ctx.estimate)
            ctx.estimate = 0

    def _adjust(self, ctx: Ctx, delta: int) -> None:
        if delta and ctx.policy is not None and ctx.principal is not None:
            pol = ctx.policy
            limiter = self.c.limiter
            key = ctx.principal.subject_hash
            if limiter.redis is None:
                # In memory the adjustment is synchronous: no task per request.
                limiter.memory.adjust(key, pol.requests_per_minute, pol.tokens_per_minute, delta)
            else:
                self._background(limiter.adjust(key, pol.requests_per_minute, pol.tokens_per_minute, delta))

    # ---------------------------------------------------------------- request checks
    async def _body(self, receive: Receive, declared: bytes | None) -> bytes:
        cap = self.s.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise GatewayError(413, f"The request body is larger than {cap} bytes.", code="body_too_large")
        chunks: list[bytes] | None = None
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientDisconnect()
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                raise GatewayError(413, f"The request body is larger than {cap} bytes.", code="body_too_large")
            if not message.get("more_body", False):
                if chunks is None:
                    return chunk  # the usual case: the whole body in one message
                chunks.append(chunk)
                return b"".join(chunks)
            if chunks is None:
                chunks = []
            chunks.append(chunk)

    async def _authorize(self, authorization: str | None, ctx: Ctx) -> Policy:
        ctx.principal = await self.c.auth.authenticate(authorization)
        policy = self.c.rbac.policy(ctx.principal.roles)
        if policy is None:
            raise GatewayError(403, "None of the token's roles grants access to this service.", code="no_role")
        ctx.policy = policy
        return policy

    async def _check_model(self, model: str, policy: Policy) -> None:
        # Permission first: a caller learns nothing about models it may not use (403 whether
        # or not they exist), so the 404 below cannot be used to enumerate the served models.
        if not policy.allows(model):
            raise GatewayError(
                403, f"You are not allowed to use the model '{model}'.", code="model_not_allowed", param="model"
            )
        rd = self.readiness
        if rd is not None and model not in rd.model_ids:
            await rd.refresh_models()
            # An empty list means the upstream is unreachable: let the request fail there (502/503).
            if rd.model_ids and model not in rd.model_ids:
                raise GatewayError(404, f"The model '{model}' does not exist.", code="model_not_found", param="model")

    def _validate(self, data: Any, schema: type[Prompted]) -> Prompted:
        if not isinstance(data, dict):
            raise GatewayError(400, "The request body must be a JSON object.", code="invalid_body")
        for name in REMOVED_FIELDS.keys() & data.keys():
            raise GatewayError(
                400,
                f"'{name}' was removed from vLLM (0.12) and would be ignored: use {REMOVED_FIELDS[name]}.",
                code="unsupported_parameter",
                param=name,
            )
        try:
            return schema.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            param = param_of(err.get("loc", ()))
            msg = str(err.get("msg", "invalid value"))
            if err.get("type") == "extra_forbidden":
                msg = "Unrecognized request argument"
            raise GatewayError(400, f"Invalid value for '{param}': {msg}.", code="invalid_value", param=param) from None

    def _caps(self, req: Prompted, data: dict[str, Any], policy: Policy) -> int:
        """Enforce size caps, settle max_tokens; return the token estimate for the limiter."""
        s = self.s
        if getattr(req, "priority", None) and not policy.priority:
            # vLLM's scheduling priority: only roles granted it may jump (or be pushed down) the queue.
            raise GatewayError(403, "Your role may not set 'priority'.", code="priority_not_allowed", param="priority")
        count = req.message_count()
        what = req.PROMPT_PARAM
        if count > s.max_messages:
            raise GatewayError(
                400, f"Too many {what}: {count} > {s.max_messages}.", code="too_many_messages", param=what
            )
        chars = req.prompt_chars()
        if chars > s.max_prompt_chars:
            raise GatewayError(
                400,
                f"The prompt is too long: {chars} > {s.max_prompt_chars} characters.",
                code="prompt_too_long",
                param=what,
            )
        n = req.choices()
        if n > s.max_n:
            raise GatewayError(400, f"'n' must be at most {s.max_n}.", code="invalid_value", param="n")
        limit = min(s.max_tokens, policy.max_tokens)
        field_name, asked = req.output_request()
        if field_name is None:
            asked = 0  # nothing generated (embeddings)
        elif asked is not None and asked > limit:
            raise GatewayError(
                400,
                f"'{field_name}' must be at most {limit} for your role.",
                code="max_tokens_exceeded",
                param=field_name,
            )
        elif asked is None:
            asked = self._default_max_tokens(req, data, limit, field_name)
        prompts = count if isinstance(req, CompletionRequest) else 1
        # ~4 characters per token plus per-message overhead: a cheap, deliberately generous estimate.
        return chars // 4 + 4 * count + asked * n * prompts

    def _default_max_tokens(self, req: Prompted, data: dict[str, Any], cap: int, field_name: str = "max_tokens") -> int:
        """max_tokens for a request that names none: never above the role's cap, never a value the
        upstream must reject for the model's context (`max_model_len` from its /v1/models)."""
        rd = self.readiness
        context = rd.context_len.get(req.model) if rd is not None else None
        if context is None:
            # Context unknown (an upstream that does not report it): the role's cap.
            data[field_name] = cap
            return cap
        if cap >= context - 1:
            # vLLM's own default (context - prompt tokens) cannot exceed the cap: leave it to vLLM.
            return context
        # The prompt takes at most one token per UTF-8 byte (byte-level BPE) plus the chat template.
        worst_prompt = req.prompt_token_bound() + self.s.prompt_overhead_tokens
        room = max(1, min(cap, context - worst_prompt))
        data[field_name] = room
        return room

    # ---------------------------------------------------------------- generation (raw ASGI)
    async def generate(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: str,
        schema: type[Prompted],
    ) -> None:
        """POST /v1/chat/completions and /v1/completions, served as raw ASGI: this is the
        hot path, so no starlette Request/Response objects and no middleware stack."""
        authorization: bytes | None = None
        declared: bytes | None = None
        rid: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is None:
                    authorization = value
            elif name == b"content-length":
                if declared is None:
                    declared = value
            elif name == b"x-request-id" and rid is None:
                rid = value
        ctx = Ctx(
            route=route,
            request_id=valid_request_id(rid.decode("latin-1") if rid is not None else None),
            t0=time.perf_counter(),
        )
        ctx.upstream_id = ctx.request_id if rid is None else new_request_id()
        m.IN_FLIGHT.inc()
        streaming = False
        started = False

        def sender(message: Message) -> Awaitable[None]:
            nonlocal started
            started = True
            return send(message)

        try:
            try:
                policy = await self._authorize(authorization.decode("latin-1") if authorization else None, ctx)
                data, req = self._parse(await self._body(receive, declared), schema)
                await self._check_model(req.model, policy)
                ctx.model = req.model
                ctx.stream = req.streams()
                ctx.estimate = self._caps(req, data, policy)
                await self._limit(ctx, policy)
                if self.s.audit_include_text:
                    ctx.text = {"prompt": data.get("messages", data.get("prompt", data.get("input")))}
                if ctx.stream:
                    data["stream"] = True
                    streaming = True
                    await self._stream(ctx, data, receive, sender)
                else:
                    status, body, headers = await self._unary_watched(ctx, data, receive)
                    self._finish(ctx)
                    await sender({"type": "http.response.start", "status": status, "headers": headers})
                    await sender({"type": "http.response.body", "body": body})
                return
            except GatewayError as err:
                if err.kind.startswith("upstream_"):
                    self._refund(ctx)
                status, body, headers = self._error(ctx, err)
            except ClientDisconnect:
                ctx.status, ctx.error = 499, "client_closed"
                status, body, headers = 499, b"", []
            if streaming and started:
                return
            streaming = False
            self._finish(ctx)
            await send_response(sender, status, body, headers, JSON_CT)
        except asyncio.CancelledError:
            if not ctx.disconnected:
                raise
            ctx.status, ctx.error = 499, "client_closed"  # a cancel that raced the reply
            self._finish(ctx)
        except Exception:
            log.exception("unhandled error on %s", route)
            if not ctx.finished:
                ctx.status, ctx.error = 500, "internal"
                self._finish(ctx)
            if not started:
                await send_response(send, 500, error_body(500, "Internal error."), [], JSON_CT)

    def _parse(self, raw: bytes, schema: type[Prompted]) -> tuple[dict[str, Any], Prompted]:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise GatewayError(400, "The request body is not valid JSON.", code="invalid_json") from None
        limit = self.s.max_json_depth
        if raw.count(b"{") + raw.count(b"[") > limit and json_depth_exceeds(data, limit):
            raise GatewayError(400, f"The request body is nested deeper than {limit} levels.", code="json_too_deep")
        if isinstance(data, dict):
            try:
                # Strict validation passes only if no value needed coercion: then the parsed JSON
                # IS the validated values and goes upstream as it is (no dump; the usual case).
                return data, schema.model_validate(data, strict=True)
            except ValidationError:
                pass
        req = self._validate(data, schema)
        # Values were coerced ("0.5" → 0.5, "false" → False): what goes upstream is the validated values.
        return req.forward(), req

    async def _limit(self, ctx: Ctx, policy: Policy) -> None:
        ctx.decision = d = await self.c.limiter.take(
            ctx.principal.subject_hash,  # type: ignore[union-attr]  # set by _authorize
            policy.requests_per_minute,
            policy.tokens_per_minute,
            ctx.estimate,
        )
        if d.backend == "fallback":
            m.RATELIMIT_BACKEND_ERRORS.inc()
        if not d.allowed:
            m.RATE_LIMITED.labels(d.reason).inc()
            if d.reason == "too_large":
                # It can never fit, so retrying is pointless: a 400 without Retry-After, not a 429.
                raise GatewayError(
                    400,
                    f"Request needs about {ctx.estimate} tokens, above your limit of {d.limit_tokens} tokens per "
                    "minute: lower max_tokens or shorten the prompt.",
                    code="request_too_large",
                    param="max_tokens",
                    kind="ratelimit_too_large",
                )
            msg = f"Rate limit reached ({d.reason} per minute). Retry after {d.headers()['retry-after']}s."
            raise GatewayError(429, msg, code="rate_limit_exceeded", kind=f"ratelimit_{d.reason}")

    def _headers(self, ctx: Ctx) -> Headers:
        headers = ctx.decision.header_pairs() if ctx.decision else []
        headers.append((b"x-request-id", ctx.request_id.encode()))
        return headers

    @staticmethod
    def _encode(data: dict[str, Any]) -> bytes:
        try:
            return orjson.dumps(data)
        except orjson.JSONEncodeError as exc:  # the depth check makes this unreachable; never a 500
            raise GatewayError(400, f"The request cannot be encoded: {exc}.", code="invalid_body") from None

    async def _unary_watched(self, ctx: Ctx, data: dict[str, Any], receive: Receive) -> tuple[int, bytes, Headers]:
        """_unary, cancelled (dropping the upstream connection, which aborts the request in vLLM)
        when the client disconnects while it waits."""
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.ensure_future(self._cancel_on_disconnect(receive, task, ctx))
        try:
            return await self._unary(ctx, data)
        except asyncio.CancelledError:
            if ctx.disconnected:
                task.uncancel()
                raise ClientDisconnect() from None
            raise
        finally:
            watcher.cancel()

    @staticmethod
    async def _cancel_on_disconnect(receive: Receive, task: asyncio.Task[Any], ctx: Ctx) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        ctx.disconnected = True
        task.cancel()

    async def _unary(self, ctx: Ctx, data: dict[str, Any]) -> tuple[int, bytes, Headers]:
        assert self.upstream is not None
        body = self._encode(data)
        status, content = await self.upstream.post(ctx.route, body, ctx.upstream_id)
        if status >= 500:
            raise bad_upstream("status", f"The model server failed (HTTP {status}).")
        if status >= 400:
            # vLLM's own 4xx (e.g. context too long), in OpenAI's shape; nothing was generated.
            ctx.status, ctx.error = status, "upstream_rejected"
            self._refund(ctx)
            content = upstream_error_body(status, content, ctx.route)
            return status, content, [JSON_CT, (b"content-length", b"%d" % len(content)), *self._headers(ctx)]
        try:
            payload = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise bad_upstream("malformed", "The model server sent a malformed reply.") from None
        if not isinstance(payload, dict):
            raise bad_upstream("malformed", "The model server sent a malformed reply.")
        headers = self._headers(ctx)
        headers[:0] = [JSON_CT, (b"content-length", b"%d" % len(content))]
        listed = reply_list(ctx.route)
        if not isinstance(payload.get(listed), list):
            raise bad_upstream("malformed", f"The model server sent a reply without {listed}.")
        usage = reply_usage(ctx.route, payload)
        if usage is not None:
            ctx.prompt_tokens, ctx.completion_tokens = usage
            self._settle(ctx)
        if ctx.text is not None:
            ctx.text["completion"] = reply_text(ctx.route, payload)
        # The upstream's bytes go out as they came: no re-serialisation.
        return 200, content, headers

    async def _stream(self, ctx: Ctx, data: dict[str, Any], receive: Receive, send: Send) -> None:
        """Relay the upstream SSE stream; raises GatewayError only before the response started."""
        assert self.upstream is not None
        responses = ctx.route == "/v1/responses"  # typed events; no stream_options in vLLM's model
        opts = data.get("stream_options") or {}
        # Ask for usage so the token bucket can be settled; hide it if the client did not ask.
        strip_usage = not responses and not opts.get("include_usage")
        if strip_usage:
            data["stream_options"] = {**opts, "include_usage": True}
        # Watched from the start, as the unary path is: a client that leaves before the upstream's
        # headers cancels this task, which drops the upstream connection (aborting it in vLLM).
        task = asyncio.current_task()
        assert task is not None
        watch = DisconnectWatch(receive, task, ctx)
        watcher = asyncio.ensure_future(watch.run())
        try:
            try:
                r = await self.upstream.open_stream(ctx.route, self._encode(data), ctx.upstream_id)
                if r.status != 200:
                    await self._stream_refused(ctx, r, send)
                    return
            except asyncio.CancelledError:
                if ctx.disconnected:
                    task.uncancel()
                    raise ClientDisconnect() from None
                raise
            relay = StreamRelay(self, ctx, r, strip_usage, responses)
            watch.relay = relay
            events = relay.events()
            try:
                start = SSE_HEADERS + self._headers(ctx)
                await send({"type": "http.response.start", "status": 200, "headers": start})
                async for chunk in events:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    if relay.disconnected:
                        break
                relay.finished = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:
                relay.disconnect()  # the client's socket failed under us
            finally:
                relay.finished = True
                # Closes the upstream response and writes the audit line on every path.
                await events.aclose()
                await relay.close()
        finally:
            watcher.cancel()

    async def _stream_refused(self, ctx: Ctx, r: Any, send: Send) -> None:
        """A streamed request the upstream answered with an error status (before any event)."""
        try:
            content = await read_capped(r, self.s.upstream_max_response_bytes)
        except TRANSPORT_ERRORS as exc:
            r.close()
            raise upstream_error(exc) from None
        except BaseException:
            r.close()  # cancelled (the client left): drop the connection
            raise
        r.release()
        if r.status >= 500:
            raise bad_upstream("status", f"The model server failed (HTTP {r.status}).")
        ctx.status, ctx.error = r.status, "upstream_rejected"
        self._refund(ctx)
        self._finish(ctx)
        await send_response(
            send, r.status, upstream_error_body(r.status, content, ctx.route), self._headers(ctx), JSON_CT
        )

    async def models(self, request: Request) -> Response:
        ctx = Ctx(route="/v1/models", request_id=request_id_of(request), t0=time.perf_counter())
        m.IN_FLIGHT.inc()
        try:
            policy = await self._authorize(request.headers.get("authorization"), ctx)
            rd = self.readiness
            assert rd is not None
            if not rd.model_ids:
                await rd.refresh_models()
            if not rd.model_ids:
                raise GatewayError(
                    503, "The model list is unavailable (model server unreachable).", code="upstream_unavailable"
                )
            data = [mdl for mdl in rd.models if policy.allows(mdl["id"])]
            return Response(
                orjson.dumps({"object": "list", "data": data}),
                media_type=JSON,
                headers={"x-request-id": ctx.request_id},
            )
        except GatewayError as err:
            return self._fail(ctx, err)
        finally:
            self._finish(ctx)

    async def model(self, request: Request) -> Response:
        """GET /v1/models/{id}: 404 for models that do not exist or the caller may not use (no enumeration)."""
        ctx = Ctx(route="/v1/models/{id}", request_id=request_id_of(request), t0=time.perf_counter())
        m.IN_FLIGHT.inc()
        try:
            policy = await self._authorize(request.headers.get("authorization"), ctx)
            model_id = request.path_params["model_id"]
            rd = self.readiness
            assert rd is not None
            if model_id not in rd.model_ids:
                await rd.refresh_models()
            found = next((mdl for mdl in rd.models if mdl["id"] == model_id), None)
            if found is None or not policy.allows(model_id):
                raise GatewayError(
                    404, f"The model '{model_id}' does not exist.", code="model_not_found", param="model"
                )
            ctx.model = model_id
            return Response(orjson.dumps(found), media_type=JSON, headers={"x-request-id": ctx.request_id})
        except GatewayError as err:
            return self._fail(ctx, err)
        finally:
            self._finish(ctx)

    async def healthz(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)


class GenerateEndpoint:
    """A generation route as a plain ASGI app."""

    def __init__(self, gw: Gateway, route: str, schema: type[Prompted]) -> None:
        self.gw = gw
        self.route = route
        self.schema = schema

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.gw.generate(scope, receive, send, self.route, self.schema)


class GatewayApp(FastAPI):
    """FastAPI, except that POSTs to the generation routes skip the middleware stack and the
    router (~15 % of the gateway's CPU per request when profiled) and go straight to their
    ASGI endpoint, which renders its own errors. Everything else is plain FastAPI."""

    def __init__(self, hot: dict[str, GenerateEndpoint], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._hot = hot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self._hot.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _config_exit(message: str) -> None:
    sys.stderr.write(f"gateway: configuration error: {message}\n")
    raise SystemExit(2)


def create_app(settings: Settings | None = None) -> GatewayApp:
    """The ASGI app. Without `settings`, reads the environment and exits(2) with one line on bad config."""
    try:
        comps = build_components(settings or load_settings())
    except ConfigError as exc:
        _config_exit(str(exc))
        raise  # unreachable; keeps type checkers informed
    gw = Gateway(comps)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gw.start()
        try:
            yield
        finally:
            await gw.stop()

    hot = {
        "/v1/chat/completions": GenerateEndpoint(gw, "/v1/chat/completions", ChatCompletionRequest),
        "/v1/completions": GenerateEndpoint(gw, "/v1/completions", CompletionRequest),
        "/v1/embeddings": GenerateEndpoint(gw, "/v1/embeddings", EmbeddingRequest),
        "/v1/responses": GenerateEndpoint(gw, "/v1/responses", ResponsesRequest),
    }
    app = GatewayApp(
        hot,
        title="LLM gateway",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
        # A trailing-slash variant is a 404, never a 307 (that would make a client resend its
        # prompt to a Location built from the Host header, over plain http).
        redirect_slashes=False,
    )
    app.state.gateway = gw
    for path, endpoint in hot.items():
        # Also in the router: other methods get its 405, and the route table stays complete.
        app.router.routes.append(Route(path, endpoint, methods=["POST"]))
    app.add_route("/v1/models", gw.models, methods=["GET"])
    app.add_route("/v1/models/{model_id:path}", gw.model, methods=["GET"])
    # /readyz and /metrics are served on the internal port only (app/gateway/serving.py); /healthz
    # here too: a constant that says the API socket answers (local tools, the image's HEALTHCHECK).
    app.add_route("/healthz", gw.healthz, methods=["GET"])
    spec = orjson.dumps(openapi_spec())
    app.add_route("/openapi.json", lambda _r: Response(spec, media_type=JSON), methods=["GET"])

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
        msg = exc.detail if isinstance(exc, StarletteHTTPException) else "Internal error."
        headers = getattr(exc, "headers", None)  # e.g. 405's Allow
        return Response(error_body(status, str(msg)), status_code=status, media_type=JSON, headers=headers)

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path, exc_info=exc)
        return Response(error_body(500, "Internal error."), status_code=500, media_type=JSON)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)
    return app
