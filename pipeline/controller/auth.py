"""The webhook's Authorization header: Bearer token or HTTP Basic, compared in constant time."""

from __future__ import annotations

import base64
import hmac

from pipeline.controller.config import ControllerConfig


def authorized(cfg: ControllerConfig, header: str | None) -> bool:
    if not header:
        return False
    scheme, _, cred = header.partition(" ")
    if scheme.lower() == "bearer" and cfg.bearer_token:
        return hmac.compare_digest(cred.strip().encode(), cfg.bearer_token.encode())
    if scheme.lower() == "basic" and cfg.basic_user and cfg.basic_password:
        try:
            user, _, pw = base64.b64decode(cred.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        ok_user = hmac.compare_digest(user.encode(), cfg.basic_user.encode())
        ok_pw = hmac.compare_digest(pw.encode(), cfg.basic_password.encode())
        return ok_user and ok_pw
    return False
