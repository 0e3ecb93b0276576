"""Configuration errors, the RBAC file, and the token CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from ruamel.yaml import YAML

from app.gateway.app import build_components
from app.gateway.config import ConfigError, load_settings
from app.gateway.rbac import Rbac, RbacError, load_rbac, parse_rbac
from app.gateway.tokens import mint_token, write_dev_keys

from .conftest import REPO, Keys, gateway_env


def _config_error(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    for k in [k for k in os.environ if k.startswith("GATEWAY_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as exc:
        build_components(load_settings())
    return str(exc.value)


@pytest.mark.parametrize(
    ("drop", "override", "named"),
    [
        ("GATEWAY_UPSTREAM_URL", {}, "GATEWAY_UPSTREAM_URL"),
        ("GATEWAY_JWT_ISSUER", {}, "GATEWAY_JWT_ISSUER"),
        ("GATEWAY_AUDIT_HASH_KEY", {}, "GATEWAY_AUDIT_HASH_KEY"),
        ("GATEWAY_JWT_JWKS", {}, "GATEWAY_JWT_JWKS"),
        (None, {"GATEWAY_AUDIT_HASH_KEY": "short"}, "GATEWAY_AUDIT_HASH_KEY"),
        (None, {"GATEWAY_UPSTREAM_URL": "ftp://x"}, "GATEWAY_UPSTREAM_URL"),
        (None, {"GATEWAY_JWT_JWKS": "/nonexistent/jwks.json"}, "GATEWAY_JWT_JWKS"),
        (None, {"GATEWAY_JWT_JWKS": "http://idp.example.com/jwks"}, "GATEWAY_JWT_JWKS"),
        (None, {"GATEWAY_JWT_ALLOW_HS256": "true"}, "GATEWAY_JWT_HS256_SECRET"),
        (None, {"GATEWAY_MAX_N": "zero"}, "GATEWAY_MAX_N"),
        (None, {"GATEWAY_REDIS_URL": "http://x"}, "GATEWAY_REDIS_URL"),
        (None, {"GATEWAY_RELEASE": "0.1.0 rm -rf"}, "GATEWAY_RELEASE"),
        (None, {"GATEWAY_RBAC_FILE": "/nonexistent.yaml"}, "GATEWAY_RBAC_FILE"),
        (None, {"GATEWAY_RBAC_FILE": "BAD_RBAC"}, "roles.user.tier"),
        (None, {"GATEWAY_JWT_JWKS": "BAD_JWKS"}, "GATEWAY_JWT_JWKS"),
    ],
)
def test_bad_config_names_the_setting(
    drop: str | None,
    override: dict[str, str],
    named: str,
    keys: Keys,
    rbac_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = gateway_env(keys, rbac_file, "http://127.0.0.1:9", tmp_path / "audit.log")
    if drop:
        del env[drop]
    if override.get("GATEWAY_RBAC_FILE") == "BAD_RBAC":
        bad = tmp_path / "rbac.yaml"
        bad.write_text(
            "tiers: {free: {requests_per_minute: 1, tokens_per_minute: 1}}\n"
            "roles: {user: {models: [a], max_tokens: 1, tier: gold}}\n"
        )
        override = {"GATEWAY_RBAC_FILE": str(bad)}
    if override.get("GATEWAY_JWT_JWKS") == "BAD_JWKS":
        bad = tmp_path / "jwks.json"
        bad.write_text('{"keys": []}')
        override = {"GATEWAY_JWT_JWKS": str(bad)}
    env.update(override)
    msg = _config_error(env, monkeypatch)
    assert named in msg and "\n" not in msg


def test_bad_config_process_exits_2_without_traceback(keys: Keys, rbac_file: Path, tmp_path: Path) -> None:
    env = gateway_env(keys, rbac_file, "http://127.0.0.1:9", tmp_path / "audit.log")
    del env["GATEWAY_JWT_AUDIENCE"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    res = subprocess.run(
        [sys.executable, "-m", "app.gateway", "--port", "1"],
        env={**clean, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert res.stderr.strip() == "gateway: configuration error: GATEWAY_JWT_AUDIENCE: Field required"


def test_rbac_example_and_combination(repo_root: Path) -> None:
    cfg = load_rbac(repo_root / "app/gateway/rbac.example.yaml")
    assert set(cfg.roles) == {"user", "admin"}
    data = YAML(typ="safe").load((repo_root / "app/gateway/rbac.example.yaml").read_text())
    data["tiers"]["gold"] = {"requests_per_minute": 1000, "tokens_per_minute": 10}
    data["roles"]["vip"] = {"models": ["mistral-*"], "max_tokens": 2048, "tier": "gold"}
    rbac = Rbac(parse_rbac(data))
    pol = rbac.policy(("user", "vip", "unknown-role"))
    assert pol is not None
    assert pol.roles == ("user", "vip") and pol.max_tokens == 2048 and pol.tier_name == "gold"
    assert pol.allows("llama-3-8b-instruct") and pol.allows("mistral-7b") and not pol.allows("gpt-4")
    assert rbac.policy(("nobody",)) is None


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (
            {"tiers": {"t": {"requests_per_minute": 0, "tokens_per_minute": 1}}, "roles": {}},
            "tiers.t.requests_per_minute",
        ),
        (
            {
                "tiers": {"t": {"requests_per_minute": 1, "tokens_per_minute": 1}},
                "roles": {"r": {"models": [], "max_tokens": 1, "tier": "t", "x": 1}},
            },
            "roles.r.x",
        ),
        ({"roles": {}}, "tiers"),
    ],
)
def test_rbac_errors_name_the_key(data: dict[str, object], named: str) -> None:
    with pytest.raises(RbacError, match=named.replace(".", r"\.")):
        parse_rbac(data)


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_tokens_cli_roundtrip(alg: str, tmp_path: Path) -> None:
    py = [sys.executable, "-m", "app.gateway.tokens"]
    subprocess.run(
        [*py, "keygen", "--out", str(tmp_path), "--alg", alg, "--kid", "k1"], check=True, cwd=REPO, capture_output=True
    )
    assert (tmp_path / "private.pem").stat().st_mode & 0o077 == 0
    out = subprocess.run(
        [
            *py,
            "mint",
            "--key",
            str(tmp_path / "private.pem"),
            "--kid",
            "k1",
            "--sub",
            "s",
            "--roles",
            "user,admin",
            "--issuer",
            "i",
            "--audience",
            "a",
            "--ttl",
            "60",
        ],
        check=True,
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout.strip()
    jwk = jwt.PyJWKSet.from_json((tmp_path / "jwks.json").read_text())["k1"]
    claims = jwt.decode(out, jwk.key, algorithms=[alg], audience="a", issuer="i")
    assert claims["roles"] == ["user", "admin"] and claims["sub"] == "s"
    assert jwt.get_unverified_header(out)["kid"] == "k1"


def test_mint_token_api(tmp_path: Path) -> None:
    keys = write_dev_keys(tmp_path, alg="ES256", kid="x")
    tok = mint_token(
        keys.private_key.read_bytes(),
        kid="x",
        alg="ES256",
        sub="s",
        roles=["r"],
        issuer="i",
        audience="a",
        extra={"tenant": "t"},
    )
    assert jwt.decode(tok, options={"verify_signature": False})["tenant"] == "t"
