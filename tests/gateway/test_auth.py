"""Authentication: every bad token is a 401 with an OpenAI-shaped body, never a 500."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from app.gateway.tokens import mint_token, write_dev_keys

from .conftest import (
    AUDIENCE,
    ISSUER,
    Gateway,
    Keys,
    Upstream,
    assert_openai_error,
    chat_body,
    gateway_env,
    start_gateway,
)


def _b64(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _claims(**over: object) -> dict[str, object]:
    now = int(time.time())
    c: dict[str, object] = {
        "sub": "mallory",
        "roles": ["admin"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": now + 600,
        "nbf": now - 5,
    }
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def _es(gateway: Gateway, typ: str | None = None, **over: object) -> str:
    k = gateway.keys.es
    headers = {"kid": k.kid} if typ is None else {"kid": k.kid, "typ": typ}
    return jwt.encode(_claims(**over), k.private_key.read_bytes(), algorithm="ES256", headers=headers)


def _public_pem(gateway: Gateway) -> bytes:
    key = serialization.load_pem_private_key(gateway.keys.rs.private_key.read_bytes(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _hs256_with_public_key(gateway: Gateway) -> str:
    # Algorithm confusion: HMAC "signed" with the RSA public key the server knows. PyJWT refuses
    # to do this itself, so sign by hand.
    import hashlib
    import hmac

    head = _b64({"alg": "HS256", "typ": "JWT", "kid": gateway.keys.rs.kid})
    body = _b64(_claims())
    sig = hmac.new(_public_pem(gateway), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


def _alg_none(gateway: Gateway) -> str:
    return f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': gateway.keys.es.kid})}.{_b64(_claims())}."


def _unknown_kid(tmp: Path) -> str:
    other = write_dev_keys(tmp / "other", kid="nobody-knows-me")
    return mint_token(
        other.private_key, kid=other.kid, alg="ES256", sub="x", roles=["admin"], issuer=ISSUER, audience=AUDIENCE
    )


BAD_TOKENS = {
    "alg_none": lambda g, t: _alg_none(g),
    "hs256_confusion": lambda g, t: _hs256_with_public_key(g),
    "unknown_kid": lambda g, t: _unknown_kid(t),
    "expired": lambda g, t: _es(g, exp=int(time.time()) - 120),
    "not_yet_valid": lambda g, t: _es(g, nbf=int(time.time()) + 600),
    "wrong_audience": lambda g, t: _es(g, aud="someone-else"),
    "wrong_issuer": lambda g, t: _es(g, iss="https://evil.example"),
    "missing_exp": lambda g, t: _es(g, exp=None),
    "missing_aud": lambda g, t: _es(g, aud=None),
    "missing_iss": lambda g, t: _es(g, iss=None),
    "bad_signature": lambda g, t: _es(g)[:-6] + ("AAAAAA" if not _es(g).endswith("AAAAAA") else "BBBBBB"),
    "malformed": lambda g, t: "not.a.jwt",
    "garbage_segments": lambda g, t: "e30.e30.e30x!",
    "wrong_key_type": lambda g, t: jwt.encode(
        _claims(), g.keys.rs.private_key.read_bytes(), algorithm="RS256", headers={"kid": g.keys.es.kid}
    ),
    "oversized": lambda g, t: _es(g, pad="x" * 10000),
    # A signed token of another kind (an OIDC logout token, a refresh token) is not an access token.
    "typ_logout": lambda g, t: _es(g, typ="logout+jwt"),
    "typ_refresh": lambda g, t: _es(g, typ="refresh+jwt"),
}


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", "application/at+jwt"])
def test_access_token_types_accepted(typ: str, gateway: Gateway, client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", json=chat_body(), headers={"authorization": f"Bearer {_es(gateway, typ)}"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_tokens_are_401(case: str, gateway: Gateway, client: httpx.Client, tmp_path: Path) -> None:
    token = BAD_TOKENS[case](gateway, tmp_path)
    r = client.post("/v1/chat/completions", json=chat_body(), headers={"authorization": f"Bearer {token}"})
    err = assert_openai_error(r, 401)
    assert err["type"] == "authentication_error"


@pytest.mark.parametrize("header", [None, "Basic abc", "Bearer", "Token abc.def.ghi"])
def test_missing_or_wrong_scheme(header: str | None, client: httpx.Client) -> None:
    headers = {"authorization": header} if header is not None else {}
    assert_openai_error(client.get("/v1/models", headers=headers), 401)


def test_rs256_and_es256_accepted(gateway: Gateway, client: httpx.Client) -> None:
    for rs in (False, True):
        r = client.post("/v1/chat/completions", json=chat_body(), headers=gateway.auth(rs=rs))
        assert r.status_code == 200, r.text


def test_leeway_accepts_just_expired(gateway: Gateway, client: httpx.Client) -> None:
    # The test gateway runs with 5 s leeway.
    token = _es(gateway, exp=int(time.time()) - 2)
    r = client.get("/v1/models", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text


def test_no_known_role_is_403(gateway: Gateway, client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", json=chat_body(), headers=gateway.auth(roles=("nobody",)))
    assert_openai_error(r, 403)


def test_key_rotation_picks_up_new_kid(keys: Keys, rbac_file: Path, upstream: Upstream, tmp_path: Path) -> None:
    # Its own gateway and JWKS file: rewriting the session's JWKS would race other tests.
    jwks_file = tmp_path / "jwks.json"
    jwks = json.loads(keys.jwks.read_text())
    jwks_file.write_text(json.dumps(jwks))
    env = gateway_env(keys, rbac_file, upstream.url, tmp_path / "audit.log", GATEWAY_JWT_JWKS=str(jwks_file))
    proc, url = start_gateway("gateway-rotation", env, tmp_path, keys)
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            new = write_dev_keys(tmp_path / "rotated", kid="es-rotated")
            token = mint_token(
                new.private_key, kid=new.kid, alg="ES256", sub="bob", roles=["user"], issuer=ISSUER, audience=AUDIENCE
            )
            assert_openai_error(client.get("/v1/models", headers={"authorization": f"Bearer {token}"}), 401)
            jwks_file.write_text(json.dumps({"keys": jwks["keys"] + json.loads(new.jwks.read_text())["keys"]}))
            r = client.get("/v1/models", headers={"authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
    finally:
        proc.stop()


def test_auth_failures_are_counted(gateway: Gateway, client: httpx.Client) -> None:
    client.get("/v1/models", headers={"authorization": "Bearer not.a.jwt"})
    text = gateway.metrics()
    assert 'gateway_auth_failures_total{reason="malformed"}' in text
