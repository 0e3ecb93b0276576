"""policies/promotion_test.rego runs (every test_* rule true) and the data file drives the live policy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import regorus

from pipeline.gitops import promotion as pm
from pipeline.gitops.promotion_policy import evaluate_policy, load_policy_data
from pipeline.gitops.sync_windows import parse_duration, window_active

POLICIES = Path(__file__).resolve().parents[2] / "policies"
TESTS = re.findall(r"^(test_\w+) if", (POLICIES / "promotion_test.rego").read_text(), flags=re.M)


@pytest.mark.parametrize("rule", TESTS)
def test_rego_unit_test(rule: str) -> None:
    engine = regorus.Engine()
    engine.add_policy_from_file(str(POLICIES / "promotion.rego"))
    engine.add_policy_from_file(str(POLICIES / "promotion_test.rego"))
    assert engine.eval_rule(f"data.main.{rule}") is True


def test_policy_ignores_non_promotion_input() -> None:
    # Policies share package main with the manifest policies: a manifest must not trip these rules.
    assert evaluate_policy({"kind": "Deployment", "metadata": {"name": "x"}}, load_policy_data()) == []


def test_local_profile_only_relaxes_what_needs_a_cluster_or_time() -> None:
    prod, local = load_policy_data()["promotion"], load_policy_data("local")["promotion"]
    assert local["approvers_required"] == prod["approvers_required"]
    assert local["required_gates"] == prod["required_gates"]
    assert local["images_built_required"] == prod["images_built_required"]
    assert local["soak_seconds"]["prod"] == 0 and local["trivy_operator_required"]["prod"] is False
    assert json.loads((POLICIES / "promotion.data.json").read_text())["promotion"]["profile"] == "production"


def test_unknown_profile_is_an_error() -> None:
    with pytest.raises(pm.PromotionError, match="unknown policy profile"):
        load_policy_data("nope")


def test_cron_and_windows() -> None:
    import datetime as dt

    fri_19 = dt.datetime(2026, 11, 27, 19, 0, tzinfo=dt.UTC)  # a Friday
    weekend = {"kind": "deny", "schedule": "0 18 * * 5", "duration": "60h", "timeZone": "UTC"}
    assert window_active(weekend, fri_19)
    assert not window_active(weekend, fri_19 - dt.timedelta(hours=2))
    assert window_active(weekend, fri_19 + dt.timedelta(hours=58))
    assert not window_active(weekend, fri_19 + dt.timedelta(hours=60))
    assert parse_duration("1h30m") == dt.timedelta(minutes=90)
