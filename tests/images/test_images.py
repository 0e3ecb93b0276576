"""The service images without a Docker engine: hadolint, trivy config and structural checks.

Every check is also run against a planted violation, so a check (or a tool invocation)
that silently stops finding anything fails here instead of passing vacuously.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from dockerfile_checks import (
    Dockerfile,
    check_apt_hygiene,
    check_base_images_pinned,
    check_builder_separate,
    check_no_compilers,
    check_no_secrets,
    check_non_root_user,
    check_oci_labels,
    check_targets,
    dockerignore_excludes,
    parse,
)

BIN = Path(sys.executable).parent
SHIPPED = ("gateway", "simulator", "vllm", "pipeline")


@pytest.fixture(scope="module")
def dockerfile_text(repo_root: Path) -> str:
    return (repo_root / "app" / "Dockerfile").read_text()


ALL_CHECKS: list[Callable[[Dockerfile], list[str]]] = [
    check_base_images_pinned,
    lambda df: check_targets(df, ("builder", "gateway", "vllm", "simulator", "pipeline-builder", "pipeline")),
    lambda df: check_non_root_user(df, SHIPPED),
    check_no_secrets,
    lambda df: check_no_compilers(df, SHIPPED),
    lambda df: check_apt_hygiene(df, SHIPPED),
    lambda df: check_oci_labels(df, ("gateway", "vllm", "pipeline")),
    lambda df: check_builder_separate(df, "gateway", "builder"),
    lambda df: check_builder_separate(df, "pipeline", "pipeline-builder"),
]


# torch inductor compiles C++ at warm-up on CPU (as Triton does on upstream's CUDA image): the CPU base only.
CPU_COMPILERS = {"vllm-base-cpu": {"g++", "libc6-dev", "python3-dev"}}


def test_vllm_cpu_is_the_same_stage_on_the_cpu_base(dockerfile_text: str) -> None:
    """VLLM_FLAVOR only swaps the base: user, env, cache paths, entrypoint are the same instructions."""
    cuda = parse(dockerfile_text)
    cpu = parse(dockerfile_text.replace("ARG VLLM_FLAVOR=cuda\n", "ARG VLLM_FLAVOR=cpu\n", 1))
    assert cuda.stage("vllm").parent is cuda.stage("vllm-base-cuda")
    assert cpu.stage("vllm").parent is cpu.stage("vllm-base-cpu")
    assert cpu.stage("vllm").instructions == cuda.stage("vllm").instructions
    env = " ".join(i.args for i in cpu.stage("vllm").instructions if i.cmd == "ENV")
    # Every cache path under $HOME/.cache (the chart mounts an emptyDir at $HOME; the root is read-only).
    for var in ("XDG_CACHE_HOME", "VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "CUDA_CACHE_PATH"):
        assert f"{var}=/home/vllm/.cache" in env
    assert "HF_HOME=/models/cache" in env
    assert check_non_root_user(cpu, ("vllm",)) == []
    assert check_no_compilers(cpu, ("vllm",), CPU_COMPILERS) == []
    assert check_no_compilers(cpu, ("vllm",)) != []  # the exception is explicit, not a blind spot
    assert check_apt_hygiene(cpu, ("vllm",)) == []


def test_real_dockerfile_passes_every_structural_check(dockerfile_text: str) -> None:
    df = parse(dockerfile_text)
    assert [s.name for s in df.stages] == [
        *("builder", "gateway", "simulator", "vllm-base-cuda", "wheelhouse", "vllm-base-cpu", "vllm"),
        *("pipeline-builder", "pipeline"),
    ]
    assert df.stage("gateway").base == df.stage("builder").base  # the venv's interpreter path must match
    assert df.stage("pipeline").base == df.stage("builder").base
    assert df.stage("simulator").parent is df.stage("gateway")
    assert df.stage("pipeline-builder").parent is df.stage("builder")
    problems = [msg for check in ALL_CHECKS for msg in check(df)]
    assert problems == []


# (description, replace this, with that, check, expected fragment of the violation)
PLANTED: list[tuple[str, str, str, Callable[[Dockerfile], list[str]], str]] = [
    (
        "unpinned base",
        "python:3.11-slim-bookworm@sha256:",
        "python:3.11-slim-bookworm#",
        check_base_images_pinned,
        "not pinned",
    ),
    ("latest tag", "vllm/vllm-openai:v0.11.0@", "vllm/vllm-openai:latest@", check_base_images_pinned, "latest"),
    (
        "unpinned COPY --from image",
        "COPY --from=builder /opt/venv",
        "COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /bin/\nCOPY --from=builder /opt/venv",
        check_base_images_pinned,
        "COPY --from=ghcr.io",
    ),
    ("missing target", "AS vllm\n", "AS gpu\n", lambda df: check_targets(df, ("gateway", "vllm")), "target vllm"),
    ("root user", "USER 10001:10001\nEXPOSE 8080", "USER root\nEXPOSE 8080", lambda df: check_non_root_user(df, SHIPPED), "gateway"),
    ("uid 0", "USER 10001:10001\nEXPOSE 8000\nHEALTHCHECK --interval=30s --timeout=5s", "USER 0\nEXPOSE 8000\nHEALTHCHECK --interval=30s --timeout=5s", lambda df: check_non_root_user(df, SHIPPED), "vllm: USER 0 is root"),
    ("secret ENV", "DO_NOT_TRACK=1", "DO_NOT_TRACK=1 \\\n    HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz", check_no_secrets, "HF_TOKEN"),
    ("secret ARG", "ARG REVISION=unknown", "ARG REVISION=unknown\nARG GITHUB_TOKEN", check_no_secrets, "GITHUB_TOKEN"),
    (
        "compiler in runtime",
        "RUN groupadd --system --gid 10001 app",
        "RUN apt-get update && apt-get install -y --no-install-recommends gcc=12.2.0-14 libpq-dev=15.0 && rm -rf /var/lib/apt/lists/*\nRUN groupadd --system --gid 10001 app",
        lambda df: check_no_compilers(df, SHIPPED),
        "gcc",
    ),
    ("missing OCI label", 'org.opencontainers.image.revision="${REVISION}" \\\n', "", lambda df: check_oci_labels(df, ("gateway",)), "revision"),
    ("runtime FROM builder", "FROM ${PYTHON_IMAGE} AS gateway", "FROM builder AS gateway", lambda df: check_builder_separate(df, "gateway", "builder"), "built FROM builder"),
    ("pipeline FROM its builder", "FROM ${PYTHON_IMAGE} AS pipeline", "FROM pipeline-builder AS pipeline", lambda df: check_builder_separate(df, "pipeline", "pipeline-builder"), "built FROM pipeline-builder"),
    ("pipeline as root", "USER 10001:10001\nEXPOSE 9095", "USER root\nEXPOSE 9095", lambda df: check_non_root_user(df, SHIPPED), "pipeline"),
    ("pipeline compiler", "git openssh-client", "git openssh-client build-essential", lambda df: check_no_compilers(df, SHIPPED), "build-essential"),
    ("pipeline recommends", "install -y --no-install-recommends git", "install -y git", lambda df: check_apt_hygiene(df, SHIPPED), "without --no-install-recommends"),
    ("pipeline apt lists", "    && rm -rf /var/lib/apt/lists/*\nRUN groupadd", "RUN groupadd", lambda df: check_apt_hygiene(df, SHIPPED), "apt lists not removed"),
    ("pipeline OCI label", 'org.opencontainers.image.title="llm-pipeline" \\\n', "", lambda df: check_oci_labels(df, ("pipeline",)), "pipeline: missing OCI labels title"),
]  # fmt: skip


@pytest.mark.parametrize(("desc", "old", "new", "check", "fragment"), PLANTED, ids=[p[0] for p in PLANTED])
def test_planted_violation_is_caught(
    dockerfile_text: str, desc: str, old: str, new: str, check: Callable[[Dockerfile], list[str]], fragment: str
) -> None:
    assert old in dockerfile_text, f"planting '{desc}' needs {old!r} in the Dockerfile"
    assert check(parse(dockerfile_text)) == []
    problems = check(parse(dockerfile_text.replace(old, new, 1)))
    assert any(fragment in p for p in problems), problems


def test_dockerignore_keeps_the_context_minimal(repo_root: Path) -> None:
    rules = (repo_root / ".dockerignore").read_text()
    for path in (".venv/bin/python", ".git/HEAD", ".tools/bin/helm", ".runs/x/evidence.json", "tests/conftest.py",
                 ".env", "app/gateway/__pycache__/x.cpython-311.pyc", "app/.env", "README.md", ".gitops/env"):  # fmt: skip
        assert dockerignore_excludes(rules, path), f"{path} would be sent to the build context"
    assert dockerignore_excludes(rules, "pipeline/dagger/pyproject.toml")  # its own project, not in the image
    for path in ("pyproject.toml", "uv.lock", "app/simulator/server.py", "app/__init__.py", "pipeline/__main__.py",
                 "pipeline/controller/__init__.py", "policies/promotion.rego", "loadtests/slo.py"):  # fmt: skip
        assert not dockerignore_excludes(rules, path), f"{path} is needed by app/Dockerfile but ignored"


def test_dockerignore_matcher_semantics() -> None:
    rules = "*\n!app/\n**/__pycache__\n"
    assert dockerignore_excludes(rules, "x/y")
    assert not dockerignore_excludes(rules, "app/a.py")
    assert dockerignore_excludes(rules, "app/sub/__pycache__/a.pyc")


def _hadolint(path: Path) -> list[dict[str, object]]:
    r = subprocess.run(
        [str(BIN / "hadolint"), "-f", "json", "--no-fail", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    findings: list[dict[str, object]] = json.loads(r.stdout or "[]")
    return findings


def _trivy_high(target: Path, cache: Path) -> list[dict[str, object]]:
    """HIGH/CRITICAL misconfigurations from `trivy config` (embedded checks; offline is fine)."""
    r = subprocess.run(
        [str(BIN / "trivy"), "config", "--quiet", "--skip-check-update", "--cache-dir", str(cache),
         "--severity", "HIGH,CRITICAL", "--format", "json", str(target)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    found: list[dict[str, object]] = []
    for result in report.get("Results") or []:
        found += result.get("Misconfigurations") or []
    return found


@pytest.mark.slow
def test_hadolint_clean_and_catches_a_bad_file(repo_root: Path, tmp_path: Path) -> None:
    findings = _hadolint(repo_root / "app" / "Dockerfile")
    assert [f for f in findings if f["level"] in ("error", "warning")] == [], findings
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install -y gcc\nUSER root\n")
    codes = {f["code"] for f in _hadolint(bad)}
    assert {"DL3007", "DL3008", "DL3002"} <= codes, codes


@pytest.mark.slow
def test_trivy_config_clean_and_catches_a_bad_file(repo_root: Path, tmp_path: Path) -> None:
    assert _trivy_high(repo_root / "app", tmp_path / "cache") == []
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    (bad_dir / "Dockerfile").write_text('FROM python:3.11-slim\nRUN apt-get update\nUSER root\nCMD ["python"]\n')
    ids = {m["ID"] for m in _trivy_high(bad_dir, tmp_path / "cache")}
    assert "DS-0002" in ids or "DS002" in ids, ids  # "image user should not be root"
