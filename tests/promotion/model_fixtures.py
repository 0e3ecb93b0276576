"""Releases that differ only by their model artifact, and the eval results that vouch for them
(the shape pipeline/stages/eval.py records under evidence["eval"], docs/models.md)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline.core.context import RunContext
from pipeline.core.result import StageResult, Status
from pipeline.gitops.release import Release
from pipeline.stages import promote
from tests.promotion.conftest import ci_evidence

REGISTRY_MODEL = "127.0.0.1:5000/model"


def digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def with_model(rel: Release, name: str, *, n: int | None = None) -> Release:
    """`rel` serving model artifact `name` (same images); `n` gives it a release id and commit of its own."""
    data = rel.model_dump()
    data.update(
        model_revision=hashlib.sha256(name.encode()).hexdigest()[:40],
        model_repository=REGISTRY_MODEL,
        model_digest=digest(f"manifest-{name}"),
        model_content_digest=digest(f"content-{name}"),
    )
    if n is not None:
        data.update(id=f"0.{n}.0+g{n:07d}", commit=f"{n:040d}")
    return Release.model_validate(data)


def eval_result(
    candidate: Release, baseline: Release | None, *, verdict: str = "pass", score: float = 0.95
) -> StageResult:
    """An eval stage result: `candidate` against `baseline` (None = floor only), as the eval stage records it."""
    base = (
        {"score": 0.94, "correct": 113, "content_digest": baseline.model_content_digest, "source": "env"}
        if baseline is not None
        else None
    )
    return StageResult(
        stage="eval",
        status=Status.PASSED if verdict == "pass" else Status.FAILED,
        summary=f"eval {verdict}",
        evidence={
            "eval": {
                "verdict": verdict,
                "reasons": [] if verdict == "pass" else ["candidate significantly worse than baseline"],
                "candidate": {
                    "score": score,
                    "correct": round(score * 120),
                    "content_digest": candidate.model_content_digest,
                    "source": "artifact",
                },
                "baseline": base,
                "n_items": 120,
                "mcnemar": {"b": 2, "c": 1, "statistic": 1.0, "p_value": 0.5},
                "floor": 0.9,
                "alpha": 0.05,
            }
        },
    )


def to_dev(remote: str, run_dir: Path, rel: Release, evals: dict[str, StageResult] | None = None) -> StageResult:
    """ci → dev with the ci gates of `rel` and these eval results."""
    evidence = {**ci_evidence(rel=rel), **(evals or {})}
    opts = promote.PromoteOptions(to="dev", release=rel, evidence=evidence, gitops_repo=remote, actor="ci-bot")
    return promote.run(opts, RunContext(run_dir=run_dir))
