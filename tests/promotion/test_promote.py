"""promote: pins copied exactly, one commit with trailers + evidence, policy refusals, idempotence."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pydantic
import pytest
import yaml

from pipeline.core.context import RunContext
from pipeline.core.result import Status
from pipeline.gitops.release import Release
from pipeline.gitops.repo import git
from pipeline.stages import promote
from tests.promotion.conftest import RELEASE_YAML, ci_evidence, clone, commit_by_hand, prod_local_options


def to_dev(remote: str, ctx: RunContext, rel: Release, **kw: object) -> promote.StageResult:
    return promote.run(
        promote.PromoteOptions(
            to="dev", release=rel, evidence=ci_evidence(rel=rel), run_id="run-1", gitops_repo=remote, **kw
        ),  # type: ignore[arg-type]
        ctx,
    )


def test_dev_promotion_is_one_commit_with_trailers_and_evidence(
    remote: str, ctx: RunContext, make_release: Callable[..., Release], tmp_path: Path
) -> None:
    rel = make_release(1)
    res = to_dev(remote, ctx, rel, actor="ci-bot")
    assert res.status is Status.PASSED, res
    repo = clone(remote, tmp_path)
    head = repo.log(limit=1)[0]
    assert head.subject == f"promote(dev): {rel.id} from ci"
    assert head.trailer("Promote-To") == "dev" and head.trailer("Promote-From") == "ci"
    assert head.trailer("Gateway-Digest") == rel.gateway_digest
    assert head.trailer("Vllm-Digest") == rel.vllm_digest
    assert head.trailer("Model-Revision") == "rev1"
    assert head.trailer("Run-Id") == "run-1"
    assert head.trailer("Promoted-By") == "ci-bot"
    evidence = json.loads(repo.file(f"environments/dev/evidence/{rel.id}.json").read_text())
    assert evidence["gates"]["smoke"]["status"] == "passed"
    # The bundle carries what the stage recorded it exercised, not the release's pins.
    assert evidence["gates"]["smoke"]["subject"]["gateway_digest"] == rel.gateway_digest
    assert "digests" not in evidence["gates"]["smoke"]
    assert head.trailer("Actor-Source") == "override (--actor)"
    # Only the release file and the evidence changed.
    changed = git("show", "--name-only", "--format=", "HEAD", cwd=repo.path).split()
    assert sorted(changed) == [f"environments/dev/evidence/{rel.id}.json", "environments/dev/release.yaml"]


def test_round_trip_edit_keeps_comments_and_only_touches_pins(
    remote: str, ctx: RunContext, make_release: Callable[..., Release], tmp_path: Path
) -> None:
    rel = make_release(1)
    to_dev(remote, ctx, rel)
    text = clone(remote, tmp_path).file("environments/dev/release.yaml").read_text()
    old, new = RELEASE_YAML.splitlines(), text.splitlines()
    assert len(old) == len(new)
    differing = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
    # Every differing line is a pin line (same key, new value); comments and order intact.
    assert {a.split(":")[0] for a, _ in differing} == {b.split(":")[0] for _, b in differing}
    assert all(a.lstrip().split(":")[0] in {"id", "commit", "imagesBuilt", "digest", "revision"} for a, _ in differing)
    assert "# -- Gateway image digest (sha256:...)." in text


def test_same_release_twice_is_a_noop(
    remote: str, ctx: RunContext, make_release: Callable[..., Release], tmp_path: Path
) -> None:
    rel = make_release(1)
    to_dev(remote, ctx, rel)
    head = clone(remote, tmp_path).head()
    res = to_dev(remote, ctx, rel)
    assert res.status is Status.PASSED and "no-op" in res.summary
    assert clone(remote, tmp_path, "again").head() == head


def test_staging_copies_exact_pins_of_dev(
    remote: str, ctx: RunContext, make_release: Callable[..., Release], tmp_path: Path
) -> None:
    rel = make_release(2)
    to_dev(remote, ctx, rel)
    res = promote.run(promote.PromoteOptions(to="staging", gitops_repo=remote, policy_profile="local"), ctx)
    assert res.status is Status.PASSED, res.checks
    repo = clone(remote, tmp_path)
    assert (repo.file("environments/staging/release.yaml").read_text()) == repo.file(
        "environments/dev/release.yaml"
    ).read_text()
    head = repo.log(limit=1)[0]
    assert (head.trailer("Promote-From"), head.trailer("Promote-To")) == ("dev", "staging")
    assert head.trailer("Policy-Profile") == "local"


def test_failed_gate_refuses_and_pushes_nothing(
    remote: str, ctx: RunContext, make_release: Callable[..., Release], tmp_path: Path
) -> None:
    head = clone(remote, tmp_path).head()
    opts = promote.PromoteOptions(
        to="dev", release=make_release(1), evidence=ci_evidence(failed="scan", rel=make_release(1)), gitops_repo=remote
    )
    res = promote.run(opts, ctx)
    assert res.status is Status.FAILED
    assert any("gate <scan> is failed" in c.detail for c in res.checks)
    assert clone(remote, tmp_path, "after").head() == head


def test_prod_refusal_lists_every_unmet_rule(
    remote: str, ctx: RunContext, make_release: Callable[..., Release]
) -> None:
    to_dev(remote, ctx, make_release(1, images_built=False))
    assert promote.run(promote.PromoteOptions(to="staging", gitops_repo=remote, policy_profile="local"), ctx).ok
    res = promote.run(promote.PromoteOptions(to="prod", gitops_repo=remote, approvers=["alice"], actor="rm"), ctx)
    details = [c.detail for c in res.checks if c.status is Status.FAILED]
    assert res.status is Status.FAILED
    assert any("needs 2 distinct approvers" in d for d in details)
    assert any("has soaked" in d for d in details)
    assert any("trivy-operator" in d for d in details)
    assert any("no registry-built images" in d for d in details)


def test_prod_with_approvals_local_profile_and_flag(
    remote: str, ctx: RunContext, make_release: Callable[..., Release], tmp_path: Path
) -> None:
    to_dev(remote, ctx, make_release(1, images_built=False))
    assert promote.run(promote.PromoteOptions(to="staging", gitops_repo=remote, policy_profile="local"), ctx).ok
    res = promote.run(prod_local_options(remote), ctx)
    assert res.status is Status.PASSED, res.checks
    head = clone(remote, tmp_path).log("environments/prod/release.yaml", limit=1)[0]
    assert head.trailer_all("Approved-By") == ["alice", "bob"]
    assert head.trailer("Unbuilt-Images-Allowed-By") == "rm"


def test_dry_run_changes_nothing(
    remote: str, ctx: RunContext, make_release: Callable[..., Release], tmp_path: Path
) -> None:
    head = clone(remote, tmp_path).head()
    res = to_dev(remote, ctx, make_release(1), dry_run=True)
    assert res.status is Status.PASSED and "dry run" in res.summary
    assert clone(remote, tmp_path, "after").head() == head


def test_frozen_target_is_refused(
    remote: str, ctx: RunContext, make_release: Callable[..., Release], tmp_path: Path
) -> None:
    repo = clone(remote, tmp_path, "writer")
    repo.file("environments/dev/freeze.yaml").write_text("frozen: true\nsince: t\nby: ctl\nreason: alert\n")
    commit_by_hand(repo, "freeze")
    res = to_dev(remote, ctx, make_release(1))
    assert res.status is Status.FAILED
    assert any("is frozen" in c.detail for c in res.checks)


def test_deny_sync_window_is_respected(tmp_path: Path, make_release: Callable[..., Release]) -> None:
    from pipeline.gitops.repo import ensure_local_remote
    from tests.promotion.conftest import write_envs

    appproject = """\
apiVersion: argoproj.io/v1alpha1
kind: AppProject
metadata: {name: llm-service}
spec:
  syncWindows:
    - kind: deny
      schedule: "* * * * *"
      duration: 1h
      applications: ["*-dev"]
"""
    src = write_envs(tmp_path / "src", appproject)
    remote = str(ensure_local_remote(tmp_path / "r" / "gitops.git", src))
    res = to_dev(remote, RunContext(run_dir=tmp_path / "run"), make_release(1))
    assert res.status is Status.FAILED
    assert any("deny sync window is active" in c.detail for c in res.checks)


def test_malformed_values_file_is_a_clear_error_and_nothing_pushed(
    remote: str, ctx: RunContext, make_release: Callable[..., Release], tmp_path: Path
) -> None:
    repo = clone(remote, tmp_path, "writer")
    repo.file("environments/dev/values.yaml").write_text("replicaCount: [1\n  broken: {\n")
    commit_by_hand(repo, "oops")
    head = repo.head()
    res = to_dev(remote, ctx, make_release(1))
    assert res.status is Status.FAILED
    detail = res.checks[-1].detail
    assert "environments/dev/values.yaml: not valid YAML" in detail and "nothing pushed" in detail
    assert clone(remote, tmp_path, "after").head() == head


def test_two_promotions_racing_are_serialized_by_git(
    remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    # dev gets release 1 first so both racers build on a real history.
    to_dev(remote, RunContext(run_dir=tmp_path / "r0"), make_release(1))
    results: dict[str, promote.StageResult] = {}
    barrier = threading.Barrier(2)

    def racer(name: str, rel: Release, env: str) -> None:
        barrier.wait()
        if env == "dev":
            results[name] = to_dev(remote, RunContext(run_dir=tmp_path / name), rel)
        else:
            opts = promote.PromoteOptions(to="staging", gitops_repo=remote, policy_profile="local")
            results[name] = promote.run(opts, RunContext(run_dir=tmp_path / name))

    threads = [
        threading.Thread(target=racer, args=("a", make_release(2), "dev")),
        threading.Thread(target=racer, args=("b", make_release(1), "staging")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r.status is Status.PASSED for r in results.values()), results
    repo = clone(remote, tmp_path)
    subjects = [c.subject for c in repo.log()]
    # Both landed, linear history, neither lost.
    assert sum(s.startswith("promote(") for s in subjects) == 3
    assert subprocess.run(["git", "fsck", "--no-progress"], cwd=repo.path, check=False).returncode == 0
    assert len(git("rev-list", "--merges", "HEAD", cwd=repo.path).split()) == 0


def test_pins_record_where_the_images_are_and_a_later_release_without_them_drops_stale_ones(
    remote: str, ctx: RunContext, make_release: Callable[..., Release], tmp_path: Path
) -> None:
    from pipeline.artifacts.chart_render import helm_template
    from pipeline.runtime.tools import REPO_ROOT

    pushed = make_release(1).model_copy(
        update={
            "registry": "127.0.0.1:5000",
            "gateway_repository": "127.0.0.1:5000/llm/gateway",
            "vllm_repository": "127.0.0.1:5000/llm/vllm-cpu",
        }
    )
    assert to_dev(remote, ctx, pushed).status is Status.PASSED
    repo = clone(remote, tmp_path)
    text = repo.file("environments/dev/release.yaml").read_text()
    assert "registry: 127.0.0.1:5000" in text
    read_back = Release.from_values(yaml.safe_load(text))
    assert read_back == pushed
    # The chart pulls each pinned digest from the repository it was pushed to.
    # (Rendered with this tree's chart and dev values; the test remote's values are minimal.)
    tree = tmp_path / "tree"
    for d in ("charts", "environments"):
        shutil.copytree(REPO_ROOT / d, tree / d)
    (tree / "environments" / "dev" / "release.yaml").write_text(text)
    manifests = helm_template(tree, "dev")
    assert f"127.0.0.1:5000/llm/gateway@{pushed.gateway_digest}" in manifests
    assert f"127.0.0.1:5000/llm/vllm-cpu@{pushed.vllm_digest}" in manifests
    # A release whose images were not pushed anywhere: the env's own repositories again, nothing stale.
    local = make_release(2)
    assert to_dev(remote, ctx, local).status is Status.PASSED
    text = clone(remote, tmp_path, "again").file("environments/dev/release.yaml").read_text()
    assert "127.0.0.1:5000" not in text and "registry:" not in text
    assert Release.from_values(yaml.safe_load(text)) == local


def test_release_pins_refuse_a_malformed_registry_or_repository(make_release: Callable[..., Release]) -> None:

    base = make_release(1).model_dump()
    for field, value in [
        ("registry", "HTTP://Registry"),
        ("gateway_repository", "no-path"),
        ("vllm_repository", "a b/c"),
    ]:
        with pytest.raises(pydantic.ValidationError, match=field):
            Release(**{**base, field: value})
