"""Role-based access: roles → allowed models, a max_tokens cap and a rate-limit tier.

The file shape is shared with the Helm chart (it renders it into a ConfigMap):

    tiers: {NAME: {requests_per_minute: N, tokens_per_minute: N}}
    roles: {NAME: {models: [GLOB, ...], max_tokens: N, tier: NAME, priority: BOOL}}

Several roles combine as: union of models, max of max_tokens, the tier with the highest
limits (compared by requests_per_minute, then tokens_per_minute), and `priority` if any role
grants it. `priority` (default false) lets a role set vLLM's `priority` request field (its
scheduling order under `--scheduling-policy priority`); other roles get a 403 naming the field.
"""

from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

PosInt = Annotated[int, Field(gt=0)]


class RbacError(ValueError):
    """The RBAC file is unreadable or invalid; the message names the key."""


class Tier(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    requests_per_minute: PosInt
    tokens_per_minute: PosInt


class Role(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    models: list[Annotated[str, Field(min_length=1)]]
    max_tokens: PosInt
    tier: str
    priority: bool = False


class RbacConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tiers: dict[str, Tier] = Field(min_length=1)
    roles: dict[str, Role] = Field(min_length=1)

    @model_validator(mode="after")
    def _tiers_exist(self) -> RbacConfig:
        for name, role in self.roles.items():
            if role.tier not in self.tiers:
                raise ValueError(
                    f"roles.{name}.tier: unknown tier {role.tier!r} (known: {', '.join(sorted(self.tiers))})"
                )
        return self


@dataclass(frozen=True)
class Policy:
    """The effective permissions of one set of roles (computed once per distinct set)."""

    roles: tuple[str, ...]
    patterns: tuple[str, ...]
    max_tokens: int
    tier_name: str
    requests_per_minute: int
    tokens_per_minute: int
    priority: bool = False
    _allowed: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def allows(self, model: str) -> bool:
        hit = self._allowed.get(model)
        if hit is None:
            hit = any(p == "*" or p == model or fnmatch.fnmatchcase(model, p) for p in self.patterns)
            if len(self._allowed) < 4096:  # bounded: model names come from clients
                self._allowed[model] = hit
        return hit


def _format(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc and not msg.startswith(loc) else msg)
    return "; ".join(parts)


def parse_rbac(data: Any) -> RbacConfig:
    try:
        return RbacConfig.model_validate(data)
    except ValidationError as exc:
        raise RbacError(_format(exc)) from None


def load_rbac(path: Path) -> RbacConfig:
    try:
        data = YAML(typ="safe").load(path.read_text())
    except (OSError, YAMLError) as exc:
        raise RbacError(f"cannot read {path}: {exc}") from None
    return parse_rbac(data)


class Rbac:
    """Resolves a token's roles to a Policy, cached per distinct role set."""

    def __init__(self, config: RbacConfig) -> None:
        self.config = config
        self._resolve = functools.lru_cache(maxsize=1024)(self._compute)

    def policy(self, roles: tuple[str, ...]) -> Policy | None:
        """None when no role in the token is known (→ 403)."""
        return self._resolve(roles)

    def _compute(self, roles: tuple[str, ...]) -> Policy | None:
        known = [r for r in roles if r in self.config.roles]
        if not known:
            return None
        defs = [self.config.roles[r] for r in known]
        patterns = tuple(dict.fromkeys(p for d in defs for p in d.models))
        tier_name = max(
            (d.tier for d in defs),
            key=lambda t: (self.config.tiers[t].requests_per_minute, self.config.tiers[t].tokens_per_minute),
        )
        tier = self.config.tiers[tier_name]
        return Policy(
            roles=tuple(known),
            patterns=patterns,
            max_tokens=max(d.max_tokens for d in defs),
            tier_name=tier_name,
            requests_per_minute=tier.requests_per_minute,
            tokens_per_minute=tier.tokens_per_minute,
            priority=any(d.priority for d in defs),
        )
