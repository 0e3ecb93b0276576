"""Rego policies: unit tests pass in regorus, every policy has tests, the API evaluates them."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.checks import policy

MANIFEST_POLICIES = ["policies/manifests", "policies/lib"]


def test_rego_unit_tests_pass(repo_root: Path) -> None:
    outcomes = policy.run_tests(repo_root / "policies")
    failed = [f"{o.name}: {o.detail}" for o in outcomes if not o.passed]
    assert not failed, failed
    manifests = [o for o in outcomes if "manifests" in str(o.file)]
    assert len(manifests) >= 40


def test_every_policy_has_tests(repo_root: Path) -> None:
    assert policy.missing_tests(repo_root / "policies") == []


def test_policy_without_test_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.rego").write_text('package main\n\ndeny contains "x" if false\n')
    (tmp_path / "b.rego").write_text("package main\n")
    (tmp_path / "b_test.rego").write_text("package main\n# no tests here\n")
    problems = policy.missing_tests(tmp_path)
    assert problems == [
        f"policy {tmp_path / 'a.rego'} has no test file a_test.rego",
        f"policy {tmp_path / 'b.rego'}: b_test.rego defines no test_* rules",
    ]


def test_failing_rego_test_is_reported(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text('package main\n\ndeny contains "always" if true\n')
    (tmp_path / "p_test.rego").write_text(
        "package main\n\ntest_no_denials if count(deny) == 0\n\ntest_one if count(deny) == 1\n"
    )
    outcomes = {o.rule: o.passed for o in policy.run_tests(tmp_path)}
    assert outcomes == {"test_no_denials": False, "test_one": True}


def test_evaluate_api_with_params_from_data(repo_root: Path) -> None:
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "llm", "labels": {}},
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "gateway", "image": "registry.example.com/llm/gateway:latest"}]}
            }
        },
    }
    params = policy.load_params(repo_root / "policies/params.yaml", "prod")
    assert params["require_digests"] is True and params["env"] == "prod"
    msgs = policy.evaluate(
        [repo_root / p for p in MANIFEST_POLICIES], {"kind": "List", "items": [deployment]}, {"params": params}
    )
    assert (
        "container <gateway> in Deployment <llm> uses the latest tag (registry.example.com/llm/gateway:latest); pin a version or digest"
        in msgs
    )
    assert any("not pinned by digest" in m and "prod requires digests" in m for m in msgs)
    assert any("has no resources.limits.cpu" in m for m in msgs)
    engine = policy.compile_engine([repo_root / p for p in MANIFEST_POLICIES], {"params": params})
    by_rule = policy.evaluate_by_rule(
        engine,
        {"kind": "List", "items": [deployment]},
        policy.violation_rules([repo_root / p for p in MANIFEST_POLICIES]),
    )
    assert by_rule["images"] and by_rule["resources"] and by_rule["probes"] and not by_rule["argocd"]


def test_policies_are_rego_v1_package_main(repo_root: Path) -> None:
    for f in (repo_root / "policies/manifests").glob("*.rego"):
        text = f.read_text()
        assert "\npackage main\n" in f"\n{text}" or text.startswith("package main"), f
        if not f.name.endswith("_test.rego"):
            assert "deny contains msg if" in text and "_violations contains msg if {" in text, f


def test_params_cover_every_env(repo_root: Path) -> None:
    doc = yaml.safe_load((repo_root / "policies/params.yaml").read_text())
    envs = {p.name for p in (repo_root / "environments").iterdir() if (p / "values.yaml").is_file()}
    assert envs | {"argocd"} <= set(doc["environments"])
