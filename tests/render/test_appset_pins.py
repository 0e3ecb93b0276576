"""The ApplicationSet in a cluster: valid from a fresh GitOps repo's first commit (no generator reads a
commit that cannot exist), prod's chart version and values from one pinned commit once prod is
promoted, and auto-sync an on-call turned off stays off."""

from __future__ import annotations

import difflib
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.checks import policy, validate
from pipeline.gitops import argocd_pin as pm
from pipeline.gitops.repo import GitOpsError, GitOpsRepo

POLICIES = ["policies/manifests", "policies/lib"]
SHA_A, SHA_B = "a" * 40, "b" * 40


def _appset(root: Path) -> dict[str, Any]:
    return dict(yaml.safe_load((root / pm.PIN_FILE).read_text()))


def _argocd_violations(root: Path, docs: list[dict[str, Any]]) -> list[str]:
    params = policy.load_params(root / "policies/params.yaml", "argocd")
    engine = policy.compile_engine([root / p for p in POLICIES], {"params": params})
    by_rule = policy.evaluate_by_rule(
        engine, {"kind": "List", "items": docs}, policy.violation_rules([root / p for p in POLICIES])
    )
    return sorted(by_rule["argocd"])


def _revisions(appset: dict[str, Any]) -> list[str]:
    """Every commit-ish a git generator of the ApplicationSet reads at (its revision and its values)."""
    out = []
    for gen in appset["spec"]["generators"]:
        out.append(str(gen["git"].get("revision", "HEAD")))
        out += [str(v) for v in (gen["git"].get("values") or {}).values()]
    return out


@pytest.fixture
def gitops_tree(repo_root: Path, tmp_path: Path) -> GitOpsRepo:
    """A copy of environments/ as a fresh GitOps repository's first commit holds it."""
    shutil.copytree(repo_root / "environments", tmp_path / "environments")
    return GitOpsRepo("unused", tmp_path)


def test_the_applicationset_rendered_for_a_fresh_repo_has_no_placeholder_read(repo_root: Path) -> None:
    appset = _appset(repo_root)
    assert not [r for r in _revisions(appset) if re.fullmatch(r"0{40}", r)]
    # No generator for prod yet (nothing to pin); the branch generator leaves prod's file out.
    assert pm.pin_generator(appset, "prod") is None
    apps = {a["metadata"]["name"]: a for a in validate.expand_applicationset(appset, repo_root)}
    assert sorted(apps) == ["llm-service-dev", "llm-service-staging"]
    assert [s["targetRevision"] for s in apps["llm-service-dev"]["spec"]["sources"] if s.get("ref")] == ["main"]
    # ... and the argocd policy accepts that form, with the Applications it generates.
    assert _argocd_violations(repo_root, [appset, *apps.values()]) == []


def test_the_old_placeholder_form_is_refused_by_the_policy(repo_root: Path) -> None:
    appset = _appset(repo_root)
    zeros = "0" * 40
    placeholder = {
        "git": {
            "repoURL": appset["spec"]["generators"][0]["git"]["repoURL"],
            "revision": zeros,
            "files": [{"path": "environments/prod/release.yaml"}],
            "values": {"prodRevision": zeros},
        }
    }
    appset["spec"]["generators"].insert(0, placeholder)
    found = _argocd_violations(repo_root, [appset])
    assert found == [
        f"ApplicationSet <llm-service> generator 0 reads git at the placeholder commit {zeros}: that generator fails "
        "and Argo CD then generates no Application at all (argo-cd#19586); leave a pinned env's generator out until "
        "its first promotion adds it"
    ]


def test_first_prod_pin_appends_prod_generator_at_one_commit(repo_root: Path, gitops_tree: GitOpsRepo) -> None:
    path = gitops_tree.file(pm.PIN_FILE)
    before = path.read_text()
    assert pm.pinned_revision(gitops_tree, "prod") is None
    assert pm.set_pinned_revision(gitops_tree, "prod", SHA_A) == ""  # appended: there was no pin
    after = path.read_text()
    # Only lines inserted: every line of the fresh file is still there, in order.
    ops = difflib.SequenceMatcher(a=before.splitlines(), b=after.splitlines(), autojunk=False).get_opcodes()
    (inserted,) = [op for op in ops if op[0] != "equal"]
    assert inserted[0] == "insert"
    assert after.splitlines()[inserted[3] : inserted[4]] == [
        "    # prod, read at its pin (appended by its first promotion).",
        "    - git:",
        f"        repoURL: {_appset(repo_root)['spec']['generators'][0]['git']['repoURL']}",
        f'        revision: "{SHA_A}"',
        "        files:",
        "          - path: environments/prod/release.yaml",
        "        values:",
        f'          prodRevision: "{SHA_A}"',
    ]
    appset = _appset(gitops_tree.path)
    prod = pm.pin_generator(appset, "prod")
    assert prod["revision"] == prod["values"]["prodRevision"] == SHA_A
    assert prod["repoURL"] == appset["spec"]["generators"][0]["git"]["repoURL"]
    apps = {a["metadata"]["name"]: a for a in validate.expand_applicationset(appset, gitops_tree.path)}
    assert sorted(apps) == ["llm-service-dev", "llm-service-prod", "llm-service-staging"]
    assert [s["targetRevision"] for s in apps["llm-service-prod"]["spec"]["sources"] if s.get("ref")] == [SHA_A]
    assert _argocd_violations(repo_root, [appset, *apps.values()]) == []
    # The next promotion moves exactly the two pin lines.
    assert pm.set_pinned_revision(gitops_tree, "prod", SHA_B) == SHA_A
    changed = [(a, b) for a, b in zip(after.splitlines(), path.read_text().splitlines(), strict=True) if a != b]
    assert changed == [
        (f'        revision: "{SHA_A}"', f'        revision: "{SHA_B}"'),
        (f'          prodRevision: "{SHA_A}"', f'          prodRevision: "{SHA_B}"'),
    ]
    assert pm.set_pinned_revision(gitops_tree, "prod", SHA_B) is None


def test_pins_apart_are_refused(repo_root: Path, gitops_tree: GitOpsRepo) -> None:
    pm.set_pinned_revision(gitops_tree, "prod", SHA_A)
    appset = _appset(gitops_tree.path)
    pm.pin_generator(appset, "prod")["revision"] = SHA_B
    assert _argocd_violations(repo_root, [appset]) == [
        f"ApplicationSet <llm-service> pins prod's values at {SHA_A} but reads its chart version at {SHA_B}; "
        "both must be the same commit"
    ]


def test_appending_refuses_to_touch_other_lines(gitops_tree: GitOpsRepo) -> None:
    path = gitops_tree.file(pm.PIN_FILE)
    # A hand-formatted line ruamel would normalize: the append must not silently rewrite it.
    path.write_text(path.read_text().replace("branch: main", "branch:    main"))
    original = path.read_text()
    with pytest.raises(GitOpsError, match="adding the prod generator would change other lines"):
        pm.set_pinned_revision(gitops_tree, "prod", SHA_A)
    assert path.read_text() == original


def test_auto_sync_turned_off_by_hand_is_not_re_enabled(repo_root: Path) -> None:
    rules = _appset(repo_root)["spec"]["ignoreApplicationDifferences"]
    assert any("/spec/syncPolicy" in r.get("jsonPointers", []) for r in rules)


def test_a_files_pattern_star_crosses_directories_as_argo_cds_ls_files_does(tmp_path: Path) -> None:
    """`git ls-files -- environments/*/release.yaml` (Argo CD's default file globbing) also lists
    environments/dev/canary/release.yaml: the render generates that Application too."""
    from pipeline.checks import validate

    (tmp_path / "environments/dev/canary").mkdir(parents=True)
    (tmp_path / "environments/prod").mkdir(parents=True)
    for rel in (
        "environments/dev/release.yaml",
        "environments/dev/canary/release.yaml",
        "environments/prod/release.yaml",
    ):
        (tmp_path / rel).write_text("release: {chartVersion: 0.1.0}\n")
    git = {
        "files": [{"path": "environments/*/release.yaml"}, {"path": "environments/prod/release.yaml", "exclude": True}]
    }
    params = validate._git_generator_params({"metadata": {"name": "a"}}, git, tmp_path)
    assert sorted(p["path"]["path"] for p in params) == ["environments/dev", "environments/dev/canary"]
