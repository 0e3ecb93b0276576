"""docs/ci/github-actions.yml, run: its job graph for a push to main, in `needs` order, promotes the release ci
published into dev, then staging, then prod, each accepted by policies/promotion.rego (production profile).

tests/helpers/workflow_runner.py runs the jobs (expressions, run steps, artifacts between jobs through a temp
dir); every `dagger call` goes through the Dagger SDK with the module's own functions (the harness) and the
planned container's last exec — `python -m pipeline <verb> ...` — runs here, against a private GitOps remote (a
bare repository in tmp seeded from environments/). What this test substitutes, all of it stated in TABLE and
recorded by the runner (the test asserts the record is exactly this):

- the contexts: `vars`, `secrets` (per GitHub environment), `github` (a push to main at this checkout's HEAD);
- `dagger call ci` (release job): its argv is planned by the module (images "published" by the harness, which
  answers `publish` with a digest of the address: nothing is built or pushed here) but its last exec is not run —
  the full pipeline has its own tests. The run directory it would export is written from the promotion suite's
  ci_evidence gates for that release, except smoke, whose subject claims exactly what ci's CPU smoke claims in
  the plan (`--subject-digests` of its stage args: the gateway's digest only);
- smoke-gpu: no GPU here. Its services (the CUDA vLLM image with GPUs, the gateway image) are replaced by a local
  gateway in front of the vLLM-compatible simulator serving the release's model id; the smoke stage itself runs
  as planned (`--target`/`--gateway-url`/`--subject-digests gateway=…,vllm=…`), so the evidence is the real smoke
  code path's and says what it ran against (its subject names the loopback URLs and the asserted digests);
- dev's and staging's deployments (DEV_URL, STAGING_URL): a local gateway + simulator each, with tokens they accept;
- the environments' protection rules: wait timers run as a later clock (libfaketime) for the staging and prod
  jobs (≥ the policy's soak; prod outside its deny sync windows); required reviewers as GitHub's review-history
  endpoint served on loopback (GET /repos/{owner}/{repo}/actions/runs/{run_id}/approvals, api.github.com's shape:
  [{environments: [{name}], state, user: {login}, comment}]; Bearer token required, unknown paths 404);
- the prod step reading VulnerabilityReports with kubectl from the staging cluster: replaced by clean reports for the
  release's two digests (tests/helpers/trivy_reports.py, the CRD's shape), updated at the prod job's clock.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.core.result import StageResult
from pipeline.gitops import repo as gitops
from pipeline.gitops import sync_windows
from pipeline.gitops.evidence import parse_subject_digests, with_asserted_digests
from pipeline.gitops.promotion import evidence_path
from pipeline.gitops.promotion_policy import load_policy_data
from pipeline.gitops.release import Release
from pipeline.runtime.local_stack import Stack, local_stack
from tests.helpers import trivy_reports
from tests.helpers.dagger_harness import harness_for
from tests.helpers.workflow_runner import (
    DaggerHost,
    ExpressionError,
    FinalExec,
    JobContext,
    Runner,
    evaluate,
    parse_env_file,
    substitute,
)
from tests.promotion.conftest import ci_evidence

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "docs" / "ci" / "github-actions.yml"
ENVS = ("dev", "staging", "prod")
MODEL_ID = yaml.safe_load((REPO / "app" / "model.yaml").read_text())["id"]
MODEL_REVISION = yaml.safe_load((REPO / "app" / "model.yaml").read_text())["revision"]
REGISTRY = "registry.example.com/llm"  # the workflow's env.REGISTRY: only a name here (nothing is pulled)
# Who pushed, and who approved the prod deployment in GitHub (the review history the stand-in serves).
ACTOR = "release-bot"
REVIEWS = [
    {"user": "alice", "state": "approved", "environments": ["prod"]},
    {"user": "bob", "state": "approved", "environments": ["prod"]},
    {"user": "mallory", "state": "rejected", "environments": ["prod"]},
    {"user": "dave", "state": "approved", "environments": ["staging"]},
]
GITHUB_TOKEN = "ghs_test-run-token"


def head() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()


def clean_env(tmp: Path) -> dict[str, str]:
    """This machine's environment without the project's own settings; git config isolated; caches in tmp."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PIPELINE_", "VIRTUAL_ENV", "GITHUB_"))}
    return env | {
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "PIPELINE_CACHE_DIR": str(tmp / "pipeline-cache"),
    }


# -- GitHub's review history, on loopback -----------------------------------------------------------------------


class Approvals(ThreadingHTTPServer):
    """GET /repos/{owner}/{repo}/actions/runs/{run_id}/approvals as api.github.com answers it (operation
    actions/get-reviews-for-run in github/rest-api-description: an array of environment-approvals)."""

    def __init__(self, repository: str, run_id: str, reviews: list[dict[str, Any]]) -> None:
        super().__init__(("127.0.0.1", 0), _ApprovalsHandler)
        self.path_expected = f"/repos/{repository}/actions/runs/{run_id}/approvals"
        self.body = json.dumps(
            [
                {
                    "environments": [
                        {"id": i, "name": e, "url": "", "html_url": ""} for i, e in enumerate(r["environments"])
                    ],
                    "state": r["state"],
                    "user": {"login": r["user"], "id": n, "type": "User"},
                    "comment": "",
                }
                for n, r in enumerate(reviews)
            ]
        ).encode()
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ApprovalsHandler(BaseHTTPRequestHandler):
    server: Approvals

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        if self.headers.get("Authorization") != f"Bearer {GITHUB_TOKEN}":
            return self._send(401, b'{"message": "Requires authentication"}')
        if self.path != self.server.path_expected:
            return self._send(404, b'{"message": "Not Found"}')
        return self._send(200, self.server.body)

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        return


@pytest.fixture
def approvals() -> Iterator[Approvals]:
    server = Approvals("example/llm-service", "4242", REVIEWS)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -- clocks: the environments' wait timers ------------------------------------------------------------------------


def first_time_outside_deny(env: str, earliest: dt.datetime) -> dt.datetime:
    """The first minute ≥ `earliest` in which no deny sync window of `env` is active (the real AppProject's)."""
    repo = gitops.GitOpsRepo("unused", REPO)
    t = earliest
    for _ in range(64):  # each step jumps past one active window: bounded
        active = sync_windows.sync_windows(repo, env, t)["active_deny"]
        if not active:
            return t
        ends = max(dt.datetime.strptime(w["ends"].removesuffix(" or later"), "%a %Y-%m-%d %H:%M UTC") for w in active)
        t = ends.replace(tzinfo=dt.UTC) + dt.timedelta(minutes=1)
    raise AssertionError(f"no time outside {env}'s deny windows after {earliest}")


def wait_timers() -> dict[str, float]:
    """Seconds each environment's wait timer holds its job (the workflow header's settings) = the policy's soak."""
    soak = load_policy_data("production")["promotion"]["soak_seconds"]
    return {"staging": float(soak["staging"]), "prod": float(soak["prod"])}


# -- the substitutions -------------------------------------------------------------------------------------------


def ci_report(final: FinalExec, sha: str) -> Release:
    """What `dagger call ci ... report export` would export, for the digests the plan passed to the CLI."""
    argv = final.argv
    digests = {t: argv[argv.index(f"--{t}-digest") + 1] for t in ("gateway", "vllm")}
    release = Release(
        id=f"0.1.0+g{sha[:7]}",
        commit=sha,
        chart_version="0.1.0",
        gateway_digest=digests["gateway"],
        vllm_digest=digests["vllm"],
        model_revision=MODEL_REVISION,
        images_built=True,
        registry=REGISTRY,
        gateway_repository=f"{REGISTRY}/gateway",
        vllm_repository=f"{REGISTRY}/vllm",
    )
    out = final.run_dir
    (out / "build").mkdir(parents=True, exist_ok=True)
    (out / "build" / "release.json").write_text(release.model_dump_json(indent=2) + "\n")
    results: dict[str, StageResult] = ci_evidence(rel=release, staging_slo=False)
    # ci's smoke claims what the plan's stage args make it claim (without --gpu: the gateway only).
    stage_args = [argv[i + 1] for i, a in enumerate(argv) if a == "--stage-args"]
    (smoke_args,) = [s.removeprefix("smoke=").split() for s in stage_args if s.startswith("smoke=")]
    claimed = parse_subject_digests(smoke_args[smoke_args.index("--subject-digests") + 1])
    results["smoke"].evidence["subject"] = with_asserted_digests({"kind": "target", "commit": sha}, claimed)
    for result in results.values():
        result.write(out)
    (out / "summary.md").write_text("| stage | status |\n|---|---|\n" + "".join(f"| {n} | passed |\n" for n in results))
    return release


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_workflow_promotes_dev_staging_prod(tmp_path: Path, approvals: Approvals) -> None:
    sha = head()
    remote = str(gitops.ensure_local_remote(tmp_path / "gitops.git", REPO))
    base_env = clean_env(tmp_path)
    now = dt.datetime.now(dt.UTC)
    timers = wait_timers()
    staging_at = now + dt.timedelta(seconds=timers["staging"] + 120)
    prod_at = first_time_outside_deny("prod", staging_at + dt.timedelta(seconds=timers["prod"] + 600))
    offsets = {"staging": (staging_at - now).total_seconds(), "prod": (prod_at - now).total_seconds()}
    released: dict[str, Release] = {}
    standins: dict[str, Stack] = {}
    tokens: dict[str, str] = {}

    def ci_override(final: FinalExec, jc: JobContext) -> int:
        released["release"] = ci_report(final, sha)
        return 0

    def gpu_services(final: FinalExec, jc: JobContext) -> dict[str, str]:
        """smoke --gpu's services → a gateway in front of the simulator serving the release's model."""
        assert final.function == "smoke" and set(final.services) == {"vllm", "gateway"}, final.services
        stack = standins["gpu"]
        token = jc.temp / "smoke-token"
        token.write_text(stack.mint(sub="dagger-smoke", roles=("user",), ttl=3600) + "\n")
        return {
            "http://vllm:8000": stack.upstream_url,
            "http://gateway:8080": stack.gateway_url,
            "http://gateway:8081": stack.internal_url,
            "/run/smoke/token": str(token),
        }

    def vulnerability_reports(jc: JobContext) -> None:
        rel = released["release"]
        updated = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=jc.clock_offset)
        items = [
            trivy_reports.vulnerability_report(
                digest, name, [], updated=updated, namespace="llm-staging", name=f"replicaset-llm-{name}"
            )
            for name, digest in (("gateway", rel.gateway_digest), ("vllm", rel.vllm_digest))
        ]
        (jc.workspace / "vulnerability-reports.json").write_text(
            json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        )

    with (
        local_stack(tmp_path / "gpu-standin", model=MODEL_ID) as standins["gpu"],
        local_stack(tmp_path / "dev-deployment", model=MODEL_ID) as standins["dev"],
        local_stack(tmp_path / "staging-deployment", model=MODEL_ID) as standins["staging"],
        harness_for(pytest.MonkeyPatch()) as harness,
    ):
        for env in ("dev", "staging"):
            tokens[env] = standins[env].mint(sub="ci-loadtest", roles=("user",), ttl=4 * 3600)
        runner = Runner(
            workflow=WORKFLOW,
            work=tmp_path / "run",
            repo=REPO,
            github={
                "event_name": "push",
                "ref": "refs/heads/main",
                "sha": sha,
                "repository": "example/llm-service",
                "run_id": "4242",
                "actor": ACTOR,
                "api_url": approvals.url,
                "token": GITHUB_TOKEN,
            },
            vars={"REGISTRY_USER": "ci", "GITOPS_REPO": remote, "DAGGER_RUNNER_HOST": "", "DAGGER_PR_RUNNER_HOST": ""},
            secrets={"REGISTRY_TOKEN": "registry-token", "HF_TOKEN": "hf-token", "DAGGER_CLOUD_TOKEN": ""},
            environment_secrets={
                env: {"GITOPS_SSH_KEY": "unused for a path remote", "GITOPS_KNOWN_HOSTS": ""} for env in ENVS
            }
            | {
                "staging": {"GITOPS_SSH_KEY": "k", "GITOPS_KNOWN_HOSTS": "", "LOADTEST_TOKEN": tokens["dev"]},
                "prod": {
                    "GITOPS_SSH_KEY": "k",
                    "GITOPS_KNOWN_HOSTS": "",
                    "LOADTEST_TOKEN": tokens["staging"],
                    "KUBECONFIG_STAGING": "unused: the step is replaced",
                },
            },
            environment_vars={
                "staging": {"DEV_URL": standins["dev"].gateway_url},
                "prod": {"STAGING_URL": standins["staging"].gateway_url},
            },
            step_substitutes={("promote-prod", "vulnerability-reports"): vulnerability_reports},
            clock=lambda job, environment: offsets.get(str(environment), 0.0),
            base_env=base_env,
        )
        runner.dagger = DaggerHost(
            harness,
            REPO,
            base_env,
            runner.substitutions,
            services=gpu_services,
            overrides={"ci": ci_override},
        )
        results = runner.run()

    failed = {s.name: s.log[-3000:] for s in runner.steps if s.outcome == "failure"}
    logs = {p.name: p.read_text()[-3000:] for p in (tmp_path / "run" / "jobs").rglob("*.log")}
    assert results == {
        "pull-request": "skipped",
        "release": "success",
        "smoke-gpu": "success",
        "promote-dev": "success",
        "promote-staging": "success",
        "promote-prod": "success",
    }, (failed, logs)
    order = runner.order
    for job in order:
        assert all(order.index(n) < order.index(job) for n in runner.needs_of(job)), order

    # Each promotion: accepted by the policy (its report says so) and pinned in git.
    rel = released["release"]
    for env in ENVS:
        report = json.loads(
            (
                tmp_path / "run" / "jobs" / f"promote-{env}" / "workspace" / f"promote-{env}-report" / "promote.json"
            ).read_text()
        )
        checks = {c["name"]: c for c in report["checks"]}
        assert report["status"] == "passed" and checks["policy"]["status"] == "passed", report
        pinned = Release.from_values(
            yaml.safe_load(gitops.git("show", f"main:environments/{env}/release.yaml", cwd=Path(remote)))
        )
        assert (pinned.id, pinned.gateway_digest, pinned.vllm_digest, pinned.commit) == (
            rel.id,
            rel.gateway_digest,
            rel.vllm_digest,
            rel.commit,
        ), env
    log = gitops.git("log", "--format=%s%n%(trailers:only,unfold)%n--", "main", cwd=Path(remote))
    prod_commit = next(block for block in log.split("--\n") if block.startswith("promote(prod): "))
    assert "Policy-Profile: production" in prod_commit, prod_commit
    # The approvals the policy counted are GitHub's approvals of the prod deployment, nobody else's.
    approved = sorted(line.split(": ", 1)[1] for line in prod_commit.splitlines() if line.startswith("Approved-By: "))
    assert approved == ["alice", "bob"], prod_commit
    assert approvals.requests == [approvals.path_expected]
    for env in ("dev", "staging"):
        assert f"evidence({env}): loadtest@{env} passed for {rel.id}" in log, log

    # dev's smoke gate is the GPU job's result: both digests, asserted by the run that served them.
    bundle = json.loads(gitops.git("show", f"main:{evidence_path('dev', rel.id)}", cwd=Path(remote)))
    subject = bundle["gates"]["smoke"]["subject"]
    assert (subject["gateway_digest"], subject["vllm_digest"]) == (rel.gateway_digest, rel.vllm_digest), subject
    assert standins["gpu"].upstream_url.removeprefix("http://") in subject["model_server"], subject

    # Exactly the substitutions the module docstring states, nothing else.
    assert sorted(runner.substitutions) == sorted(
        [
            "dagger call: the container's last exec runs in this repository with its venv (setup execs: the venv)",
            "dagger call ci: its last exec replaced by the test (see the test's table)",
            "dagger call smoke: services ['gateway', 'vllm'] → the test's stand-ins",
            "job promote-prod, step vulnerability-reports: replaced (cannot run here)",
            f"job promote-staging: runs {offsets['staging']:.0f} s after now (libfaketime): environment staging's wait timer",
            f"job promote-prod: runs {offsets['prod']:.0f} s after now (libfaketime): environment prod's wait timer",
        ]
    ), runner.substitutions


# -- the runner's own contract (fast) -----------------------------------------------------------------------------


def test_expressions_follow_githubs_rules() -> None:
    ctx = {"github": {"event_name": "push"}, "vars": {"A": "x"}, "needs": {"j": {"outputs": {"d": "sha256:1"}}}}
    assert evaluate("github.event_name == 'PUSH'", ctx) is True  # strings compare case-insensitively
    assert evaluate("vars.MISSING || 'fallback'", ctx) == "fallback"
    assert substitute("--d=${{ needs.j.outputs.d }} ${{ vars.NOPE }}.", ctx) == "--d=sha256:1 ."
    with pytest.raises(ExpressionError, match="function contains"):
        evaluate("contains(github.event_name, 'p')", ctx, lambda _: True)
    with pytest.raises(ExpressionError, match="context 'matrix'"):
        evaluate("matrix.os", ctx)


def test_file_commands_are_read_like_the_runner() -> None:
    assert parse_env_file("a=1\nb<<EOF\nline 1\nline 2\nEOF\n") == {"a": "1", "b": "line 1\nline 2"}
    with pytest.raises(ValueError, match="closing delimiter"):
        parse_env_file("b<<EOF\nno end\n")


def test_needs_order_and_cycles(tmp_path: Path) -> None:
    wf = tmp_path / "wf.yml"
    wf.write_text("on: push\njobs:\n  c: {needs: [a, b], steps: []}\n  b: {needs: a, steps: []}\n  a: {steps: []}\n")
    runner = Runner(wf, tmp_path / "w", REPO, github={}, vars={}, secrets={})
    assert runner.job_order() == ["a", "b", "c"]
    wf.write_text("on: push\njobs:\n  a: {needs: b, steps: []}\n  b: {needs: a, steps: []}\n")
    with pytest.raises(Exception, match="cycle"):
        Runner(wf, tmp_path / "w2", REPO, github={}, vars={}, secrets={}).job_order()


def test_an_artifact_name_is_uploaded_once_and_downloads_by_name(tmp_path: Path) -> None:
    wf = tmp_path / "wf.yml"
    up = "actions/upload-artifact@x"
    wf.write_text(
        yaml.safe_dump(
            {
                "on": "push",
                "jobs": {
                    "a": {
                        "steps": [
                            {"run": "mkdir out && echo 1 > out/f && echo h > out/.hidden"},
                            {"uses": up, "with": {"name": "r", "path": "out/"}},
                            {"uses": up, "with": {"name": "r", "path": "out/"}},
                        ]
                    },
                    "b": {
                        "needs": "a",
                        "if": "always()",
                        "steps": [
                            {"uses": "actions/download-artifact@y", "with": {"name": "r", "path": "got"}},
                            {"run": 'test "$(cat got/f)" = 1 && test ! -e got/.hidden'},
                            {"uses": "actions/download-artifact@y", "with": {"name": "nope"}},
                        ],
                    },
                },
            }
        )
    )
    runner = Runner(
        wf,
        tmp_path / "w",
        REPO,
        github={
            "repository": "o/r",
            "run_id": "1",
            "sha": "s",
            "ref": "r",
            "event_name": "push",
            "actor": "a",
            "api_url": "",
        },
        vars={},
        secrets={},
    )
    assert runner.run() == {"a": "failure", "b": "failure"}
    assert [s.outcome for s in runner.steps] == ["success", "success", "failure", "success", "success", "failure"]
