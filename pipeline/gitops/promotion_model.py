"""The model side of a promotion: what model an env serves, the model diff a promotion ships, and the
eval that must vouch for a model change.

The rule (policies/promotion.rego, "the model"; docs/models.md): a release whose model content
digest (release pin `vllm.model.artifact.contentDigest`) differs from the target env's needs an eval
gate in its evidence with verdict pass, `candidate.content_digest` == the release's and
`baseline.content_digest` == the env's (no baseline needed while the env has no model artifact).
The policy decides; `denials()` is the same rule in Python, the promote stage's backstop for a
policy file that lost it (a refused model change must never be pushed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.gitops.release import Release
from pipeline.gitops.repo import GitOpsRepo, load_yaml_text

# (label, Release field) of the model pins, in the order the diff shows them.
MODEL_PINS = (
    ("revision", "model_revision"),
    ("repository", "model_repository"),
    ("artifact digest", "model_digest"),
    ("content digest", "model_content_digest"),
)


def content_digest(rel: Release | None) -> str | None:
    return rel.model_content_digest if rel is not None else None


def target_input(current: Release | None) -> dict[str, Any]:
    """`input.target_model` of the promotion policy: the model the target env serves now."""
    return {
        "release_id": current.id if current else None,
        "revision": current.model_revision if current else None,
        "digest": current.model_digest if current else None,
        "content_digest": content_digest(current),
    }


def env_model_id(repo: GitOpsRepo, env: str) -> str | None:
    """The model id the env's chart values name (`vllm.model.id`; the release pins revision and artifact)."""
    for name in ("values.yaml", "release.yaml"):
        path = repo.file(f"environments/{env}/{name}")
        if not path.is_file():
            continue
        doc = load_yaml_text(path.read_text(), str(path.relative_to(repo.path))) or {}
        model = ((doc.get("vllm") or {}).get("model") or {}) if isinstance(doc, Mapping) else {}
        if isinstance(model, Mapping) and model.get("id"):
            return str(model["id"])
    return None


def eval_gates(bundle: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The eval gates of an evidence bundle (stage `eval`: `eval` from ci, `eval@<env>` attached), by key."""
    gates = bundle.get("gates") or {}
    return [
        (str(k), dict(g))
        for k, g in sorted(gates.items())
        if isinstance(g, Mapping) and g.get("stage", k) == "eval" and isinstance(g.get("eval"), Mapping)
    ]


def _baseline_digest(ev: Mapping[str, Any]) -> str | None:
    base = ev.get("baseline")
    return str(base.get("content_digest")) if isinstance(base, Mapping) and base.get("content_digest") else None


def _candidate_digest(ev: Mapping[str, Any]) -> str | None:
    cand = ev.get("candidate")
    return str(cand.get("content_digest")) if isinstance(cand, Mapping) and cand.get("content_digest") else None


def vouching_eval(
    bundle: Mapping[str, Any], candidate: str | None, env_digest: str | None
) -> tuple[str, dict[str, Any]] | None:
    """The first eval gate that vouches for serving `candidate` where `env_digest` is served now."""
    if candidate is None:
        return None
    for key, gate in eval_gates(bundle):
        ev = gate["eval"]
        if gate.get("status") != "passed" or ev.get("verdict") != "pass" or _candidate_digest(ev) != candidate:
            continue
        if env_digest is None or _baseline_digest(ev) == env_digest:
            return key, gate
    return None


def _none(v: str | None) -> str:
    return v if v else "none"


def denials(rel: Release, current: Release | None, bundle: Mapping[str, Any], source: str, target: str) -> list[str]:
    """policies/promotion.rego's model rule in Python (the stage's backstop; the policy's messages say more)."""
    new, old = content_digest(rel), content_digest(current)
    if new == old:
        return []
    if new is None:
        return [
            f"release <{rel.id}> pins no model artifact (contentDigest) but <{target}> serves model content digest "
            f"{old}: a release must pin the model artifact it serves"
        ]
    if vouching_eval(bundle, new, old) is not None:
        return []
    return [
        f"release <{rel.id}> changes the model of <{target}> from content digest {_none(old)} to {new}: no passed eval "
        f"of {new} against {_none(old)} in the evidence from <{source}>"
    ]


def eval_summary(gate: tuple[str, Mapping[str, Any]] | None) -> dict[str, Any] | None:
    """The numbers of the eval that vouched (what `status` and the model diff show)."""
    if gate is None:
        return None
    key, g = gate
    ev = g["eval"]
    cand = ev.get("candidate") if isinstance(ev.get("candidate"), Mapping) else {}
    base = ev.get("baseline") if isinstance(ev.get("baseline"), Mapping) else None
    mcnemar = ev.get("mcnemar") if isinstance(ev.get("mcnemar"), Mapping) else {}
    return {
        "gate": key,
        "verdict": ev.get("verdict"),
        "score": cand.get("score"),
        "candidate_content_digest": _candidate_digest(ev),
        "baseline_score": base.get("score") if base else None,
        "baseline_content_digest": _baseline_digest(ev),
        "n_items": ev.get("n_items"),
        "p_value": mcnemar.get("p_value"),
    }


def record(rel: Release, current: Release | None, bundle: Mapping[str, Any], model_id: str | None) -> dict[str, Any]:
    """What the promotion record says of the model: its pins, what it replaced, and the eval that vouched."""
    vouched = vouching_eval(bundle, content_digest(rel), content_digest(current))
    return {
        "id": model_id,
        **{field: getattr(rel, field) for _, field in MODEL_PINS},
        "replaces_content_digest": content_digest(current),
        "changed": content_digest(rel) != content_digest(current),
        "eval": eval_summary(vouched),
    }


def diff_lines(current: Release | None, rel: Release, model: Mapping[str, Any]) -> list[str]:
    """The model diff a promotion ships, one line per pin (shown beside the values diff)."""
    lines = [f"model id: {model.get('id') or '-'}"]
    for label, field in MODEL_PINS:
        old = getattr(current, field) if current is not None else None
        new = getattr(rel, field)
        lines.append(f"{label}: {_none(old)} → {_none(new)}" if old != new else f"{label}: {_none(new)} (unchanged)")
    ev = model.get("eval")
    if ev:
        base = (
            f"baseline {ev['baseline_score']} ({ev['baseline_content_digest']})"
            if ev.get("baseline_content_digest")
            else "no baseline (floor only)"
        )
        lines.append(
            f"eval score: {ev['score']} vs {base}, {ev.get('n_items')} items, "
            f"p={ev.get('p_value')} [{ev['gate']}: {ev['verdict']}]"
        )
    elif model.get("changed"):
        lines.append("eval score: no passed eval of this model against the env's")
    else:
        lines.append("eval score: same model, no eval needed")
    return lines


def read_model(repo: GitOpsRepo, env: str, rel: Release | None, bundle: Mapping[str, Any] | None) -> dict[str, Any]:
    """Per env for `status`: model id, revision, artifact (repository + digest), content digest and the
    eval score recorded by the promotion that put the model there (git alone answers it)."""
    out: dict[str, Any] = {
        "id": env_model_id(repo, env),
        "revision": rel.model_revision if rel else None,
        "repository": rel.model_repository if rel else None,
        "artifact_digest": rel.model_digest if rel else None,
        "content_digest": content_digest(rel),
        "eval": None,
    }
    if rel is None or not bundle:
        return out
    promotions = [p for p in bundle.get("promotions") or [] if isinstance(p, Mapping) and p.get("to") == env]
    recorded = (promotions[-1].get("model") or {}) if promotions else {}
    ev = recorded.get("eval") if isinstance(recorded, Mapping) else None
    if not ev:
        # The same model as before (no eval needed) or a bundle older than model records: the best
        # passed eval of this model in the evidence, whatever its baseline.
        ev = eval_summary(vouching_eval(bundle, content_digest(rel), None))
    out["eval"] = ev
    return out
