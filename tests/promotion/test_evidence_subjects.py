"""Promotion evidence says what each gate exercised; reviewer findings 1-7, each with the test that catches it."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.artifacts.source import context_digest
from pipeline.checks import trivy_operator
from pipeline.core.context import RunContext
from pipeline.core.result import Check, StageResult, Status
from pipeline.gitops import promotion as pm
from pipeline.gitops.evidence import (
    attach_result,
    attached_gate_path,
    bind_subject,
    evidence_bundle,
    read_evidence,
    source_subject,
)
from pipeline.gitops.release import Release
from pipeline.gitops.repo import GitOpsError, GitOpsRepo, ensure_local_remote, git, redact, safe_url
from pipeline.gitops.sync_windows import sync_windows
from pipeline.stages import loadtest, promote, rollback, smoke
from tests.promotion.conftest import REPO, ci_evidence, clone, subject_of, write_envs


def run_promote(remote: str, tmp_path: Path, name: str, **kw: Any) -> StageResult:
    return promote.run(promote.PromoteOptions(gitops_repo=remote, **kw), RunContext(run_dir=tmp_path / name))


def denials(res: StageResult) -> list[str]:
    return [c.detail for c in res.checks if c.status is Status.FAILED]


def to_staging(remote: str, tmp_path: Path, rel: Release, **ev: Any) -> None:
    assert run_promote(remote, tmp_path, "dev", to="dev", release=rel, evidence=ci_evidence(rel=rel, **ev)).ok
    res = run_promote(remote, tmp_path, "stg", to="staging", policy_profile="local")
    assert res.status is Status.PASSED, denials(res)


def to_prod_local(remote: str, tmp_path: Path, name: str = "prod", **kw: Any) -> StageResult:
    kw.setdefault("approvers", ["alice", "bob"])
    kw.setdefault("actor", "rm")
    return run_promote(remote, tmp_path, name, to="prod", policy_profile="local", allow_unbuilt_images=True, **kw)


# ---------------------------------------------------------------- 1. gates record their own subject


def test_bundle_copies_the_recorded_subject_never_the_release_pins(
    remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    rel, other = make_release(1), make_release(2)
    ev = ci_evidence(rel=rel)
    # smoke really ran release 2's images: before the fix the bundle stamped release 1's digests on it.
    ev["smoke"].evidence["subject"] = subject_of(other)
    res = run_promote(remote, tmp_path, "dev", to="dev", release=rel, evidence=ev)
    assert res.status is Status.FAILED
    assert any(f"gate <smoke> exercised release with gateway digest {other.gateway_digest}" in d for d in denials(res))
    bundle = evidence_bundle(rel, ev, "run-1")
    assert bundle["gates"]["smoke"]["subject"]["gateway_digest"] == other.gateway_digest
    assert all("digests" not in g for g in bundle["gates"].values())


def test_gate_without_subject_is_refused(remote: str, tmp_path: Path, make_release: Callable[..., Release]) -> None:
    rel = make_release(1)
    ev = ci_evidence(rel=rel)
    ev["scan"] = StageResult(stage="scan", status=Status.PASSED, summary="scan ok")  # records nothing
    res = run_promote(remote, tmp_path, "dev", to="dev", release=rel, evidence=ev)
    # In ci the stage's result falls back to the ci run's source tree (marked so) — not this release's images.
    assert any(d.startswith(f"release <{rel.id}>: gate <scan> exercised source with") for d in denials(res)), denials(
        res
    )


def test_hand_written_loadtest_evidence_file_is_refused(
    remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    rel = make_release(1, images_built=False)
    to_staging(remote, tmp_path, rel, staging_slo=False)
    forged = tmp_path / "loadtest.json"
    forged.write_text(json.dumps({"stage": "loadtest", "status": "passed", "evidence": {"env": "staging"}}))
    res = to_prod_local(remote, tmp_path, extra_evidence=[forged])
    assert res.status is Status.FAILED
    assert any("gate <loadtest@staging> records no subject" in d for d in denials(res)), denials(res)


def _git_tree(root: Path) -> Path:
    (root / "app").mkdir(parents=True)
    (root / "app" / "main.py").write_text("print('v1')\n")
    (root / "pyproject.toml").write_text("[project]\nname='x'\nversion='0.1.0'\n")
    (root / "uv.lock").write_text("")
    for args in (
        ("init", "-q"),
        ("add", "-A"),
        ("-c", "user.email=t@example.invalid", "-c", "user.name=t", "commit", "-q", "-m", "init"),
    ):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    return root


def test_source_subject_binds_only_to_the_release_built_from_that_tree(tmp_path: Path) -> None:
    root = _git_tree(tmp_path / "src")
    head = git("rev-parse", "HEAD", cwd=root).strip()
    rel = Release(
        id="0.1.0+gtest",
        commit=head,
        chart_version="0.1.0",
        gateway_digest=context_digest(root, "gateway"),
        vllm_digest=context_digest(root, "vllm"),
        model_revision="main",
        images_built=False,
    )
    subject = source_subject(root, "simulator")
    assert subject["commit"] == head and "gateway_digest" not in subject
    assert bind_subject(subject, rel)["release_id"] == rel.id
    # The tree changed after the build: the run no longer exercises that release.
    (root / "app" / "main.py").write_text("print('v2')\n")
    assert "release_id" not in bind_subject(source_subject(root, "simulator"), rel)
    # A built release is never bound by source: its gates must have recorded the image digests.
    built = rel.model_copy(update={"images_built": True})
    assert "release_id" not in bind_subject(subject, built)


def test_ci_fallback_subject_is_marked_as_recorded_by_ci(make_release: Callable[..., Release]) -> None:
    rel = make_release(1, images_built=False)
    fallback = {"kind": "source", "commit": "abc", "recorded_by": "ci (the stage recorded no subject)"}
    bundle = evidence_bundle(rel, {"test": StageResult(stage="test", status=Status.PASSED)}, "r", fallback)
    assert bundle["gates"]["test"]["subject"]["recorded_by"].startswith("ci")


def test_smoke_and_loadtest_record_what_they_ran_not_release_digests(tmp_path: Path) -> None:
    ctx = RunContext(run_dir=tmp_path / "run", repo_root=REPO)
    vllm = smoke._subject(smoke.SmokeOptions(server="vllm"), ctx)
    sim = smoke._subject(smoke.SmokeOptions(server="simulator"), ctx)
    assert (vllm["kind"], sim["kind"]) == ("vllm-cpu", "simulator")
    assert vllm["commit"] and set(vllm["content_digests"]) == {"gateway", "vllm"}
    assert "gateway_digest" not in vllm and vllm["model_revision"] is None
    local = loadtest._subject(loadtest.LoadtestOptions(env="staging"), ctx)
    assert local["kind"] == "simulator" and local["env"] == "staging"
    dep = loadtest._subject(loadtest.LoadtestOptions(env="staging", target="https://u:tok@llm.example/"), ctx)
    assert dep == {"kind": "deployment", "env": "staging", "url": "https://***@llm.example/"}


# ---------------------------------------------------------------- 2. the SLO gate of the source env


def staging_loadtest(status: Status = Status.PASSED) -> StageResult:
    """What `loadtest --env staging --target URL` returns (before --attach adds the env's pins)."""
    return StageResult(
        stage="loadtest",
        status=status,
        summary="staging: all SLOs met" if status is Status.PASSED else "BREACHED: ttft.p95",
        evidence={"env": "staging", "subject": {"kind": "deployment", "env": "staging", "url": "https://stg"}},
    )


def test_prod_requires_a_staging_slo_gate_and_attach_provides_it(
    remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    rel = make_release(1, images_built=False)
    to_staging(remote, tmp_path, rel, staging_slo=False)
    # Before the fix the dev bundle's loadtest satisfied prod. Now it must be staging's own.
    res = to_prod_local(remote, tmp_path, "prod-1")
    assert any("no passed SLO gate (loadtest) of the source env <staging>" in d for d in denials(res)), denials(res)

    who = pm.Actor("qa@example.com", "git config user.email")
    failed = attach_result(remote, tmp_path / "w1", "staging", staging_loadtest(Status.FAILED), "lt-1", who)
    assert failed.key == "loadtest@staging" and failed.record["status"] == "failed"
    assert any("loadtest@staging(env staging): failed" in d for d in denials(to_prod_local(remote, tmp_path, "p2")))

    done = attach_result(remote, tmp_path / "w2", "staging", staging_loadtest(), "lt-2", who)
    repo = clone(remote, tmp_path)
    head = repo.log(limit=1)[0]
    assert head.sha == done.sha and head.subject == f"evidence(staging): loadtest@staging passed for {rel.id}"
    assert head.trailer("Evidence-Gate") == "loadtest@staging" and head.trailer("Recorded-By") == "qa@example.com"
    changed = git("show", "--name-only", "--format=", "HEAD", cwd=repo.path).split()
    assert changed == [attached_gate_path("staging", rel.id, "loadtest@staging")]
    subject = read_evidence(repo, "staging", rel.id)["gates"]["loadtest@staging"]["subject"]  # type: ignore[index]
    assert subject["release_id"] == rel.id and subject["pins_from"].startswith("environments/staging/release.yaml@")

    res = to_prod_local(remote, tmp_path, "prod-3")
    assert res.status is Status.PASSED, denials(res)
    prod = json.loads(clone(remote, tmp_path, "c2").file(pm.evidence_path("prod", rel.id)).read_text())
    assert prod["gates"]["loadtest@staging"]["env"] == "staging"


def test_promote_evidence_file_of_a_staging_deployment_loadtest_counts(
    remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    rel = make_release(1, images_built=False)
    to_staging(remote, tmp_path, rel, staging_slo=False)
    ran = staging_loadtest().write(tmp_path / "lt-run")  # what `loadtest --env staging --target URL` writes
    res = to_prod_local(remote, tmp_path, extra_evidence=[ran])
    assert res.status is Status.PASSED, denials(res)
    prod = json.loads(clone(remote, tmp_path).file(pm.evidence_path("prod", rel.id)).read_text())
    assert prod["gates"]["loadtest@staging"]["subject"]["pins_from"] == "environments/staging/release.yaml"


def test_rollback_after_attached_evidence_reverts_cleanly(
    remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    v1, v2 = make_release(1, images_built=False), make_release(2, images_built=False)
    to_staging(remote, tmp_path / "a", v1)
    to_staging(remote, tmp_path / "b", v2)
    attach_result(remote, tmp_path / "w", "staging", staging_loadtest(), "lt", pm.Actor("qa", "OS user"))
    res = rollback.run(
        rollback.RollbackOptions(env="staging", gitops_repo=remote, reason="t"), RunContext(run_dir=tmp_path / "rb")
    )
    assert res.status is Status.PASSED, res.checks
    repo = clone(remote, tmp_path)
    assert pm.read_release(repo, "staging") == v1
    assert repo.file(attached_gate_path("staging", v2.id, "loadtest@staging")).exists()  # evidence kept


def test_attach_refuses_an_env_with_nothing_pinned(remote: str, tmp_path: Path) -> None:
    with pytest.raises(pm.PromotionError, match="nothing is pinned in <staging>"):
        attach_result(remote, tmp_path / "w", "staging", staging_loadtest(), "lt", pm.Actor("qa", "x"))


def test_loadtest_cli_has_attach() -> None:
    parser = argparse.ArgumentParser()
    loadtest.add_arguments(parser)
    args = parser.parse_args(["--env", "staging", "--attach", "--gitops-repo", "/tmp/x.git"])
    assert (args.env, args.attach, args.gitops_repo) == ("staging", True, "/tmp/x.git")


# ---------------------------------------------------------------- 3. skipped checks


def with_skipped_scan(rel: Release) -> dict[str, StageResult]:
    ev = ci_evidence(rel=rel)
    ev["scan"].checks = [
        Check(name="config", status=Status.PASSED),
        Check(name="image vulnerabilities", status=Status.SKIPPED, detail="no DB"),
    ]
    return ev


def test_prod_refuses_a_gate_with_a_skipped_check(
    remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    rel = make_release(1)
    assert run_promote(remote, tmp_path, "dev", to="dev", release=rel, evidence=with_skipped_scan(rel)).ok
    assert run_promote(remote, tmp_path, "stg", to="staging", policy_profile="local").ok
    later = pm.utcnow() + dt.timedelta(days=3)
    res = run_promote(
        remote, tmp_path, "prod", to="prod", approvers=["alice", "bob"], actor="rm", now=later, trivy_reports=None
    )
    assert "env <prod> accepts no skipped checks: gate <scan> skipped check <image vulnerabilities>" in denials(res)


def test_local_profile_accepts_skipped_checks_and_records_them(
    remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    rel = make_release(1, images_built=False)
    assert run_promote(remote, tmp_path, "dev", to="dev", release=rel, evidence=with_skipped_scan(rel)).ok
    assert run_promote(remote, tmp_path, "stg", to="staging", policy_profile="local").ok
    res = to_prod_local(remote, tmp_path)
    assert res.status is Status.PASSED, denials(res)
    repo = clone(remote, tmp_path)
    promo = next(c for c in repo.log() if c.trailer("Promote-To") == "prod")
    assert promo.trailer("Skipped-Checks-Accepted") == "scan: image vulnerabilities"
    assert promo.trailer("Policy-Profile") == "local"
    record = json.loads(repo.file(pm.evidence_path("prod", rel.id)).read_text())["promotions"][-1]
    assert record["skipped_checks_accepted"] == {"scan": ["image vulnerabilities"]}


# ---------------------------------------------------------------- 4. actor and approvals


def test_actor_comes_from_ci_identity_then_git_then_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var, _ in pm.CI_IDENTITY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("PIPELINE_ACTOR", raising=False)
    root = _git_tree(tmp_path / "src")
    git("config", "user.email", "dev@example.com", cwd=root)
    assert pm.actor_identity(None, root) == pm.Actor("dev@example.com", "git config user.email")
    monkeypatch.setenv("GITHUB_ACTOR", "octocat")
    assert pm.actor_identity(None, root) == pm.Actor("octocat", "GitHub Actions (GITHUB_ACTOR)")
    who = pm.actor_identity("someone", root)
    assert who.name == "someone" and who.overridden


def test_promoter_cannot_approve_their_own_promotion(
    remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    rel = make_release(1, images_built=False)
    to_staging(remote, tmp_path, rel)
    res = to_prod_local(remote, tmp_path, approvers=["alice", "bob", "RM"])
    assert any("approver <RM> is the promoter <rm> (override (--actor))" in d for d in denials(res)), denials(res)


# ---------------------------------------------------------------- 5. credentials in URLs


def test_safe_url_redacts_userinfo_only() -> None:
    assert safe_url("https://x-access-token:ghp_SECRET@github.com/o/r.git") == "https://***@github.com/o/r.git"
    assert safe_url("ssh://git@example.com/o/r.git") == "ssh://***@example.com/o/r.git"
    assert safe_url("git@github.com:o/r.git") == "git@github.com:o/r.git"
    assert safe_url("/srv/gitops.git") == "/srv/gitops.git"
    text = "fatal: unable to access 'https://bot:tok3n@git.example/r.git/': Could not resolve host"
    assert "tok3n" not in redact(text) and "https://***@git.example/r.git/" in redact(text)


def test_git_errors_never_carry_the_token(tmp_path: Path) -> None:
    repo = GitOpsRepo("https://bot:s3cr3t-token@127.0.0.1:9/gitops.git", tmp_path / "w")
    with pytest.raises(GitOpsError) as exc:
        repo.sync()
    assert "s3cr3t-token" not in str(exc.value)


def test_clone_treats_a_dash_remote_as_a_repository_not_an_option(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    repo = GitOpsRepo(f"--upload-pack=touch {marker}", tmp_path / "w")
    with pytest.raises(GitOpsError) as exc:
        repo.sync()
    assert not marker.exists()
    assert "does not exist" in str(exc.value) or "not appear to be a git repository" in str(exc.value)


def test_status_prints_the_remote_redacted(remote: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from pipeline.commands import status

    # A token-bearing URL stands in for the remote: git rewrites it to the local bare repo.
    url = "https://bot:s3cr3t@gitops.invalid/r.git"
    cfg = tmp_path / "gitconfig"
    cfg.write_text(f'[url "{remote}"]\n\tinsteadOf = {url}\n')
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(cfg))
    ctx = RunContext(run_dir=tmp_path / "run", console=Console(record=True, width=400))
    result = status.main(argparse.Namespace(gitops_repo=url), ctx)
    assert result.exit_code == 0 and result.render is not None
    shown = Console(record=True, width=400)
    result.render(shown)  # the table view (stdout)
    out = shown.export_text() + ctx.console.export_text()
    assert "s3cr3t" not in out and "https://***@gitops.invalid/r.git" in out.replace("\n", "")


# ---------------------------------------------------------------- 6. trivy-operator live path


def test_trivy_reports_argument_parsing() -> None:
    assert promote.parse_trivy_reports("cluster") == promote.TrivyCluster(None)
    assert promote.parse_trivy_reports("cluster:prod-eu") == promote.TrivyCluster("prod-eu")
    assert promote.parse_trivy_reports("reports.json") == Path("reports.json")
    assert promote.parse_trivy_reports("./cluster") == Path("cluster")
    with pytest.raises(argparse.ArgumentTypeError):
        promote.parse_trivy_reports("cluster:")
    assert trivy_operator.namespace_for("staging") == "llm-staging"


def test_trivy_cluster_reads_the_source_env_namespace(
    remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    rel = make_release(1, images_built=False)
    to_staging(remote, tmp_path, rel)
    seen: list[tuple[str, str | None]] = []

    def lister(namespace: str, context: str | None) -> list[dict[str, Any]]:
        seen.append((namespace, context))
        now = pm.iso(pm.utcnow())
        return [
            {
                "metadata": {"namespace": namespace, "name": d[-6:]},
                "report": {"artifact": {"digest": d}, "updateTimestamp": now},
            }
            for d in (rel.gateway_digest, rel.vllm_digest)
        ]

    res = to_prod_local(remote, tmp_path, trivy_reports=promote.TrivyCluster("kind-a"), trivy_lister=lister)
    assert res.status is Status.PASSED, denials(res)
    assert seen == [("llm-staging", "kind-a")]


def test_trivy_cluster_unreachable_refuses_even_where_not_required(
    remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    rel = make_release(1, images_built=False)
    to_staging(remote, tmp_path, rel)

    def unreachable(namespace: str, context: str | None) -> list[dict[str, Any]]:
        raise ConnectionRefusedError("connection refused")

    res = to_prod_local(remote, tmp_path, trivy_reports=promote.TrivyCluster(), trivy_lister=unreachable)
    assert res.status is Status.FAILED
    assert any(
        "cannot list VulnerabilityReports in namespace llm-staging (kube context current context / in-cluster): "
        "ConnectionRefusedError: connection refused" in d
        for d in denials(res)
    ), denials(res)


# ---------------------------------------------------------------- 7. sync windows say which and until when


def test_weekend_window_refusal_names_the_window_and_its_end(
    tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    appproject = (REPO / "environments/argocd/appproject-llm-service.yaml").read_text()
    remote = str(ensure_local_remote(tmp_path / "r" / "gitops.git", write_envs(tmp_path / "src", appproject)))
    rel = make_release(1, images_built=False)
    to_staging(remote, tmp_path, rel)
    saturday = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
    res = to_prod_local(remote, tmp_path, now=saturday)
    assert denials(res) == [
        "a deny sync window is active for <prod>: deny '0 18 * * 5' for 60h (UTC), since Fri 2026-11-27 18:00 UTC, "
        "ends Mon 2026-11-30 06:00 UTC; promotions into <prod> are refused until then (Argo CD would not sync them; "
        "no policy profile lifts this, see docs/promotion.md#sync-windows)"
    ]
    year_end = sync_windows(clone(remote, tmp_path), "prod", dt.datetime(2026, 12, 24, 9, 0, tzinfo=dt.UTC))
    assert [w["ends"] for w in year_end["active_deny"]] == ["Sun 2027-01-03 00:00 UTC"]
    monday = dt.datetime(2026, 11, 30, 6, 0, tzinfo=dt.UTC)
    assert to_prod_local(remote, tmp_path, "prod-mon", now=monday).status is Status.PASSED


@pytest.mark.parametrize(
    "stand_in", [None, "vLLM CPU build registry.test/llm/vllm-cpu@sha256:… serving the tiny model"]
)
def test_a_cpu_loadtest_of_a_gpu_release_names_its_vllm_stand_in(
    remote: str, tmp_path: Path, make_release: Callable[..., Release], stand_in: str | None
) -> None:
    """Dagger's ci without GPUs loads the release's gateway image in front of the vLLM CPU build: its
    loadtest asserts the gateway digest only, and says what served instead of the CUDA vllm image."""
    rel = make_release(1)
    ctx = RunContext(run_dir=tmp_path / "run", repo_root=REPO)
    opts = loadtest.LoadtestOptions(
        env="dev", target="http://gateway:8080", subject_digests={"gateway": rel.gateway_digest}, vllm_stand_in=stand_in
    )
    subject = loadtest._subject(opts, ctx)
    assert subject.get("vllm_stand_in") == stand_in and "vllm_digest" not in subject
    evidence = ci_evidence(rel=rel)
    evidence["loadtest"] = StageResult(
        stage="loadtest", status=Status.PASSED, summary="ok", evidence={"env": "dev", "subject": subject}
    )
    res = run_promote(remote, tmp_path, "dev", to="dev", release=rel, evidence=evidence)
    neither = [d for d in denials(res) if "names neither the vLLM digest it ran nor its stand-in" in d]
    assert (res.ok, bool(neither)) == ((True, False) if stand_in else (False, True)), denials(res)


def test_vllm_stand_in_needs_a_target_and_contradicts_a_vllm_digest(tmp_path: Path) -> None:
    ctx = RunContext(run_dir=tmp_path / "run", repo_root=REPO)
    alone = loadtest.run(loadtest.LoadtestOptions(vllm_stand_in="cpu"), ctx)
    assert alone.status is Status.FAILED and "--vllm-stand-in needs --target" in alone.summary
    both = loadtest.LoadtestOptions(
        target="http://gw", subject_digests={"vllm": "sha256:" + "a" * 64}, vllm_stand_in="x"
    )
    res = loadtest.run(both, ctx)
    assert res.status is Status.FAILED and "contradict" in res.summary
