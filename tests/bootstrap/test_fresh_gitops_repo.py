"""A fresh GitOps repository is valid from its first commit: the ApplicationSet controller (the strict
stand-in, pipeline/gitops/argocd_standin.py, which fails the whole generation on one failing generator
as applicationset/controllers/template/template.go does) generates dev and staging from the seed, and
prod once its first promotion pushed its pins and its generator together."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import yaml

from pipeline.gitops.argocd_pin import PIN_FILE, pinned_revision
from pipeline.gitops.argocd_standin import stand_in_for
from pipeline.gitops.release import Release
from pipeline.gitops.repo import ensure_local_remote, git
from tests.promotion.conftest import GIT_IDENT, clone, make_release  # noqa: F401
from tests.rollback.conftest import to_prod

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
ENVS = ("dev", "staging", "prod")
ZEROS = "0" * 40
# The ApplicationSet as this repository committed it before issue 20: prod's generator at the placeholder.
PLACEHOLDER_GENERATOR = f"""\
    - git:
        repoURL: {{repo}}
        revision: "{ZEROS}"
        files:
          - path: environments/prod/release.yaml
        values:
          prodRevision: "{ZEROS}"
"""


def seeded(tmp_path: Path) -> str:
    """A GitOps remote whose first commit is this repository's environments/ (and charts/), as adopters seed it."""
    return str(ensure_local_remote(tmp_path / "remote" / "gitops.git", REPO))


def test_first_commit_generates_dev_and_staging(tmp_path: Path) -> None:
    remote = seeded(tmp_path)
    assert len(git("--git-dir", remote, "rev-list", "--all").split()) == 1
    fake = stand_in_for(remote, [], lambda: NOW, ENVS)
    assert fake.appset_error == ""
    assert sorted(a for a in fake.apps if a != fake.root_app) == ["llm-service-dev", "llm-service-staging"]
    dev = fake.apps["llm-service-dev"]
    assert dev.destination["namespace"] == "llm-dev" and dev.project == "llm-service"
    assert [s["targetRevision"] for s in dev.sources] == ["0.1.0", "main"]


def test_the_placeholder_form_generates_nothing(tmp_path: Path) -> None:
    remote = seeded(tmp_path)
    repo = clone(remote, tmp_path, "w")
    path = repo.file(PIN_FILE)
    text = path.read_text()
    url = yaml.safe_load(text)["spec"]["generators"][0]["git"]["repoURL"]
    path.write_text(text.replace("  generators:\n", "  generators:\n" + PLACEHOLDER_GENERATOR.format(repo=url), 1))
    git("commit", "-qam", "the old form", cwd=repo.path, env=GIT_IDENT)
    git("push", "-q", "origin", "HEAD:main", cwd=repo.path)
    fake = stand_in_for(remote, [], lambda: NOW, ENVS)
    # One generator fails (a commit the repository does not have): no Application at all.
    assert [a for a in fake.apps if a != fake.root_app] == []
    assert f"unable to checkout git repo {url} with revision {ZEROS}" in fake.appset_error


def test_prod_is_generated_after_its_first_promotion(tmp_path: Path, make_release: Callable[..., Release]) -> None:  # noqa: F811
    remote = seeded(tmp_path)
    fake = stand_in_for(remote, [], lambda: NOW, ENVS)
    to_prod(remote, tmp_path, make_release(1, images_built=False), 1)
    repo = clone(remote, tmp_path, "after")
    promotion = git("rev-parse", "HEAD^", cwd=repo.path).strip()
    assert pinned_revision(repo, "prod") == promotion
    # The root app applies the branch's ApplicationSet; the controller then creates prod (reconcile).
    fake.observe_git()
    assert fake.appset_error == ""
    assert sorted(a for a in fake.apps if a != fake.root_app) == [f"llm-service-{e}" for e in sorted(ENVS)]
    prod = fake.apps["llm-service-prod"]
    assert prod.destination["namespace"] == "llm-prod"
    assert [s["targetRevision"] for s in prod.sources] == ["0.1.0", promotion]
    # Chart version and values from one commit: the generator read release.yaml at the pin.
    assert prod.sync["revisions"] == ["0.1.0", promotion]
