"""Fixtures for the gateway suite: a fake upstream, dev keys, an RBAC file and one shared gateway."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from ruamel.yaml import YAML

from app.gateway.tokens import DevKeys, write_dev_keys
from pipeline.runtime.procs import ManagedProcess, free_port, running

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ISSUER = "https://idp.test"
AUDIENCE = "llm-gateway-test"
HASH_KEY = "test-audit-hash-key-0123456789"
RELEASE = "0.3.0+gtest123"

RBAC: dict[str, Any] = {
    "tiers": {
        "free": {"requests_per_minute": 3, "tokens_per_minute": 100000},
        "tiny": {"requests_per_minute": 1000, "tokens_per_minute": 300},
        "standard": {"requests_per_minute": 100000, "tokens_per_minute": 100000000},
    },
    "roles": {
        "user": {"models": ["ok", "slow-stream"], "max_tokens": 256, "tier": "standard"},
        "admin": {"models": ["*"], "max_tokens": 1024, "tier": "standard"},
        "limited": {"models": ["ok"], "max_tokens": 16, "tier": "free"},
        "tokenlimited": {"models": ["ok"], "max_tokens": 200, "tier": "tiny"},
    },
}


@contextlib.contextmanager
def refused_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A loopback port where connections are refused for as long as the context lasts:
    the socket is bound (nobody else can take the port) but never listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        yield int(s.getsockname()[1])


@dataclass
class Keys:
    es: DevKeys
    rs: DevKeys
    jwks: Path


# API url → internal url (/metrics, /readyz) of each gateway `start_gateway` started.
_INTERNAL_URLS: dict[str, str] = {}


def internal_url(url: str) -> str:
    """The internal port's base URL of the gateway serving the API at `url`."""
    return _INTERNAL_URLS[url]


@dataclass
class Gateway:
    url: str
    proc: ManagedProcess
    audit_log: Path
    keys: Keys
    env: dict[str, str]

    @property
    def internal_url(self) -> str:
        return internal_url(self.url)

    def metrics(self) -> str:
        return httpx.get(f"{self.internal_url}/metrics", timeout=10).text

    def mint(
        self, sub: str = "alice", roles: tuple[str, ...] = ("user",), *, rs: bool = False, ttl: int = 600, **extra: Any
    ) -> str:
        k = self.keys.rs if rs else self.keys.es
        return k.mint(sub=sub, roles=roles, issuer=ISSUER, audience=AUDIENCE, ttl_seconds=ttl, extra=extra or None)

    def auth(self, **kw: Any) -> dict[str, str]:
        return {"authorization": f"Bearer {self.mint(**kw)}"}

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line.strip()]


@dataclass
class Upstream:
    url: str
    proc: ManagedProcess

    def state(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_state").json()  # type: ignore[no-any-return]

    def reset(self) -> None:
        httpx.post(f"{self.url}/_reset")

    def set(self, **kw: Any) -> None:
        httpx.post(f"{self.url}/_set", json=kw)


@pytest.fixture(scope="session")
def gw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway")


@pytest.fixture(scope="session")
def keys(gw_dir: Path) -> Keys:
    es = write_dev_keys(gw_dir / "es", alg="ES256", kid="es-1")
    rs = write_dev_keys(gw_dir / "rs", alg="RS256", kid="rs-1")
    jwks = gw_dir / "jwks.json"
    merged = {"keys": json.loads(es.jwks.read_text())["keys"] + json.loads(rs.jwks.read_text())["keys"]}
    jwks.write_text(json.dumps(merged))
    return Keys(es, rs, jwks)


@pytest.fixture(scope="session")
def rbac_file(gw_dir: Path) -> Path:
    path = gw_dir / "rbac.yaml"
    with path.open("w") as fh:
        YAML(typ="safe", pure=True).dump(RBAC, fh)
    return path


@pytest.fixture(scope="session")
def upstream(gw_dir: Path) -> Iterator[Upstream]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, str(HERE / "fake_upstream.py"), "--port", str(port)]
    with running("fake-upstream", argv, gw_dir / "fake-upstream.log", ready_url=f"{url}/health", cwd=REPO) as proc:
        yield Upstream(url, proc)


def gateway_env(keys: Keys, rbac_file: Path, upstream_url: str, audit_log: Path, **extra: str) -> dict[str, str]:
    env = {
        "GATEWAY_UPSTREAM_URL": upstream_url,
        "GATEWAY_JWT_JWKS": str(keys.jwks),
        "GATEWAY_JWT_ISSUER": ISSUER,
        "GATEWAY_JWT_AUDIENCE": AUDIENCE,
        "GATEWAY_JWT_LEEWAY_SECONDS": "5",
        "GATEWAY_JWKS_MIN_REFRESH_SECONDS": "0",
        "GATEWAY_RBAC_FILE": str(rbac_file),
        "GATEWAY_AUDIT_LOG": str(audit_log),
        "GATEWAY_AUDIT_HASH_KEY": HASH_KEY,
        "GATEWAY_UPSTREAM_READ_TIMEOUT_SECONDS": "1.5",
        "GATEWAY_READY_PROBE_INTERVAL": "0.3",
        "GATEWAY_READY_MAX_AGE_SECONDS": "1.5",
        "GATEWAY_READY_PROBE_TIMEOUT": "1",
        "GATEWAY_READY_PROBE_MODEL": "ok",
        "GATEWAY_MAX_BODY_BYTES": "20000",
        "GATEWAY_MAX_MESSAGES": "8",
        "GATEWAY_MAX_PROMPT_CHARS": "2000",
        "GATEWAY_MAX_N": "2",
        "GATEWAY_MAX_TOKENS": "512",
        "GATEWAY_RELEASE": RELEASE,
    }
    env.update(extra)
    return env


def start_gateway(
    name: str, env: dict[str, str], log_dir: Path, keys: Keys, workers: int = 1
) -> tuple[ManagedProcess, str]:
    port, internal = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "app.gateway", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    argv += ["--internal-port", str(internal)]
    _INTERNAL_URLS[url] = f"http://127.0.0.1:{internal}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    proc = ManagedProcess(name, argv, log_dir / f"{name}.log", env={**clean, **env}, cwd=REPO).start()
    try:
        proc.wait_http(f"{url}/healthz", timeout=30)
    except Exception:
        proc.stop()
        raise
    return proc, url


@pytest.fixture(scope="session")
def gateway(gw_dir: Path, keys: Keys, rbac_file: Path, upstream: Upstream) -> Iterator[Gateway]:
    audit = gw_dir / "audit.log"
    env = gateway_env(keys, rbac_file, upstream.url, audit)
    proc, url = start_gateway("gateway", env, gw_dir, keys)
    try:
        yield Gateway(url, proc, audit, keys, env)
    finally:
        proc.stop()


@pytest.fixture
def client(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as c:
        yield c


def chat_body(model: str = "ok", content: str = "hello", **kw: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 8, **kw}


def assert_openai_error(resp: httpx.Response, status: int, *, param: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert err["message"]
    if param is not None:
        assert err["param"] == param, err
    return err  # type: ignore[no-any-return]
