"""`python -m app.gateway --host H --port P [--internal-port I] [--workers N]`: validate the configuration, then serve.

The API is served on P; /metrics, /readyz and /healthz on the internal port I (app/gateway/serving.py).
Bad configuration exits with status 2 and one line naming the setting (no traceback).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile

import uvicorn

from app.gateway.app import build_components
from app.gateway.config import ConfigError, load_settings
from app.gateway.serving import INTERNAL_LISTEN_ENV, ClientLimits, format_listen, protocol

log = logging.getLogger("app.gateway")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.gateway", description="The LLM gateway (settings: GATEWAY_* env)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="the API port")
    parser.add_argument("--internal-port", type=int, default=8081, help="/metrics, /readyz, /healthz")
    parser.add_argument("--internal-host", default=None, help="default: --host")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.internal_port == args.port:
        sys.stderr.write("gateway: configuration error: --internal-port must differ from --port\n")
        return 2

    try:
        settings = load_settings()
        build_components(settings).audit.close()  # fail fast, before any worker starts
    except ConfigError as exc:
        sys.stderr.write(f"gateway: configuration error: {exc}\n")
        return 2

    multiproc_dir = None
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # prometheus-client aggregates workers through files in this directory.
        multiproc_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
    # Each worker runs its own internal server (several workers share the port: SO_REUSEPORT).
    os.environ[INTERNAL_LISTEN_ENV] = format_listen(
        args.internal_host or args.host, args.internal_port, shared=args.workers > 1
    )
    try:
        uvicorn.run(
            "app.gateway.serving:create_served_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            loop="uvloop",
            # httptools, guarded: head size cap (431), head/body deadlines (408), connection cap.
            http=protocol(ClientLimits.of(settings)),
            limit_concurrency=settings.max_connections,
            timeout_keep_alive=settings.keepalive_timeout_seconds,
            access_log=False,  # the audit log is the access log
            proxy_headers=False,  # client addresses are not used; skip the middleware
            log_level=args.log_level,
            timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        )
    finally:
        if multiproc_dir:
            shutil.rmtree(multiproc_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
