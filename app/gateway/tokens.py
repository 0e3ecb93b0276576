"""Dev keys and tokens for operators and tests.

    python -m app.gateway.tokens keygen --out DIR [--alg ES256|RS256] [--kid K]
    python -m app.gateway.tokens mint --key FILE --kid K --sub S --roles a,b --issuer I --audience A [--ttl S]

keygen writes DIR/private.pem (mode 0600) and DIR/jwks.json (public key only);
mint prints a signed JWT on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ALGS = ("ES256", "RS256")


@dataclass(frozen=True)
class DevKeys:
    private_key: Path
    jwks: Path
    kid: str
    alg: str

    def mint(
        self,
        *,
        sub: str,
        roles: Sequence[str],
        issuer: str,
        audience: str,
        ttl_seconds: int,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """A token signed with this key pair (`extra` overrides claims)."""
        return mint_token(
            self.private_key,
            kid=self.kid,
            alg=self.alg,
            sub=sub,
            roles=list(roles),
            issuer=issuer,
            audience=audience,
            ttl_seconds=ttl_seconds,
            extra=extra,
        )


def _public_jwk(private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, kid: str, alg: str) -> dict[str, Any]:
    if isinstance(private, ec.EllipticCurvePrivateKey):
        jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(private.public_key()))
    else:
        jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    return jwk


def generate_private_key(alg: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"alg must be one of {', '.join(ALGS)}, not {alg!r}")


def write_dev_keys(out_dir: Path, alg: str = "ES256", kid: str = "dev") -> DevKeys:
    """A fresh key pair: private.pem (0600) and jwks.json with the public key."""
    private = generate_private_key(alg)
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path = out_dir / "private.pem"
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    jwks_path = out_dir / "jwks.json"
    jwks_path.write_text(json.dumps({"keys": [_public_jwk(private, kid, alg)]}, indent=2) + "\n")
    return DevKeys(private_key=key_path, jwks=jwks_path, kid=kid, alg=alg)


def mint_token(
    private_key: Path | bytes,
    *,
    kid: str,
    alg: str,
    sub: str,
    roles: list[str],
    issuer: str,
    audience: str,
    ttl_seconds: int = 3600,
    extra: dict[str, Any] | None = None,
) -> str:
    """A signed JWT with sub, roles, iss, aud, iat, nbf, exp and a jti; `extra` overrides claims."""
    pem = private_key.read_bytes() if isinstance(private_key, Path) else private_key
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "roles": list(roles),
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    claims.update(extra or {})
    return jwt.encode(claims, pem, algorithm=alg, headers={"kid": kid})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.gateway.tokens", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    kg = sub.add_parser("keygen", help="write private.pem + jwks.json into --out")
    kg.add_argument("--out", type=Path, required=True)
    kg.add_argument("--alg", choices=ALGS, default="ES256")
    kg.add_argument("--kid", default="dev")
    mt = sub.add_parser("mint", help="print a signed token")
    mt.add_argument("--key", type=Path, required=True, help="private key PEM")
    mt.add_argument("--kid", required=True)
    mt.add_argument("--alg", choices=ALGS, default=None, help="default: from the key type")
    mt.add_argument("--sub", required=True)
    mt.add_argument("--roles", required=True, help="comma-separated")
    mt.add_argument("--issuer", required=True)
    mt.add_argument("--audience", required=True)
    mt.add_argument("--ttl", type=int, default=3600, help="seconds")
    args = parser.parse_args(argv)

    if args.cmd == "keygen":
        keys = write_dev_keys(args.out, alg=args.alg, kid=args.kid)
        print(f"private key: {keys.private_key}\njwks:        {keys.jwks}\nkid:         {keys.kid} ({keys.alg})")
        return 0
    try:
        pem = args.key.read_bytes()
        alg = args.alg
        if alg is None:
            key = serialization.load_pem_private_key(pem, password=None)
            alg = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
        roles = [r.strip() for r in args.roles.split(",") if r.strip()]
        token = mint_token(
            pem,
            kid=args.kid,
            alg=alg,
            sub=args.sub,
            roles=roles,
            issuer=args.issuer,
            audience=args.audience,
            ttl_seconds=args.ttl,
        )
    except (OSError, ValueError, TypeError) as exc:
        print(f"tokens: {exc}", file=sys.stderr)
        return 1
    print(token)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
