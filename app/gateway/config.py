"""Gateway settings: environment variables with the prefix GATEWAY_, validated once at start-up."""

from __future__ import annotations

import functools
import ipaddress
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "GATEWAY_"

PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]


class ConfigError(RuntimeError):
    """Configuration is missing or invalid; the message names the setting(s)."""


def _is_loopback(host: str | None) -> bool:
    if host in (None, ""):
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Everything the gateway reads from the environment; required secrets have no defaults."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # The release id this process runs (the chart renders it from the env's release pins,
    # `release.id`): the `release` label of the request metrics the rollback alert is computed from.
    release: Annotated[str, Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,127}$")] = "unknown"

    # Upstream (vLLM or the simulator).
    upstream_url: str
    # The HTTP client of the hop: `h1` (httptools-framed pool, the default: it meets the overhead
    # targets of `make bench-gateway`) or `aiohttp` (the library client). Same conformance suite.
    upstream_client: Literal["h1", "aiohttp"] = "h1"
    upstream_connect_timeout_seconds: PositiveFloat = 2.0
    # Per read: the whole reply for non-streaming requests, the gap between chunks for streams.
    upstream_read_timeout_seconds: PositiveFloat = 120.0
    upstream_max_connections: PositiveInt = 512
    # Longest wait for a free pooled connection when all are busy → 503.
    upstream_pool_timeout_seconds: PositiveFloat = 5.0
    # Idle keep-alive connections are dropped after this (below the upstream's own 5 s).
    upstream_keepalive_seconds: PositiveFloat = 4.0
    # Larger upstream replies (unary body, or a whole stream) → 502.
    upstream_max_response_bytes: PositiveInt = 32 * 1024 * 1024

    # Authentication.
    jwt_jwks: str | None = None
    jwt_issuer: str
    jwt_audience: str
    jwt_roles_claim: str = "roles"
    jwt_leeway_seconds: Annotated[int, Field(ge=0, le=300)] = 30
    jwt_allow_hs256: bool = False
    jwt_hs256_secret: SecretStr | None = None
    jwt_max_token_bytes: PositiveInt = 8192
    jwks_cache_seconds: PositiveFloat = 300.0
    # Unknown kids trigger a refetch at most this often, so garbage tokens cannot hammer the IdP.
    jwks_min_refresh_seconds: Annotated[float, Field(ge=0)] = 10.0
    # One JWKS fetch (URL): requests waiting for keys wait at most this long.
    jwks_fetch_timeout_seconds: Annotated[float, Field(gt=0, le=30)] = 3.0
    token_cache_size: PositiveInt = 10000

    # Authorization and limits.
    rbac_file: Path
    redis_url: str | None = None
    redis_timeout_seconds: PositiveFloat = 0.25
    # After a Redis error, use the in-process limiter for this long before trying Redis again.
    redis_retry_after_seconds: PositiveFloat = 5.0

    # Audit.
    audit_log: str = "-"
    audit_hash_key: SecretStr
    audit_include_text: bool = False

    # Input caps.
    max_body_bytes: PositiveInt = 1_000_000
    max_messages: PositiveInt = 256
    max_prompt_chars: PositiveInt = 200_000
    max_tokens: PositiveInt = 8192
    max_n: PositiveInt = 4
    # JSON nesting deeper than this → 400 (orjson cannot re-encode beyond 254 levels).
    max_json_depth: Annotated[int, Field(ge=4, le=200)] = 64
    # Chat-template tokens assumed per request when a max_tokens default must fit the context.
    prompt_overhead_tokens: Annotated[int, Field(ge=0)] = 64

    # Client connections (app/gateway/serving.py), per worker.
    # Request line + headers larger than this → 431 (room for a JWT of JWT_MAX_TOKEN_BYTES and more).
    max_header_bytes: Annotated[int, Field(ge=4096, le=1_048_576)] = 32 * 1024
    # The request line and headers must arrive within this (a new connection's first request too) → 408.
    header_read_timeout_seconds: PositiveFloat = 10.0
    # The whole body must arrive within this once the headers are in → 408.
    body_read_timeout_seconds: PositiveFloat = 30.0
    # Open client connections: more are closed at accept; a request on the last one gets 503
    # (uvicorn's limit_concurrency).
    max_connections: Annotated[int, Field(ge=2)] = 512
    # An idle keep-alive connection is closed after this (uvicorn's timeout_keep_alive).
    keepalive_timeout_seconds: PositiveInt = 5

    # Readiness.
    ready_probe_interval: PositiveFloat = 5.0
    # After SIGTERM, seconds in-flight requests and streams may take to finish (the chart sets the
    # longest stream it lets a pod shutdown finish, scheduling.maxStreamSeconds).
    shutdown_grace_seconds: PositiveInt = 10
    ready_probe_timeout: PositiveFloat = 10.0
    # Ready only if the last successful 1-token generation is younger than this.
    ready_max_age_seconds: PositiveFloat = 30.0
    ready_probe_model: str | None = None

    @field_validator("upstream_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        u = urlparse(v)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise ValueError("must be an http(s) URL, e.g. http://127.0.0.1:8000")
        return v.rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if urlparse(v).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return v

    @field_validator("audit_hash_key")
    @classmethod
    def _key_len(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (it keys the HMAC of subjects)")
        return v

    @field_validator("rbac_file")
    @classmethod
    def _file_exists(cls, v: Path) -> Path:
        if not v.is_file():
            raise ValueError(f"file not found: {v}")
        return v

    @model_validator(mode="after")
    def _jwks_or_hs256(self) -> Settings:
        if self.jwt_jwks:
            u = urlparse(self.jwt_jwks)
            if u.scheme in ("http", "https"):
                # Plain http only for loopback (tests); keys must not travel unauthenticated.
                if u.scheme == "http" and not _is_loopback(u.hostname):
                    raise ValueError("GATEWAY_JWT_JWKS: must be an https URL (http only on loopback)")
            elif not Path(self.jwt_jwks).is_file():
                raise ValueError(f"GATEWAY_JWT_JWKS: file not found: {self.jwt_jwks}")
        elif not self.jwt_allow_hs256:
            raise ValueError("GATEWAY_JWT_JWKS: required (path to a JWKS file or an https URL)")
        if self.jwt_allow_hs256:
            secret = self.jwt_hs256_secret.get_secret_value() if self.jwt_hs256_secret else ""
            if len(secret) < 32:
                raise ValueError("GATEWAY_JWT_HS256_SECRET: required with JWT_ALLOW_HS256, at least 32 characters")
        return self

    @property
    def jwks_is_url(self) -> bool:
        return bool(self.jwt_jwks) and urlparse(self.jwt_jwks or "").scheme in ("http", "https")


def format_validation_error(exc: ValidationError) -> str:
    """One line naming each bad setting by its environment variable."""
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        msg = str(err.get("msg", "invalid"))
        msg = msg.removeprefix("Value error, ")
        if loc:
            name = ENV_PREFIX + loc[0].upper()
            parts.append(f"{name}: {msg}" if not msg.startswith(name) else msg)
        else:
            parts.append(msg)
    return "; ".join(parts)


def load_settings() -> Settings:
    """Settings from the environment; ConfigError with a one-line message when invalid."""
    try:
        return Settings()  # type: ignore[call-arg,unused-ignore]  # required fields come from the environment
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests clear it with get_settings.cache_clear())."""
    return load_settings()
