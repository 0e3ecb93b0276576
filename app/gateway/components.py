"""The gateway's components, built once from the settings (and validated: ConfigError names the setting)."""

from __future__ import annotations

from dataclasses import dataclass

from app.gateway.audit import AuditLog
from app.gateway.auth import Authenticator, JwksStore
from app.gateway.config import ConfigError, Settings
from app.gateway.ratelimit import RateLimiter
from app.gateway.rbac import Rbac, RbacError, load_rbac


@dataclass
class Components:
    """Everything built once from the settings."""

    settings: Settings
    rbac: Rbac
    auth: Authenticator
    audit: AuditLog
    limiter: RateLimiter


def build_components(settings: Settings) -> Components:
    """Validate the files the settings point at; ConfigError naming the setting on failure."""
    try:
        rbac = Rbac(load_rbac(settings.rbac_file))
    except RbacError as exc:
        raise ConfigError(f"GATEWAY_RBAC_FILE: {settings.rbac_file}: {exc}") from None
    jwks = None
    if settings.jwt_jwks:
        jwks = JwksStore(
            settings.jwt_jwks,
            is_url=settings.jwks_is_url,
            cache_seconds=settings.jwks_cache_seconds,
            min_refresh_seconds=settings.jwks_min_refresh_seconds,
            fetch_timeout_seconds=settings.jwks_fetch_timeout_seconds,
        )
        if not settings.jwks_is_url:
            try:
                jwks.load_file_now()
            except (OSError, ValueError) as exc:
                raise ConfigError(f"GATEWAY_JWT_JWKS: not a valid JWKS file: {exc}") from None
            if not jwks.keys:
                raise ConfigError("GATEWAY_JWT_JWKS: the JWKS holds no usable RS256/ES256 signing key")
    try:
        audit = AuditLog(settings.audit_log)
    except OSError as exc:
        raise ConfigError(f"GATEWAY_AUDIT_LOG: cannot open {settings.audit_log}: {exc}") from None
    limiter = RateLimiter(
        settings.redis_url, timeout=settings.redis_timeout_seconds, retry_after=settings.redis_retry_after_seconds
    )
    return Components(settings, rbac, Authenticator(settings, jwks), audit, limiter)
