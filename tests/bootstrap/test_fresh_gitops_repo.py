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
from pipeline.gitops.argocd_standin import project_docs_at, stand_in_for
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
    fake = stand_in_for(remote, project_docs_at(remote), lambda: NOW, ENVS)
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
    fake = stand_in_for(remote, project_docs_at(remote), lambda: NOW, ENVS)
    # One generator fails (a commit the repository does not have): no Application at all.
    assert [a for a in fake.apps if a != fake.root_app] == []
    assert f"unable to checkout git repo {url} with revision {ZEROS}" in fake.appset_error


def test_prod_is_generated_after_its_first_promotion(tmp_path: Path, make_release: Callable[..., Release]) -> None:  # noqa: F811
    remote = seeded(tmp_path)
    fake = stand_in_for(remote, project_docs_at(remote), lambda: NOW, ENVS)
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


def push_change(remote: str, tmp_path: Path, name: str, edit: Callable[[Path], None]) -> None:
    repo = clone(remote, tmp_path, name)
    edit(repo.path)
    git("add", "-A", cwd=repo.path)
    git("commit", "-qm", name, cwd=repo.path, env=GIT_IDENT)
    git("push", "-q", "origin", "HEAD:main", cwd=repo.path)


def test_without_the_appproject_the_generator_fails(tmp_path: Path) -> None:
    # git.go GenerateParams gets the template's AppProject before reading git.
    remote = seeded(tmp_path)
    fake = stand_in_for(
        remote, [d for d in project_docs_at(remote) if d["metadata"]["name"] != "llm-service"], lambda: NOW, ENVS
    )
    assert [a for a in fake.apps if a != fake.root_app] == []
    assert 'error getting project llm-service: appprojects.argoproj.io "llm-service" not found' in fake.appset_error


def test_star_crosses_slash_as_git_ls_files_does(tmp_path: Path) -> None:
    # Argo CD's default file globbing is `git ls-files -- environments/*/release.yaml`: a nested
    # release.yaml is one more Application (named after its own directory).
    remote = seeded(tmp_path)

    def nest(root: Path) -> None:
        (root / "environments/dev/canary").mkdir()
        (root / "environments/dev/canary/release.yaml").write_text((root / "environments/dev/release.yaml").read_text())

    push_change(remote, tmp_path, "nested", nest)
    fake = stand_in_for(remote, project_docs_at(remote), lambda: NOW, ENVS)
    assert fake.appset_error == ""
    assert sorted(a for a in fake.apps if a != fake.root_app) == [
        "llm-service-canary",
        "llm-service-dev",
        "llm-service-staging",
    ]


def test_a_release_file_that_is_not_a_mapping_stops_the_whole_generation(tmp_path: Path) -> None:
    remote = seeded(tmp_path)
    push_change(
        remote, tmp_path, "scalar", lambda root: (root / "environments/staging/release.yaml").write_text("oops\n")
    )
    fake = stand_in_for(remote, project_docs_at(remote), lambda: NOW, ENVS)
    assert [a for a in fake.apps if a != fake.root_app] == []
    assert "unable to process file 'environments/staging/release.yaml'" in fake.appset_error


def test_a_label_the_params_lack_fails_the_template(tmp_path: Path) -> None:
    # The whole template is rendered (metadata labels too), missingkey=error.
    remote = seeded(tmp_path)

    def label(root: Path) -> None:
        f = root / PIN_FILE
        f.write_text(f.read_text().replace('"{{ .path.basename }}"\n    spec:', '"{{ .path.nope }}"\n    spec:', 1))

    push_change(remote, tmp_path, "label", label)
    fake = stand_in_for(remote, project_docs_at(remote), lambda: NOW, ENVS)
    assert [a for a in fake.apps if a != fake.root_app] == []
    assert ".path.nope" in fake.appset_error


def test_a_revision_ls_remote_cannot_resolve_is_refused(tmp_path: Path) -> None:
    remote = seeded(tmp_path)

    def relative(root: Path) -> None:
        f = root / PIN_FILE
        f.write_text(f.read_text().replace("revision: main\n", "revision: main~0\n", 1))

    push_change(remote, tmp_path, "relative", relative)
    fake = stand_in_for(remote, project_docs_at(remote), lambda: NOW, ENVS)
    assert [a for a in fake.apps if a != fake.root_app] == []
    assert "unable to resolve 'main~0' to a commit SHA" in fake.appset_error
