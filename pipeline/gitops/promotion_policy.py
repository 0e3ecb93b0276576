"""The promotion policy (policies/promotion.rego): its data per profile, and its denials for one input."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pipeline.gitops.promotion import PromotionError
from pipeline.runtime.tools import REPO_ROOT

POLICY_DIR = REPO_ROOT / "policies"

PROMOTION_POLICY = POLICY_DIR / "promotion.rego"


def load_policy_data(profile: str = "production") -> dict[str, Any]:
    """data.promotion from promotion.data.json, overlaid by promotion.<profile>.json if not production."""
    data: dict[str, Any] = json.loads((POLICY_DIR / "promotion.data.json").read_text())
    if profile != "production":
        overlay_file = POLICY_DIR / f"promotion.{profile}.json"
        if not overlay_file.exists():
            raise PromotionError(f"unknown policy profile {profile!r}: {overlay_file.name} does not exist")
        _deep_merge(data, json.loads(overlay_file.read_text()))
    return data


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> None:
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v)
        else:
            base[k] = v


def evaluate_policy(policy_input: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    """Run policies/promotion.rego through pipeline.checks.policy and return every denial, sorted."""
    from pipeline.checks import policy

    try:
        return policy.evaluate(PROMOTION_POLICY, policy.as_json(policy_input), policy.as_json(data))
    except policy.PolicyError as exc:
        raise PromotionError(f"promotion policy: {exc}") from exc
