"""Shared model of the GitOps environments: pins, evidence, freeze state, history, policy.

Used by `promote`, `rollback`, `unfreeze`, `status` and the rollback controller, so they
all read git the same way. Layout of one env in the GitOps repository:

    environments/<env>/release.yaml               the pins (pipeline.release.Release.to_values)
    environments/<env>/freeze.yaml                frozen: true|false (+ since, by, reason)
    environments/<env>/evidence/<release-id>.json gate results + promotion records for that release

Commit trailers (see docs/promotion.md) make every change answerable from `git log` alone.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import getpass
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from pipeline.gitops import Commit, GitOpsError, GitOpsRepo, Message, dump_yaml, flatten, git, load_yaml_text
from pipeline.release import Release
from pipeline.result import StageResult
from pipeline.tools import REPO_ROOT

log = logging.getLogger(__name__)

ENVS = ("dev", "staging", "prod")
# Gates whose results a release must carry (names of the pipeline stages that produce them).
GATE_STAGES = ("test", "scan", "smoke", "loadtest")
# The env of ci's own env-specific gates (its loadtest runs loadtests/slo/dev.yaml).
CI_GATE_ENV = "dev"
POLICY_DIR = REPO_ROOT / "policies"
PROMOTION_POLICY = POLICY_DIR / "promotion.rego"

# Envs whose Argo CD Application is pinned to a commit instead of following the branch: the
# ApplicationSet's generator value that holds the commit. Moved only by the pipeline, in the
# same push as the change of the env's pins (see pin_follow_up).
PIN_FILE = "environments/argocd/applicationset-llm-service.yaml"
PINNED_ENVS: dict[str, tuple[str | int, ...]] = {
    "prod": ("spec", "generators", 0, "git", "values", "prodRevision"),
}
# Further lines holding the same commit, moved together with the pin: the env's generator reads
# its release.yaml (the chart version) at the pin, so chart and values come from one commit.
PIN_MIRRORS: dict[str, tuple[tuple[str | int, ...], ...]] = {
    "prod": (("spec", "generators", 0, "git", "revision"),),
}
# Files of an env the Application reads (valueFiles): a pin "matches" when these are the same as on the branch.
APP_FILES = ("values.yaml", "release.yaml")


class PromotionError(RuntimeError):
    """A promotion/rollback cannot proceed; the message says why."""


def release_path(env: str) -> str:
    return f"environments/{env}/release.yaml"


def freeze_path(env: str) -> str:
    return f"environments/{env}/freeze.yaml"


def evidence_path(env: str, release_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", release_id)
    return f"environments/{env}/evidence/{safe}.json"


def previous_rung(env: str) -> str:
    idx = ENVS.index(env)
    return "ci" if idx == 0 else ENVS[idx - 1]


# CI systems' own record of who triggered the run, most trusted first: (variable, what it is).
CI_IDENTITY_VARS = (
    ("GITHUB_ACTOR", "GitHub Actions (GITHUB_ACTOR)"),
    ("GITLAB_USER_LOGIN", "GitLab CI (GITLAB_USER_LOGIN)"),
    ("CI_COMMIT_AUTHOR", "GitLab CI (CI_COMMIT_AUTHOR)"),
    ("BUILDKITE_BUILD_CREATOR_EMAIL", "Buildkite (BUILDKITE_BUILD_CREATOR_EMAIL)"),
)


@dataclass(frozen=True)
class Actor:
    """Who acts, and where that name came from (recorded as `Actor-Source:`)."""

    name: str
    source: str

    @property
    def overridden(self) -> bool:
        return self.source.startswith("override")


def _git_user_email(cwd: Path) -> str:
    try:
        return git("config", "--get", "user.email", cwd=cwd, check=False).strip()
    except OSError:
        return ""


def actor_identity(explicit: str | None = None, cwd: Path | None = None) -> Actor:
    """Who acts: the CI identity, else $PIPELINE_ACTOR, else `git config user.email`, else the OS user.

    `explicit` (`--actor`/`--by`) wins but is recorded as an override, so a reader of the commit
    knows the name was asserted, not derived. None of these is authenticated: see docs/promotion.md.
    """
    if explicit:
        return Actor(explicit, "override (--actor)")
    for var, what in CI_IDENTITY_VARS:
        value = os.environ.get(var, "").strip()
        if value:
            return Actor(value, what)
    env = os.environ.get("PIPELINE_ACTOR", "").strip()
    if env:
        return Actor(env, "override ($PIPELINE_ACTOR)")
    email = _git_user_email(cwd or REPO_ROOT)
    if email:
        return Actor(email, "git config user.email")
    try:
        return Actor(getpass.getuser(), "OS user")
    except (KeyError, OSError):
        return Actor("unknown", "none found")


def actor_name(explicit: str | None = None) -> str:
    """The name of `actor_identity(explicit)`."""
    return actor_identity(explicit).name


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- reading an env


def validate_env_yaml(repo: GitOpsRepo, env: str) -> None:
    """Every YAML file of the env must parse (Argo CD would fail on it anyway): refuse early."""
    env_dir = repo.file(f"environments/{env}")
    if not env_dir.is_dir():
        raise GitOpsError(f"environments/{env}/ does not exist in the GitOps repository")
    for path in sorted(env_dir.rglob("*.y*ml")):
        rel = str(path.relative_to(repo.path))
        load_yaml_text(path.read_text(), rel)


def read_release(repo: GitOpsRepo, env: str) -> Release | None:
    """The pinned release of `env`, or None if nothing valid is pinned yet (placeholders)."""
    path = repo.file(release_path(env))
    if not path.exists():
        return None
    values = load_yaml_text(path.read_text(), release_path(env)) or {}
    if not isinstance(values, Mapping):
        raise GitOpsError(f"{release_path(env)}: expected a mapping at the top level")
    try:
        rel = Release.from_values(json.loads(json.dumps(values, default=str)))
    except ValidationError:
        return None
    # The seed files carry a syntactically valid placeholder (all-zero commit): nothing promoted yet.
    if not rel.id or set(rel.commit) <= {"0"}:
        return None
    return rel


def same_pins(a: Release | None, b: Release | None) -> bool:
    if a is None or b is None:
        return False
    keys = ("id", "gateway_digest", "vllm_digest", "model_revision", "chart_version")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def pin_updates(rel: Release) -> dict[tuple[str, ...], Any]:
    """Exactly the keys a promotion may change in release.yaml."""
    return flatten(rel.to_values())


@dataclass(frozen=True)
class Freeze:
    frozen: bool
    since: str = ""
    by: str = ""
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"frozen": self.frozen, "since": self.since, "by": self.by, "reason": self.reason}


def read_freeze(repo: GitOpsRepo, env: str) -> Freeze:
    path = repo.file(freeze_path(env))
    if not path.exists():
        return Freeze(False)
    doc = load_yaml_text(path.read_text(), freeze_path(env)) or {}
    return Freeze(
        frozen=bool(doc.get("frozen", False)),
        since=str(doc.get("since") or ""),
        by=str(doc.get("by") or ""),
        reason=str(doc.get("reason") or ""),
    )


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


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def pinned_since(repo: GitOpsRepo, env: str) -> Commit | None:
    """The commit that last changed the env's pins (promotion or rollback)."""
    commits = repo.log(release_path(env), limit=1)
    return commits[0] if commits else None


# ---------------------------------------------------------------- evidence


def _as_dict(result: StageResult | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(result, StageResult):
        return result.model_dump(mode="json")
    return dict(result)


def source_subject(root: Path, kind: str, **extra: Any) -> dict[str, Any]:
    """What a stage that ran code from the source tree exercised: commit, dirty flag, build-context digests.

    `content_digests` are exactly what `build` pins when it cannot build images, so a local
    release (`imagesBuilt: false`) can be matched to the tree a gate really ran (bind_subject).
    """
    from pipeline.stages.build import TARGETS, context_digest, git_commit

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
    from pipeline.release import DIGEST_RE
    from pipeline.stages.build import TARGETS

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


# ---------------------------------------------------------------- Argo CD sync windows


def _cron_field(spec: str, lo: int, hi: int) -> set[int]:
    out: set[int] = set()
    for part in spec.split(","):
        rng, _, step_s = part.partition("/")
        step = int(step_s) if step_s else 1
        if rng == "*":
            a, b = lo, hi
        elif "-" in rng:
            a_s, b_s = rng.split("-", 1)
            a, b = int(a_s), int(b_s)
        else:
            a = int(rng)
            b = hi if step_s else a
        out.update(range(a, b + 1, step))
    return out


def cron_matches(expr: str, t: dt.datetime) -> bool:
    """Standard 5-field cron (the dialect Argo CD sync windows use), minute resolution."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"cron expression needs 5 fields: {expr!r}")
    minute, hour, dom, month, dow = fields
    dows = {d % 7 for d in _cron_field(dow, 0, 7)}
    dom_ok = t.day in _cron_field(dom, 1, 31)
    dow_ok = (t.isoweekday() % 7) in dows
    # Cron's rule: when both day fields are restricted, either may match.
    day_ok = (dom_ok or dow_ok) if (dom != "*" and dow != "*") else (dom_ok and dow_ok)
    return (
        t.minute in _cron_field(minute, 0, 59)
        and t.hour in _cron_field(hour, 0, 23)
        and t.month in _cron_field(month, 1, 12)
        and day_ok
    )


def parse_duration(text: str) -> dt.timedelta:
    """Go-style durations as Argo CD writes them: 1h, 30m, 1h30m, 90s."""
    parts = re.findall(r"(\d+)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ValueError(f"not a duration: {text!r}")
    units = {"h": 3600, "m": 60, "s": 1}
    return dt.timedelta(seconds=sum(int(n) * units[u] for n, u in parts))


def window_start(window: Mapping[str, Any], now: dt.datetime) -> dt.datetime | None:
    """The start of the window's occurrence that is active at `now` (the latest one), or None."""
    tz = ZoneInfo(str(window.get("timeZone") or "UTC"))
    duration = parse_duration(str(window.get("duration", "0m")))
    local = now.astimezone(tz).replace(second=0, microsecond=0)
    # A window is active if one of its start minutes lies in (now - duration, now].
    steps = min(int(duration.total_seconds() // 60), 7 * 24 * 60)
    for m in range(steps):
        start = local - dt.timedelta(minutes=m)
        if cron_matches(str(window["schedule"]), start):
            return start
    return None


def window_active(window: Mapping[str, Any], now: dt.datetime) -> bool:
    return window_start(window, now) is not None


def _when(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%a %Y-%m-%d %H:%M UTC")


def _docs(repo: GitOpsRepo, rel_dir: str) -> Iterable[Mapping[str, Any]]:
    base = repo.file(rel_dir)
    if not base.is_dir():
        return
    for path in sorted(base.rglob("*.y*ml")):
        text = path.read_text()
        for chunk in re.split(r"^---\s*$", text, flags=re.M):
            if not chunk.strip():
                continue
            try:
                doc = load_yaml_text(chunk, str(path.relative_to(repo.path)))
            except GitOpsError:
                log.warning("skipping unparsable %s while reading sync windows", path.name)
                continue
            if isinstance(doc, Mapping):
                yield doc


def _app_identity(repo: GitOpsRepo, env: str) -> tuple[set[str], set[str]]:
    """Application names and namespaces the ApplicationSet generates for `env` (best effort)."""
    names, namespaces = {env, f"llm-service-{env}"}, {env, f"llm-{env}", f"llm-service-{env}"}
    for doc in _docs(repo, "environments/argocd"):
        if doc.get("kind") != "ApplicationSet":
            continue
        tmpl = (doc.get("spec") or {}).get("template") or {}

        def subst(s: object) -> str:
            return re.sub(r"\{\{\s*\.?path\.basename\s*\}\}", env, str(s))

        if (tmpl.get("metadata") or {}).get("name"):
            names.add(subst(tmpl["metadata"]["name"]))
        ns = ((tmpl.get("spec") or {}).get("destination") or {}).get("namespace")
        if ns:
            namespaces.add(subst(ns))
    return names, namespaces


def sync_windows(repo: GitOpsRepo, env: str, now: dt.datetime) -> dict[str, Any]:
    """Which AppProject sync windows apply to `env` and which are active now."""
    names, namespaces = _app_identity(repo, env)
    out: dict[str, Any] = {"active_deny": [], "active_allow": [], "allow_defined": False, "allow_windows": []}
    for doc in _docs(repo, "environments/argocd"):
        if doc.get("kind") != "AppProject":
            continue
        for w in (doc.get("spec") or {}).get("syncWindows") or []:
            apps, nss = w.get("applications") or [], w.get("namespaces") or []
            applies = any(fnmatch.fnmatch(n, g) for g in apps for n in names) or any(
                fnmatch.fnmatch(n, g) for g in nss for n in namespaces
            )
            if not applies:
                continue
            label = f"{w.get('kind')} '{w.get('schedule')}' for {w.get('duration')} ({w.get('timeZone') or 'UTC'})"
            start = window_start(w, now)
            if w.get("kind") == "allow":
                out["allow_defined"] = True
                out["allow_windows"].append(label)
                if start is not None:
                    out["active_allow"].append(label)
            elif w.get("kind") == "deny" and start is not None:
                ends = start + parse_duration(str(w.get("duration", "0m")))
                out["active_deny"].append({"window": label, "since": _when(start), "ends": _when(ends)})
    return out


# ---------------------------------------------------------------- policy


def load_policy_data(profile: str = "production") -> dict[str, Any]:
    """data.promotion from promotion.data.json, overlaid by promotion.<profile>.json if not production."""
    data: dict[str, Any] = json.loads((POLICY_DIR / "promotion.data.json").read_text())
    if profile != "production":
        overlay_file = POLICY_DIR / f"promotion.{profile}.json"
        if not overlay_file.exists():
            raise PromotionError(f"unknown policy profile {profile!r}: {overlay_file.name} does not exist")
        _deep_merge(data, json.loads(overlay_file.read_text()))
    return data


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> None:
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v)
        else:
            base[k] = v


def evaluate_policy(policy_input: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    """Run policies/promotion.rego through pipeline.policy and return every denial, sorted."""
    from pipeline import policy

    try:
        return policy.evaluate(PROMOTION_POLICY, policy.as_json(policy_input), policy.as_json(data))
    except policy.PolicyError as exc:
        raise PromotionError(f"promotion policy: {exc}") from exc


# ---------------------------------------------------------------- the prod pin (ApplicationSet)


def _pin_node(doc: Any, env: str, path: tuple[str | int, ...] | None = None) -> tuple[Any, str | int]:
    """The mapping holding the pin value of `env` (or `path`) in the ApplicationSet, and the key in it."""
    path = path or PINNED_ENVS[env]
    node = doc
    try:
        for key in path[:-1]:
            node = node[key]
    except (KeyError, IndexError, TypeError) as exc:
        raise GitOpsError(f"{PIN_FILE}: no {'.'.join(map(str, path))} (the {env} pin)") from exc
    if not isinstance(node, Mapping) or path[-1] not in node:
        raise GitOpsError(f"{PIN_FILE}: no {'.'.join(map(str, path))} (the {env} pin)")
    return node, path[-1]


def pinned_revision(repo: GitOpsRepo, env: str) -> str | None:
    """The commit the Argo CD Application of `env` is pinned to; None if `env` follows the branch."""
    if env not in PINNED_ENVS:
        return None
    path = repo.file(PIN_FILE)
    if not path.exists():
        raise GitOpsError(f"{PIN_FILE}: missing from the GitOps repository; it pins <{env}>")
    node, key = _pin_node(load_yaml_text(path.read_text(), PIN_FILE), env)
    return str(node[key])


def set_pinned_revision(repo: GitOpsRepo, env: str, sha: str) -> str | None:
    """Round-trip edit of exactly the pin line of `env` to `sha`; returns the old value, None if unchanged.

    Refuses (nothing written) if the edit would change any other byte of the file.
    """
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    path = repo.file(PIN_FILE)
    if not path.exists():
        raise GitOpsError(f"{PIN_FILE}: missing from the GitOps repository; it pins <{env}>")
    text = path.read_text()
    doc = load_yaml_text(text, PIN_FILE)
    node, key = _pin_node(doc, env)
    old = str(node[key])
    if old == sha:
        return None
    node[key] = DoubleQuotedScalarString(sha)
    keys = [key]
    for mirror in PIN_MIRRORS.get(env, ()):
        mnode, mkey = _pin_node(doc, env, mirror)
        mnode[mkey] = DoubleQuotedScalarString(sha)
        keys.append(mkey)
    new_text = dump_yaml(doc)
    before, after = text.splitlines(keepends=True), new_text.splitlines(keepends=True)
    changed = [b for a, b in zip(before, after, strict=False) if a != b]
    if (
        len(before) != len(after)
        or not 1 <= len(changed) <= len(keys)
        or any(not any(f"{k}:" in line for k in keys) for line in changed)
    ):
        raise GitOpsError(f"{PIN_FILE}: editing {key} would change other lines of the file; nothing written")
    path.write_text(new_text)
    return old


def pin_follow_up(env: str, actor: str, cause: str) -> Callable[[GitOpsRepo, str], Message | None]:
    """A transaction follow-up that moves the `env` pin to the commit carrying its new pins.

    The pin cannot live in the commit it names, so it is a second commit of the same push:
    commit A changes environments/<env>/, commit B points the ApplicationSet at A.
    """

    def follow(repo: GitOpsRepo, sha: str) -> Message | None:
        if env not in PINNED_ENVS:
            return None
        old = set_pinned_revision(repo, env, sha)
        if old is None:
            return None
        return Message(
            subject=f"pin({env}): llm-service-{env} → {sha[:12]}",
            body=f"Argo CD syncs <{env}> from {sha} ({cause}); it was pinned to {old}.",
            trailers=[("Pin-Env", env), ("Pinned-Revision", sha), ("Previous-Revision", old), ("Pinned-By", actor)],
            author=actor,
        )

    return follow


def pin_status(repo: GitOpsRepo, env: str) -> dict[str, Any]:
    """What Argo CD syncs `env` from, and whether that matches the env's pins on the branch."""
    if env not in PINNED_ENVS:
        return {"mode": "branch", "revision": repo.branch, "matches": True, "detail": f"follows {repo.branch}"}
    try:
        pin = pinned_revision(repo, env)
    except GitOpsError as exc:
        return {"mode": "pinned", "revision": None, "matches": False, "detail": str(exc)}
    assert pin is not None
    out: dict[str, Any] = {"mode": "pinned", "revision": pin, "matches": False}
    if set(pin) <= {"0"}:
        return {**out, "detail": "placeholder pin: nothing promoted yet"}
    if not git("rev-parse", "--verify", "--quiet", f"{pin}^{{commit}}", cwd=repo.path, check=False).strip():
        return {**out, "detail": f"pinned commit {pin[:12]} is not in the GitOps repository"}
    stale = [f for f in APP_FILES if _differs(repo, pin, f"environments/{env}/{f}")]
    if stale:
        return {**out, "detail": f"behind: {', '.join(stale)} changed on {repo.branch} since {pin[:12]}"}
    return {**out, "matches": True, "detail": f"pins at {pin[:12]} match {repo.branch}"}


def _differs(repo: GitOpsRepo, rev: str, rel: str) -> bool:
    """Does `rel` differ between `rev` and HEAD (added, removed or changed)?"""
    return bool(git("diff", "--name-only", rev, "HEAD", "--", rel, cwd=repo.path).strip())
