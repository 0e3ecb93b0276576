"""docs/ci/github-actions.yml: schema-valid, no secrets where pull requests run, publishing only on
main/tags, the GPU smoke fed the published digests, promotions dev → staging → prod after it with the
evidence passed as artifacts, current actions (Dagger's and the artifact actions pinned by commit), jobs
on runners that can run them, and every `dagger call` flag one the module's function takes.
(tests/docs/test_workflow_promotes.py runs the job graph.)"""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.dagger_harness import MODULE_SRC

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "docs" / "ci" / "github-actions.yml"
# Oldest major of each action this example may use (their Node 20+ releases).
MIN_MAJOR = {
    "actions/checkout": 5,
    "actions/upload-artifact": 5,
    "actions/download-artifact": 5,
    "dagger/dagger-for-github": 8,
}
# Actions pinned by commit: `git rev-list -n1 <tag>` in each action's repository.
PINNED = {
    "actions/upload-artifact": ("bbbca2ddaa5d8feaa63e36b76fdaad77386f024f", "v7.0.0"),
    "actions/download-artifact": ("3e5f45b2cfb9172054b4087a40e8e0b5a5461e7c", "v8.0.1"),
}
# GitHub environments holding secrets: the release's (registry, HF) and one per promotion target.
SECRET_ENVIRONMENTS = {"release", "dev", "staging", "prod"}
PUSH_ONLY = "github.event_name == 'push'"
# dagger/dagger-for-github v8.4.1 (`git rev-list -n1 v8.4.1` in that repository): v8.4.0 skipped installing the
# requested version when the latest was already installed (#206 "Avoid unnecessary curl", action.yml).
DAGGER_ACTION = ("27b130bf0f79a7f6fbbbe0fbca6760dc9bb40a77", "v8.4.1")
USES_RE = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+?)@(\S+)(?:\s+#\s*(\S+))?\s*$", re.MULTILINE)


@pytest.fixture(scope="module")
def wf() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    # PyYAML reads the `on:` key as True (YAML 1.1).
    data["on"] = data.pop(True)
    return data


def runs_on_pull_requests(wf: dict[str, Any], job: str) -> bool:
    """A job runs for pull requests unless it (or a job it needs) is restricted to pushes."""
    spec = wf["jobs"][job]
    if spec.get("if", "").strip() == PUSH_ONLY:
        return False
    needs = spec.get("needs", [])
    return all(runs_on_pull_requests(wf, n) for n in ([needs] if isinstance(needs, str) else needs))


@pytest.mark.parametrize("schema", ["vendor.github-workflows", "custom.github-workflows-require-timeout"])
def test_workflow_is_schema_valid(schema: str) -> None:
    """SchemaStore's GitHub workflow schema, vendored by check-jsonschema (no download)."""
    out = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(WORKFLOW)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_pull_requests_build_and_test_without_secrets_or_publishing(wf: dict[str, Any]) -> None:
    assert "pull_request" in wf["on"] and "pull_request_target" not in wf["on"]
    assert wf["on"]["push"] == {"branches": ["main"], "tags": ["v*"]}
    pr_jobs = [j for j in wf["jobs"] if runs_on_pull_requests(wf, j)]
    assert pr_jobs, "pull requests run no job"
    for job in pr_jobs:
        text = yaml.safe_dump(wf["jobs"][job])
        assert "secrets." not in text, f"{job} runs on pull requests and references a secret"
        assert "--registry" not in text and "--gitops" not in text, f"{job} publishes or promotes on a PR"
        assert "ci " in text and "--no-promote" in text
    assert wf["permissions"] == {"contents": "read"}


def test_publishing_jobs_run_on_main_and_tags_only(wf: dict[str, Any]) -> None:
    for job, spec in wf["jobs"].items():
        if "secrets." in yaml.safe_dump(spec):
            assert not runs_on_pull_requests(wf, job), job
            assert spec.get("environment") in SECRET_ENVIRONMENTS, f"{job}: secrets from a protected environment"


def test_gpu_smoke_tests_the_digests_ci_published(wf: dict[str, Any]) -> None:
    sys.path.insert(0, str(MODULE_SRC))
    try:
        from pipeline_dagger import plan
    finally:
        sys.path.remove(str(MODULE_SRC))
    release, gpu = wf["jobs"]["release"], wf["jobs"]["smoke-gpu"]
    contract = plan.parse_contract((REPO / plan.CONTRACT_FILE).read_text())
    keys = {plan.published_key(t) for t in contract.image_targets}
    for out, expr in release["outputs"].items():
        assert out in keys and expr == f"${{{{ steps.published.outputs.{out} }}}}"
    (step,) = [s for s in release["steps"] if s.get("id") == "published"]
    assert plan.PUBLISHED_FILE in step["run"] and "$GITHUB_OUTPUT" in step["run"]
    args = dagger_calls(gpu)[0]
    assert gpu["needs"] == "release" and args[0] == "smoke" and "--gpu" in args
    for target in plan.RELEASE_TARGETS:
        assert f"--{target}-digest=${{{{ needs.release.outputs.{target}_digest }}}}" in args
    assert "--hf-token=env:HF_TOKEN" in args


def runner_labels(job: dict[str, Any]) -> list[str]:
    labels = job["runs-on"]
    return [labels] if isinstance(labels, str) else list(labels)


def builds_the_cuda_image(job: dict[str, Any]) -> bool:
    """`ci` builds every image target (the CUDA vLLM one too) unless it is given both release digests."""
    return any(
        args[0] == "ci" and not ({"--gateway-digest", "--vllm-digest"} <= {a.split("=")[0] for a in args})
        for args in dagger_calls(job)
    )


def test_jobs_run_on_runners_that_can_run_them(wf: dict[str, Any]) -> None:
    """A hosted runner reaches no private engine host and has no disk for the CUDA image; GPU runs need a GPU."""
    for name, job in wf["jobs"].items():
        labels = runner_labels(job)
        private_engine = "vars." in str(job.get("env", {}).get("_EXPERIMENTAL_DAGGER_RUNNER_HOST", ""))
        if private_engine or builds_the_cuda_image(job) or dagger_calls(job):
            assert "self-hosted" in labels, f"{name} runs on {labels}"
        gpu = any("--gpu" in args for args in dagger_calls(job))
        assert ("gpu" in labels) is gpu, f"{name}: --gpu needs (only) the GPU runner, got {labels}"
    assert builds_the_cuda_image(wf["jobs"]["pull-request"]) and builds_the_cuda_image(wf["jobs"]["release"])


def test_dagger_action_is_pinned_by_commit_to_a_fixed_release(wf: dict[str, Any]) -> None:
    uses = [m for m in USES_RE.finditer(WORKFLOW.read_text()) if m.group(1) == "dagger/dagger-for-github"]
    assert len(uses) == sum(len(dagger_calls(job)) for job in wf["jobs"].values()) == 8
    for m in uses:
        assert (m.group(2), m.group(3)) == DAGGER_ACTION, m.group(0)
    for m in USES_RE.finditer(WORKFLOW.read_text()):
        if m.group(1) in PINNED:
            assert (m.group(2), m.group(3)) == PINNED[m.group(1)], m.group(0)
    # ... and the engine it installs stays the module's.
    engine = json.loads((REPO / "dagger.json").read_text())["engineVersion"]
    assert wf["env"]["DAGGER_VERSION"] == engine


def dagger_calls(job: dict[str, Any]) -> list[list[str]]:
    """The args of each `dagger call` step, split on spaces outside `${{ ... }}` expressions."""
    return [
        re.findall(r"(?:\$\{\{.*?\}\}|\S)+", s["with"]["args"])
        for s in job["steps"]
        if s.get("uses", "").startswith("dagger/dagger-for-github@") and s["with"].get("verb") == "call"
    ]


def test_every_dagger_call_flag_is_a_function_argument(wf: dict[str, Any]) -> None:
    sys.path.insert(0, str(MODULE_SRC))
    try:
        from pipeline_dagger.main import Pipeline
    finally:
        sys.path.remove(str(MODULE_SRC))
    calls = [args for job in wf["jobs"].values() for args in dagger_calls(job)]
    assert len(calls) == 8
    for args in calls:
        fn, rest = args[0], args[1 : args.index("report")]
        params = inspect.signature(getattr(Pipeline, fn)).parameters
        for flag in rest:
            name = flag.removeprefix("--").split("=", 1)[0].replace("-", "_")
            assert flag.startswith("--") and name in params, f"dagger call {fn}: no argument {flag}"
        # The run directory is the `report` field of what the function returns.
        assert args[args.index("report") + 1] == "export" and args[-1].startswith("--path=")
        returned = typing.get_type_hints(getattr(Pipeline, fn))["return"]
        assert "report" in typing.get_type_hints(returned), f"dagger call {fn}: its result has no `report`"


def test_actions_are_current_and_dagger_matches_the_module(wf: dict[str, Any]) -> None:
    engine = json.loads((REPO / "dagger.json").read_text())["engineVersion"]
    assert wf["env"]["DAGGER_VERSION"] == engine
    for job in wf["jobs"].values():
        for step in job["steps"]:
            if "uses" not in step:
                continue
            action, _, ref = step["uses"].partition("@")
            if re.fullmatch(r"[0-9a-f]{40}", ref):  # pinned by commit: the version is the trailing comment
                ref = dict((m.group(1), m.group(3)) for m in USES_RE.finditer(WORKFLOW.read_text()))[action]
            major = re.match(r"v(\d+)", ref)
            assert major and int(major.group(1)) >= MIN_MAJOR[action], step["uses"]
            if action == "dagger/dagger-for-github":
                assert step["with"]["version"] == "${{ env.DAGGER_VERSION }}"
            if action == "actions/checkout":
                assert step["with"]["persist-credentials"] is False


@pytest.mark.parametrize("doc", ["README.md", "docs/pipeline.md"])
def test_documented_dagger_calls_use_function_arguments(doc: str) -> None:
    sys.path.insert(0, str(MODULE_SRC))
    try:
        from pipeline_dagger.main import Pipeline
    finally:
        sys.path.remove(str(MODULE_SRC))
    text = (REPO / doc).read_text().replace("\\\n", " ")
    calls = [line.split("#")[0].split()[2:] for line in text.splitlines() if line.startswith("dagger call ")]
    assert calls, f"{doc} documents no dagger call"
    for args in calls:
        # The run directory is the result's `report` field: `export` straight on the result would fail.
        assert "export" not in args or args[args.index("export") - 1] == "report", f"{doc}: {' '.join(args)}"
        fn, rest = args[0], args[1 : args.index("export")] if "export" in args else args[1:]
        params = inspect.signature(getattr(Pipeline, fn)).parameters
        for flag in rest:
            if flag.startswith("--"):
                name = flag.removeprefix("--").split("=", 1)[0].replace("-", "_")
                assert name in params, f"{doc}: dagger call {fn} has no argument {flag}"


def job_needs(wf: dict[str, Any], job: str) -> set[str]:
    """Every job `job` waits for, directly or through the jobs it needs."""
    needs = wf["jobs"][job].get("needs", [])
    direct = {needs} if isinstance(needs, str) else set(needs)
    return direct.union(*(job_needs(wf, n) for n in direct)) if direct else set()


def test_promotions_follow_the_gpu_smoke_in_order_with_its_evidence(wf: dict[str, Any]) -> None:
    """dev only after the GPU smoke, with its smoke.json (the one claiming both digests); staging after dev, prod
    after staging; each promotion job in the environment whose protection rules the policy counts on."""
    jobs = wf["jobs"]
    assert {"release", "smoke-gpu"} <= job_needs(wf, "promote-dev")
    assert "promote-dev" in job_needs(wf, "promote-staging") and "promote-staging" in job_needs(wf, "promote-prod")
    for env in ("dev", "staging", "prod"):
        job = jobs[f"promote-{env}"]
        assert job["environment"] == env
        (args,) = [a for a in dagger_calls(job) if a[0] == "promote"]
        assert f"--to={env}" in args
    uploads = {
        s["with"]["name"]: s["with"]["path"]
        for job in jobs.values()
        for s in job["steps"]
        if s.get("uses", "").startswith("actions/upload-artifact@")
    }
    downloads = [
        s["with"]["name"]
        for s in jobs["promote-dev"]["steps"]
        if s.get("uses", "").startswith("actions/download-artifact@")
    ]
    assert set(downloads) == {"ci-report", "smoke-gpu-report"} and set(downloads) <= set(uploads)
    (dev,) = dagger_calls(jobs["promote-dev"])
    evidence = next(a for a in dev if a.startswith("--extra-evidence=")).split("=", 1)[1].split(",")
    assert "smoke-gpu-report/smoke.json" in evidence and "ci-report/smoke.json" not in evidence
    assert "--release-file=ci-report/build/release.json" in dev
    # The GPU smoke is the one smoke whose artifact promote-dev reads, and it runs with --gpu.
    assert "--gpu" in dagger_calls(jobs["smoke-gpu"])[0]


def test_prod_approvers_come_from_githubs_review_history(wf: dict[str, Any]) -> None:
    """--approve is the output of the step reading the run's approvals (never a literal or an input)."""
    prod = wf["jobs"]["promote-prod"]
    (promote,) = [a for a in dagger_calls(prod) if a[0] == "promote"]
    approve = [a for a in promote if a.startswith("--approve")]
    assert approve == ["--approve=${{ steps.approvals.outputs.approvers }}"], approve
    (step,) = [s for s in prod["steps"] if s.get("id") == "approvals"]
    assert "/actions/runs/$GITHUB_RUN_ID/approvals" in step["run"] and "$GITHUB_OUTPUT" in step["run"]
    assert prod["permissions"]["actions"] == "read"
