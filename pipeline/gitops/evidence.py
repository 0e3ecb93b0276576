"""Promotion evidence: what each gate exercised (subjects), how it binds to a release, the bundle
the promotion policy reads, and gate results attached to an already-promoted release.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.result import StageResult
from pipeline.gitops.promotion import (
    CI_GATE_ENV,
    Actor,
    PromotionError,
    evidence_path,
    iso,
    read_release,
    release_path,
    utcnow,
    validate_env_yaml,
    write_json,
)
from pipeline.gitops.release import Release
from pipeline.gitops.repo import GitOpsError, GitOpsRepo, Message


def _as_dict(result: StageResult | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(result, StageResult):
        return result.model_dump(mode="json")
    return dict(result)


def source_subject(root: Path, kind: str, **extra: Any) -> dict[str, Any]:
    """What a stage that ran code from the source tree exercised: commit, dirty flag, build-context digests.

    `content_digests` are exactly what `build` pins when it cannot build images, so a local
    release (`imagesBuilt: false`) can be matched to the tree a gate really ran (bind_subject).
    """
    from pipeline.artifacts.source import TARGETS, context_digest, git_commit

    commit, dirty = git_commit(root)
    return {
        "kind": kind,
        "commit": commit,
        "dirty": dirty,
        "content_digests": {t: context_digest(root, t) for t in TARGETS},
        **extra,
    }


# How a `--target` subject came to name image digests (smoke/loadtest `--subject-digests`).
DIGESTS_ASSERTED_BY = (
    "--subject-digests: asserted by the caller that started the services at --target "
    "(the stage cannot see which images serve a URL)"
)


def parse_subject_digests(text: str) -> dict[str, str]:
    """`gateway=sha256:...,vllm=sha256:...` → {"gateway": ..., "vllm": ...}; ValueError names what is wrong."""
    from pipeline.artifacts.source import TARGETS
    from pipeline.gitops.release import DIGEST_RE

    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, digest = item.partition("=")
        if not sep or name not in TARGETS:
            raise ValueError(f"expected IMAGE=sha256:<64 hex> with IMAGE one of {', '.join(TARGETS)}; got {item!r}")
        if not DIGEST_RE.match(digest):
            raise ValueError(f"{name}: not an image digest (sha256:<64 hex>): {digest!r}")
        if out.get(name, digest) != digest:
            raise ValueError(f"{name} given twice with different digests")
        out[name] = digest
    if not out:
        raise ValueError("no IMAGE=DIGEST pair given")
    return out


def with_asserted_digests(subject: Mapping[str, Any], digests: Mapping[str, str]) -> dict[str, Any]:
    """A `--target` subject naming the image digests the caller says serve the target (recorded as asserted)."""
    out = dict(subject)
    out.update({f"{name}_digest": d for name, d in sorted(digests.items())})
    out["digests_asserted_by"] = DIGESTS_ASSERTED_BY
    return out


def bind_subject(subject: Mapping[str, Any], rel: Release) -> dict[str, Any]:
    """Name `rel` in a subject when the gate truly ran that release's source; otherwise leave it unnamed.

    Only for local releases (`imagesBuilt: false`), whose pins ARE content digests of the build
    context: same commit and same digests means the gate ran exactly what the release pins.
    Never copies digests from `rel`: a gate on registry images must have recorded them itself.
    """
    out = dict(subject)
    if out.get("release_id"):
        return out
    digests = out.get("content_digests") or {}
    if (
        not rel.images_built
        and out.get("commit") == rel.commit
        and digests.get("gateway") == rel.gateway_digest
        and digests.get("vllm") == rel.vllm_digest
    ):
        out["release_id"] = rel.id
        out["bound_by"] = "the source tree it ran has the release's build-context digests and commit"
    return out


def gate_record(
    name: str,
    raw: StageResult | Mapping[str, Any],
    run_id: str,
    rel: Release | None,
    fallback_subject: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One gate of an evidence bundle: outcome + the subject the stage itself recorded (evidence.subject)."""
    r = _as_dict(raw)
    ev = r.get("evidence") if isinstance(r.get("evidence"), Mapping) else {}
    assert isinstance(ev, Mapping)
    subject: dict[str, Any] | None = dict(ev["subject"]) if isinstance(ev.get("subject"), Mapping) else None
    if subject is None and fallback_subject is not None:
        subject = dict(fallback_subject)
    if subject is not None and rel is not None:
        subject = bind_subject(subject, rel)
    skipped = [c.get("name") for c in r.get("checks", []) if c.get("status") == "skipped"]
    # An eval gate keeps its result object (verdict, scores, both content digests): the model rule reads it.
    model_eval = {"eval": dict(ev["eval"])} if isinstance(ev.get("eval"), Mapping) else {}
    return {
        "stage": str(r.get("stage") or name),
        "env": ev.get("env"),
        "status": str(r.get("status", "unknown")),
        "summary": str(r.get("summary", "")),
        "numbers": r.get("numbers", {}),
        "skipped_checks": skipped,
        "cached": bool(r.get("cached", False)),
        "run_id": run_id,
        # What the stage exercised, as it recorded it (None: it recorded nothing → policy refuses).
        "subject": subject,
        **model_eval,
    }


def evidence_bundle(
    rel: Release,
    results: Mapping[str, StageResult | Mapping[str, Any]],
    run_id: str,
    fallback_subject: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The bundle a ci run hands to the dev promotion: each gate with the subject it recorded.

    `fallback_subject` (the ci run's source tree) stands in for stages that record none of their
    own (marked `recorded_by: ci`); the policy decides whether that subject is good enough.
    """
    gates = {name: gate_record(name, raw, run_id, rel, fallback_subject) for name, raw in results.items()}
    return {"schema": 2, "release": rel.model_dump(mode="json"), "run_id": run_id, "gates": gates, "promotions": []}


def gate_key(stage: str, env: str | None) -> str:
    """Attached gates are keyed `<stage>@<env>` (e.g. `loadtest@staging`); ci's keep their stage name."""
    return f"{stage}@{env}" if env else stage


def complete_deployment(raw: dict[str, Any], rel: Release, pins_from: str) -> None:
    """A `deployment` subject (load sent to an env's URL) names the pins git says that env runs.

    That the URL serves exactly those pins is an assumption (Argo CD synced and healthy at that
    revision), recorded as `pins_from` so a reader can check it.
    """
    ev = raw.get("evidence")
    subject = ev.get("subject") if isinstance(ev, dict) else None
    if isinstance(subject, dict) and subject.get("kind") == "deployment":
        # Digests the caller asserted (--subject-digests) stay: if they differ from the pins, policy says so.
        for key in ("gateway_digest", "vllm_digest"):
            subject.setdefault(key, getattr(rel, key))
        subject.update(release_id=rel.id, commit=rel.commit, model_revision=rel.model_revision, pins_from=pins_from)


def merge_stage_files(
    bundle: dict[str, Any], files: Sequence[Path], rel: Release, run_id: str, source: str | None = None
) -> None:
    """Attach extra stage results (e.g. a staging load test) given as StageResult JSON files.

    Each keeps the subject its stage recorded; a file without one is kept as is and refused by policy.
    `source` None means a ci → dev promotion from files: the results ARE the ci run's gates, keyed
    by stage name like ci's own (`loadtest`, not `loadtest@dev`), so the required gates find them
    (a result of another env, e.g. a staging load test, keeps `<stage>@<env>`).
    Otherwise they are attached gates of `source`'s release, keyed `<stage>@<env>`.
    """
    for f in files:
        data = json.loads(Path(f).read_text())
        if not isinstance(data, dict):
            raise PromotionError(f"{f}: not a StageResult JSON object")
        if source:
            complete_deployment(data, rel, release_path(source))
        rec = gate_record(str(data.get("stage") or Path(f).stem), data, str(data.get("run_id") or run_id), rel)
        ci_gate = source is None and rec["env"] in (None, CI_GATE_ENV)
        key = rec["stage"] if ci_gate else gate_key(rec["stage"], rec["env"])
        bundle.setdefault("gates", {})[key] = rec


def source_slo_keys(bundle: Mapping[str, Any], source: str) -> list[str]:
    """Keys of the loadtest (SLO) gates of `source` in a bundle (what the source-env SLO rule reads)."""
    return [
        str(k)
        for k, g in (bundle.get("gates") or {}).items()
        if isinstance(g, Mapping) and g.get("stage", k) == "loadtest" and g.get("env") == source
    ]


def attached_gate_path(env: str, release_id: str, key: str) -> str:
    """Gates attached after the promotion live beside the bundle, one file each.

    Separate files keep the promotion commit's bundle untouched, so a rollback's revert of that
    commit never conflicts with later evidence.
    """
    base = evidence_path(env, release_id).removesuffix(".json")
    return f"{base}.gates/{re.sub(r'[^A-Za-z0-9._@+-]', '_', key)}.json"


@dataclass
class Attached:
    sha: str | None
    release: Release
    key: str
    path: str
    record: dict[str, Any]


def attach_result(
    remote: str, work: Path, env: str, result: StageResult, run_id: str, actor: Actor, attempts: int = 5
) -> Attached:
    """Append a stage result to the evidence of the release pinned in `env`, as one GitOps commit.

    Atomic like a promotion (fresh base → write → commit → push, retried). A `deployment`
    subject (the stage loaded `--target`, the env's URL) is completed with the pins git says
    that env runs, and says so (`pins_from`); a local run keeps its own source subject.
    """
    box: dict[str, Any] = {}

    def mutate(repo: GitOpsRepo) -> Message | None:
        box.clear()
        validate_env_yaml(repo, env)
        rel = read_release(repo, env)
        if rel is None:
            raise PromotionError(
                f"nothing is pinned in <{env}>: promote a release into {env} before attaching evidence"
            )
        raw = result.model_dump(mode="json")
        complete_deployment(raw, rel, f"{release_path(env)}@{repo.head()[:12]}")
        rec = gate_record(result.stage, raw, run_id, rel)
        key = gate_key(result.stage, env)
        path = attached_gate_path(env, rel.id, key)
        rec.update(attached_at=iso(utcnow()), attached_by=actor.name)
        write_json(repo.file(path), rec)
        box.update(release=rel, key=key, path=path, record=rec)
        return Message(
            subject=f"evidence({env}): {key} {rec['status']} for {rel.id}",
            body=f"{result.stage} result for release {rel.id} as pinned in {env}.\n\n{rec['summary']}"[:2000],
            trailers=[
                ("Evidence-Env", env),
                ("Evidence-Gate", key),
                ("Gate-Status", str(rec["status"])),
                ("Release-Id", rel.id),
                ("Subject-Kind", str((rec.get("subject") or {}).get("kind", "none"))),
                ("Run-Id", run_id),
                ("Recorded-By", actor.name),
                ("Actor-Source", actor.source),
                ("Evidence", path),
            ],
            author=actor.name,
        )

    tx = GitOpsRepo(remote, work).transact(mutate, attempts=attempts)
    return Attached(tx.sha, box["release"], box["key"], box["path"], box["record"])


def read_evidence(repo: GitOpsRepo, env: str, release_id: str) -> dict[str, Any] | None:
    """The evidence bundle of `release_id` in `env`, with the gates attached after its promotion merged in."""
    path = repo.file(evidence_path(env, release_id))
    data: dict[str, Any] | None = None
    if path.exists():
        try:
            loaded = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise GitOpsError(f"{evidence_path(env, release_id)}: not valid JSON: {exc}") from exc
        data = loaded if isinstance(loaded, dict) else None
    attached_dir = repo.file(attached_gate_path(env, release_id, "x")).parent
    if attached_dir.is_dir():
        if data is None:
            data = {"release": {}, "gates": {}, "promotions": []}
        gates = data.setdefault("gates", {})
        for f in sorted(attached_dir.glob("*.json")):
            try:
                rec = json.loads(f.read_text())
            except json.JSONDecodeError as exc:
                raise GitOpsError(f"{f.relative_to(repo.path)}: not valid JSON: {exc}") from exc
            if isinstance(rec, dict):
                gates[f.stem] = rec
    return data
