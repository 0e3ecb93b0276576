"""A local service stack: the simulator (or a given upstream) behind the gateway.

Used by the smoke stage, the load tests, the benchmark and the rollback drill:

    with local_stack(work_dir) as stack:
        token = stack.mint(sub="alice", roles=("user",))
        httpx.post(f"{stack.gateway_url}/v1/chat/completions", headers={"authorization": f"Bearer {token}"}, ...)

Everything it needs (dev keys, RBAC file, settings) is written into `work_dir`; both
processes listen on free loopback ports and are stopped by PID on every exit path.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from app.gateway.tokens import DevKeys, write_dev_keys
from pipeline.runtime.contract import AUDIENCE, GATEWAY_SETTINGS, ISSUER
from pipeline.runtime.procs import ManagedProcess, free_port, running

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_rbac(model: str) -> dict[str, Any]:
    """Roles for a local stack: `user` may use `model`, `admin` everything; limits far above any test load."""
    return {
        "tiers": {"standard": {"requests_per_minute": 10_000_000, "tokens_per_minute": 10_000_000_000}},
        "roles": {
            "user": {"models": [model], "max_tokens": 4096, "tier": "standard"},
            "admin": {"models": ["*"], "max_tokens": 8192, "tier": "standard"},
        },
    }


@dataclass
class Stack:
    gateway_url: str
    upstream_url: str
    model: str
    simulator: ManagedProcess | None
    gateway: ManagedProcess
    issuer: str
    audience: str
    audit_log: Path
    keys: DevKeys
    rbac_file: Path
    env: dict[str, str]
    internal_url: str = ""  # the gateway's /metrics and /readyz (not on the API port)

    def mint(self, sub: str = "local-user", roles: Sequence[str] = ("user",), ttl: int = 3600) -> str:
        """A token this stack's gateway accepts."""
        return self.keys.mint(sub=sub, roles=roles, issuer=self.issuer, audience=self.audience, ttl_seconds=ttl)


def gateway_settings(
    work_dir: Path, keys: DevKeys, rbac_file: Path, upstream_url: str, overrides: Mapping[str, str] | None
) -> dict[str, str]:
    env = {
        "GATEWAY_UPSTREAM_URL": upstream_url,
        "GATEWAY_JWT_JWKS": str(keys.jwks),
        "GATEWAY_JWT_ISSUER": ISSUER,
        "GATEWAY_JWT_AUDIENCE": AUDIENCE,
        "GATEWAY_RBAC_FILE": str(rbac_file),
        "GATEWAY_AUDIT_LOG": str(work_dir / "audit.log"),
        "GATEWAY_AUDIT_HASH_KEY": secrets.token_hex(24),
        **GATEWAY_SETTINGS,
    }
    env.update(overrides or {})
    return env


@contextlib.contextmanager
def local_stack(
    work_dir: Path,
    *,
    upstream_url: str | None = None,
    model: str = "sim-llama",
    simulator_args: Sequence[str] = (),
    gateway_env: Mapping[str, str] | None = None,
    rbac: dict[str, Any] | None = None,
    workers: int = 1,
    timeout: float = 60.0,
) -> Iterator[Stack]:
    """Start simulator (unless `upstream_url`) + gateway; yield a Stack; always stop both."""
    work_dir = work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    keys = write_dev_keys(work_dir / "keys")
    rbac_file = work_dir / "rbac.yaml"
    with rbac_file.open("w") as fh:
        YAML(typ="safe", pure=True).dump(rbac or default_rbac(model), fh)
    logs = work_dir / "logs"
    with contextlib.ExitStack() as stack:
        simulator: ManagedProcess | None = None
        if upstream_url is None:
            sim_port = free_port()
            upstream_url = f"http://127.0.0.1:{sim_port}"
            argv = [sys.executable, "-m", "app.simulator", "--host", "127.0.0.1", "--port", str(sim_port)]
            argv += ["--model", model, *simulator_args]
            simulator = stack.enter_context(
                running(
                    "simulator",
                    argv,
                    logs / "simulator.log",
                    ready_url=f"{upstream_url}/health",
                    timeout=timeout,
                    cwd=REPO_ROOT,
                )
            )
        env = gateway_settings(work_dir, keys, rbac_file, upstream_url, gateway_env)
        # Written for humans re-running by hand; it holds a generated dev secret, never commit it.
        (work_dir / "gateway.env").write_text("".join(f"{k}={v}\n" for k, v in sorted(env.items())))
        gw_port = free_port()
        gateway_url = f"http://127.0.0.1:{gw_port}"
        argv = [sys.executable, "-m", "app.gateway", "--host", "127.0.0.1", "--port", str(gw_port)]
        internal_port = free_port()
        argv += ["--internal-port", str(internal_port), "--workers", str(workers), "--log-level", "warning"]
        gateway = stack.enter_context(
            running(
                "gateway",
                argv,
                logs / "gateway.log",
                ready_url=f"{gateway_url}/healthz",
                timeout=timeout,
                env=env,
                cwd=REPO_ROOT,
            )
        )
        log.info("stack up: gateway %s → upstream %s (model %s)", gateway_url, upstream_url, model)
        yield Stack(
            gateway_url=gateway_url,
            upstream_url=upstream_url,
            model=model,
            simulator=simulator,
            gateway=gateway,
            issuer=ISSUER,
            audience=AUDIENCE,
            audit_log=Path(env["GATEWAY_AUDIT_LOG"]),
            keys=keys,
            rbac_file=rbac_file,
            env=env,
            internal_url=f"http://127.0.0.1:{internal_port}",
        )
