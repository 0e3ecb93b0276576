"""The ApplicationSet in a cluster: prod's chart version comes from its pinned commit; auto-sync an on-call turned off stays off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.checks import validate
from pipeline.gitops import argocd_pin as pm


def _appset(repo_root: Path) -> dict[str, Any]:
    return dict(yaml.safe_load((repo_root / pm.PIN_FILE).read_text()))


def test_prod_release_file_is_read_at_the_same_commit_as_its_values(repo_root: Path) -> None:
    gens = _appset(repo_root)["spec"]["generators"]
    prod = gens[0]["git"]
    assert prod["files"] == [{"path": "environments/prod/release.yaml"}]
    assert prod["revision"] == prod["values"]["prodRevision"]
    # No other generator reads prod's release.yaml (it would be read on the branch).
    for gen in gens[1:]:
        assert {"path": "environments/prod/release.yaml", "exclude": True} in gen["git"]["files"]


def test_generated_apps_take_chart_version_and_values_from_their_generator(repo_root: Path) -> None:
    apps = {a["metadata"]["name"]: a for a in validate.expand_applicationset(_appset(repo_root), repo_root)}
    assert sorted(apps) == ["llm-service-dev", "llm-service-prod", "llm-service-staging"]
    prod_sources = apps["llm-service-prod"]["spec"]["sources"]
    pin = _appset(repo_root)["spec"]["generators"][0]["git"]["revision"]
    assert [s["targetRevision"] for s in prod_sources if s.get("ref") == "values"] == [pin]
    assert [s["targetRevision"] for s in apps["llm-service-dev"]["spec"]["sources"] if s.get("ref")] == ["main"]


def test_auto_sync_turned_off_by_hand_is_not_re_enabled(repo_root: Path) -> None:
    rules = _appset(repo_root)["spec"]["ignoreApplicationDifferences"]
    assert any("/spec/syncPolicy" in r.get("jsonPointers", []) for r in rules)
