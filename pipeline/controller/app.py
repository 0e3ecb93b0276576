"""The controller's HTTP server: POST /webhook (Alertmanager v4, authenticated), /healthz, /metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from pipeline.controller.auth import authorized
from pipeline.controller.config import ControllerConfig
from pipeline.controller.decisions import Controller
from pipeline.controller.webhook import WebhookPayload


def create_app(cfg: ControllerConfig) -> FastAPI:
    if not cfg.auth_configured():
        raise ValueError(
            "no webhook credentials: set ROLLBACK_CONTROLLER_TOKEN(_FILE) or "
            "ROLLBACK_CONTROLLER_BASIC_USER/ROLLBACK_CONTROLLER_BASIC_PASSWORD(_FILE)"
        )
    ctl = Controller(cfg)
    app = FastAPI(title="rollback-controller", docs_url=None, redoc_url=None)
    app.state.controller = ctl

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(ctl.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def receive(body: bytes, authorization: str | None) -> JSONResponse:
        if not authorized(cfg, authorization):
            ctl.metrics.webhooks.labels(result="unauthorized").inc()
            ctl.audit(event="unauthorized")
            return JSONResponse(
                {"error": "unauthorized"}, status_code=401, headers={"WWW-Authenticate": 'Bearer realm="rollback"'}
            )
        try:
            payload = WebhookPayload.model_validate_json(body)
        except ValidationError as exc:
            ctl.metrics.webhooks.labels(result="invalid").inc()
            return JSONResponse({"error": f"not an Alertmanager webhook payload: {exc.error_count()} error(s)"}, 400)
        if payload.version != "4":
            ctl.metrics.webhooks.labels(result="invalid").inc()
            return JSONResponse({"error": f"unsupported webhook payload version {payload.version!r} (want 4)"}, 400)
        results = ctl.handle(payload)
        failed = any(r["outcome"] == "error" for r in results)
        ctl.metrics.webhooks.labels(result="error" if failed else "accepted").inc()
        # 5xx makes Alertmanager retry: exactly what we want when git was unreachable.
        return JSONResponse({"results": results}, status_code=500 if failed else 200)

    @app.post("/webhook")
    async def webhook(request: Request, authorization: Annotated[str | None, Header()] = None) -> JSONResponse:
        body = await request.body()
        # Git work happens in a worker thread; the event loop stays free for /healthz.
        import anyio

        return await anyio.to_thread.run_sync(receive, body, authorization)

    return app
