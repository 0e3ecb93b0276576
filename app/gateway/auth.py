"""JWT bearer authentication against a JWKS (RS256/ES256), HS256 only when enabled.

Verified tokens are cached by their exact text until they expire, so the signature is
checked once per token, not once per request. JWKS keys are cached; an unknown `kid`
triggers a refetch (rate-limited) so key rotation at the IdP needs no restart.

JWKS fetches never pile up: at most one runs at a time (concurrent requests share it),
every attempt after the first is rate-limited (`min_refresh_seconds`, also while no key
is loaded), the periodic re-read runs in the background while the cached keys keep
serving, and with no usable key at all requests fail at once with 503
("authentication unavailable") instead of each waiting for the IdP.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
from jwt import PyJWK

from app.gateway.config import Settings
from app.gateway.errors import GatewayError

log = logging.getLogger(__name__)
_ACCEPTED_TYP = frozenset({"jwt", "at+jwt", "application/at+jwt"})

ASYMMETRIC = frozenset({"RS256", "ES256"})
_NUMERIC_DATES = ("exp", "nbf", "iat")


class AuthError(GatewayError):
    """401 with an OpenAI-shaped body; `reason` labels the auth-failure metric."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(
            401,
            message,
            code="invalid_api_key",
            headers={"www-authenticate": 'Bearer error="invalid_token"'},
            kind=reason,
        )
        self.reason = reason


class AuthUnavailable(AuthError):
    """503: no signing key is available (the IdP is down or serves an empty JWKS).

    Not the token's fault, so not a 401: clients should retry, not re-authenticate."""

    def __init__(self, retry_after: float) -> None:
        GatewayError.__init__(
            self,
            503,
            "Authentication is temporarily unavailable: no signing keys could be loaded from the identity "
            "provider. Retry later.",
            code="auth_unavailable",
            headers={"retry-after": str(max(1, math.ceil(retry_after)))},
            kind="jwks_unavailable",
            type_="api_error",
        )
        self.reason = "jwks_unavailable"


@dataclass(frozen=True, slots=True)
class Principal:
    sub: str
    roles: tuple[str, ...]
    subject_hash: str
    expires_at: float


class JwksStore:
    """Public keys by kid, from a JWKS file or URL."""

    def __init__(
        self,
        source: str,
        *,
        is_url: bool,
        cache_seconds: float,
        min_refresh_seconds: float,
        fetch_timeout_seconds: float = 3.0,
    ) -> None:
        self.source = source
        self.is_url = is_url
        self.cache_seconds = cache_seconds
        self.min_refresh_seconds = min_refresh_seconds
        self.fetch_timeout_seconds = fetch_timeout_seconds
        self.keys: dict[str, PyJWK] = {}
        self.version = 0
        self.fetches = 0  # attempts started (tests and logs)
        self._loaded_at = float("-inf")
        self._attempted_at = float("-inf")
        self._inflight: asyncio.Future[None] | None = None

    @staticmethod
    def parse(raw: bytes) -> dict[str, PyJWK]:
        data = orjson.loads(raw)
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise ValueError('a JWKS must be an object with a "keys" list')
        keys: dict[str, PyJWK] = {}
        for jwk in data["keys"]:
            if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
                continue
            if jwk.get("use", "sig") != "sig" or jwk.get("kty") not in ("RSA", "EC"):
                continue
            try:
                # PyJWK binds the key to one algorithm (from "alg", or the kty default).
                key = PyJWK(jwk, algorithm=jwk.get("alg"))
            except jwt.PyJWTError as exc:
                log.warning("skipping JWKS key %s: %s", jwk.get("kid"), exc)
                continue
            if key.algorithm_name in ASYMMETRIC:
                keys[jwk["kid"]] = key
        return keys

    def load_file_now(self) -> None:
        """Synchronous first load of a file JWKS (start-up validation)."""
        self._attempted_at = time.monotonic()
        self._install(self.parse(Path(self.source).read_bytes()))

    async def _fetch(self) -> bytes:
        if not self.is_url:
            return await asyncio.to_thread(Path(self.source).read_bytes)
        async with httpx.AsyncClient(timeout=self.fetch_timeout_seconds) as client:
            r = await client.get(self.source)
            r.raise_for_status()
            return r.content

    def _install(self, keys: dict[str, PyJWK]) -> None:
        self._loaded_at = time.monotonic()
        if set(keys) != set(self.keys) or any(keys[k].key != self.keys[k].key for k in keys):
            self.version += 1
        self.keys = keys

    def retry_in(self) -> float:
        """Seconds until the next fetch may start (for Retry-After)."""
        return max(0.0, self._attempted_at + self.min_refresh_seconds - time.monotonic())

    def _start_refresh(self) -> asyncio.Future[None] | None:
        """The running fetch, or a new one if the rate limit allows; None = rate-limited.

        Every attempt counts, successful or not, and whether or not keys are loaded:
        an IdP that is down or serves an empty JWKS is asked at most once per
        `min_refresh_seconds`, however many (garbage) tokens arrive."""
        if self._inflight is not None:
            return self._inflight
        now = time.monotonic()
        if now - self._attempted_at < self.min_refresh_seconds:
            return None
        self._attempted_at = now
        self.fetches += 1
        task = self._inflight = asyncio.ensure_future(self._load())
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Future[None]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # _load handles its errors; never leave one unretrieved

    async def _load(self) -> None:
        try:
            keys = self.parse(await self._fetch())
        except Exception as exc:  # whatever the IdP sends or does: log it, never fail a request with it
            # Keep serving with the keys we have; an IdP blip must not lock everyone out.
            log.warning("JWKS refresh from %s failed: %s", self.source, exc)
            return
        finally:
            # Rate-limit from the end of the attempt: a slow IdP does not get asked back-to-back.
            self._attempted_at = time.monotonic()
        self._install(keys)
        log.info("JWKS loaded: %d key(s)", len(self.keys))

    async def refresh(self) -> None:
        """Fetch now unless rate-limited; joins a fetch already running."""
        task = self._start_refresh()
        if task is not None:
            # Shielded: a request that goes away must not cancel the fetch others wait for.
            await asyncio.shield(task)

    def refresh_soon(self) -> None:
        """Start a fetch in the background (rate-limited); the cached keys keep serving."""
        self._start_refresh()

    async def get(self, kid: str) -> PyJWK | None:
        if not self.keys:
            # Nothing to verify with: wait for a fetch only if one may run; else fail fast.
            await self.refresh()
            return self.keys.get(kid)
        if time.monotonic() - self._loaded_at > self.cache_seconds:
            self.refresh_soon()  # stale-while-revalidate: no request waits for the periodic re-read
        key = self.keys.get(kid)
        if key is None:
            await self.refresh()  # unknown kid: maybe rotated at the IdP (rate-limited)
            key = self.keys.get(kid)
        return key

    async def aclose(self) -> None:
        task = self._inflight
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _roles_from(claims: dict[str, Any], path: str) -> tuple[str, ...]:
    # The whole name first: IdPs namespace custom claims with URLs (`https://app.example.com/roles`),
    # which contain dots. Otherwise a dotted path reaches a nested claim (e.g. realm_access.roles).
    value: Any = claims.get(path)
    if value is None:
        value = claims
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        return tuple(r for r in value.replace(",", " ").split() if r)
    if isinstance(value, list):
        return tuple(r for r in value if isinstance(r, str) and r)
    return ()


class Authenticator:
    def __init__(self, settings: Settings, jwks: JwksStore | None) -> None:
        self.settings = settings
        self.jwks = jwks
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.leeway = settings.jwt_leeway_seconds
        self.max_bytes = settings.jwt_max_token_bytes
        self.roles_claim = settings.jwt_roles_claim
        self.hs_secret = settings.jwt_hs256_secret.get_secret_value().encode() if settings.jwt_hs256_secret else b""
        self.allowed_algs = ASYMMETRIC | ({"HS256"} if settings.jwt_allow_hs256 else set())
        self._hash_key = settings.audit_hash_key.get_secret_value().encode()
        self._cache: dict[str, Principal] = {}
        self._cache_size = settings.token_cache_size
        self._jwks_version = jwks.version if jwks else 0

    def subject_hash(self, sub: str) -> str:
        return hmac.new(self._hash_key, sub.encode(), hashlib.sha256).hexdigest()[:32]

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise AuthError("missing", "Missing bearer token in the Authorization header.")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("malformed", "The Authorization header must be 'Bearer <token>'.")
        if len(token) > self.max_bytes:
            raise AuthError("oversized", f"The token is larger than {self.max_bytes} bytes.")
        if self.jwks is not None and self.jwks.version != self._jwks_version:
            # Keys rotated: tokens verified with a removed key must be checked again.
            self._cache.clear()
            self._jwks_version = self.jwks.version
        cached = self._cache.get(token)
        if cached is not None:
            if time.time() < cached.expires_at + self.leeway:
                return cached
            del self._cache[token]
            raise AuthError("expired", "The token has expired.")
        principal = await self._verify(token)
        if len(self._cache) >= self._cache_size:
            self._evict()
        self._cache[token] = principal
        return principal

    def _evict(self) -> None:
        now = time.time()
        for tok in [t for t, p in self._cache.items() if p.expires_at + self.leeway <= now]:
            del self._cache[tok]
        if len(self._cache) >= self._cache_size:
            # Still full: drop the oldest half (dicts keep insertion order).
            for tok in list(self._cache)[: self._cache_size // 2]:
                del self._cache[tok]

    async def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except Exception:
            raise AuthError("malformed", "The token is not a well-formed JWT.") from None
        typ = header.get("typ")
        # RFC 8725 3.11 / RFC 9068: an access token says JWT or at+jwt when it says anything.
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYP):
            raise AuthError("type", f"Token type {typ!r} is not accepted.")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.allowed_algs:
            raise AuthError("algorithm", f"Token algorithm {alg!r} is not accepted.")
        key: Any
        if alg == "HS256":
            key = self.hs_secret
        else:
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid or self.jwks is None:
                raise AuthError("kid", "The token has no key id (kid).")
            jwk = await self.jwks.get(kid)
            if jwk is None:
                if not self.jwks.keys:
                    raise AuthUnavailable(self.jwks.retry_in())
                raise AuthError("kid", "The token's key id (kid) is unknown.")
            # The key decides the algorithm, never the token (algorithm confusion).
            if jwk.algorithm_name != alg:
                raise AuthError("algorithm", f"Token algorithm {alg} does not match its key.")
            key = jwk.key
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("expired", "The token has expired.") from None
        except jwt.ImmatureSignatureError as exc:
            if "(iat)" in str(exc):  # PyJWT's message for an iat in the future (beyond the leeway)
                raise AuthError("issued_in_future", "The token's issue time (iat) is in the future.") from None
            raise AuthError("not_yet_valid", "The token is not valid yet (nbf).") from None
        except jwt.InvalidAudienceError:
            raise AuthError("audience", "The token's audience is not accepted.") from None
        except jwt.InvalidIssuerError:
            raise AuthError("issuer", "The token's issuer is not accepted.") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError("claims", f"The token lacks the required claim {exc.claim!r}.") from None
        except jwt.InvalidSignatureError:
            raise AuthError("signature", "The token signature is invalid.") from None
        except (jwt.InvalidIssuedAtError, jwt.DecodeError) as exc:
            if "(exp)" in str(exc) or "(nbf)" in str(exc) or "(iat)" in str(exc):
                raise AuthError("claims", f"The token is invalid: {exc}") from None
            raise AuthError("malformed", "The token is invalid.") from None
        except Exception:
            # Any other decode problem (bad base64, bad JSON, bad key material) is the token's fault.
            raise AuthError("malformed", "The token is invalid.") from None
        for name in _NUMERIC_DATES:
            # RFC 7519 2: a NumericDate is a JSON number. PyJWT accepts numeric strings ("exp": "1700000000").
            value = claims.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise AuthError("claims", f"The token's {name!r} claim must be a JSON number (NumericDate).")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise AuthError("claims", "The token's 'sub' claim must be a non-empty string.")
        exp = claims["exp"]
        return Principal(
            sub=sub,
            roles=_roles_from(claims, self.roles_claim),
            subject_hash=self.subject_hash(sub),
            expires_at=float(exp),
        )
