"""The Argo CD pin of pinned envs (prod): the ApplicationSet's targetRevision per env, kept on the
GitOps commit that promoted (or rolled back) that env.

A fresh GitOps repository has no generator for a pinned env (there is no commit to pin yet, and a
generator reading a commit that does not exist stops every Application, argo-cd#19586): the env's
first promotion appends it, pinned, in the same push; later ones move its two pin lines.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.core.platform import repo_platform
from pipeline.gitops.repo import GitOpsError, GitOpsRepo, Message, dump_yaml, git, load_yaml_text

# Files of an env the Application reads (valueFiles): a pin "matches" when these are the same as on the branch.
APP_FILES = ("values.yaml", "release.yaml")
# Envs whose Argo CD Application is pinned to a commit instead of following the branch, and the
# generator value (`values.<key>`) the ApplicationSet's template reads the pin from. Moved only by
# the pipeline, in the same push as the change of the env's pins (see pin_follow_up).
PIN_FILE = "environments/argocd/applicationset-llm-service.yaml"

# The production env (platform.yaml's last) is pinned; its key keeps the name the template reads.
PINNED_ENVS: dict[str, str] = {repo_platform().production.name: "prodRevision"}
# The generator's own `revision` holds the same commit: it reads the env's release.yaml (the chart
# version) at the pin, so chart and values come from one commit.
PIN_KEYS = ("revision",)


def release_file(env: str) -> str:
    return f"environments/{env}/release.yaml"


def _generators(doc: Any) -> list[Any]:
    gens = (doc.get("spec") or {}).get("generators") if isinstance(doc, Mapping) else None
    if not isinstance(gens, list):
        raise GitOpsError(f"{PIN_FILE}: no spec.generators list")
    return gens


def pin_generator(doc: Any, env: str) -> Any:
    """The git generator reading `env`'s release.yaml by name (its pinned generator), or None before its first promotion."""
    for gen in _generators(doc):
        spec = gen.get("git") if isinstance(gen, Mapping) else None
        files = spec.get("files") if isinstance(spec, Mapping) else None
        if isinstance(files, list) and any(
            isinstance(f, Mapping) and f.get("path") == release_file(env) and not f.get("exclude") for f in files
        ):
            return spec
    return None


def _pin_of(spec: Any, env: str) -> str:
    values = spec.get("values")
    if not isinstance(values, Mapping) or PINNED_ENVS[env] not in values:
        raise GitOpsError(
            f"{PIN_FILE}: the generator of {release_file(env)} has no values.{PINNED_ENVS[env]} (the {env} pin)"
        )
    return str(values[PINNED_ENVS[env]])


def pinned_revision(repo: GitOpsRepo, env: str) -> str | None:
    """The commit the Argo CD Application of `env` is pinned to; None if `env` follows the branch or
    (a pinned env) has no generator yet: nothing promoted, so Argo CD generates no Application for it."""
    if env not in PINNED_ENVS:
        return None
    path = repo.file(PIN_FILE)
    if not path.exists():
        raise GitOpsError(f"{PIN_FILE}: missing from the GitOps repository; it pins <{env}>")
    spec = pin_generator(load_yaml_text(path.read_text(), PIN_FILE), env)
    return None if spec is None else _pin_of(spec, env)


def _new_pin_generator(doc: Any, env: str, sha: str) -> Any:
    """The generator a pinned env's first promotion appends: its release.yaml and `$values` at `sha`."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    repos = {str(g["git"].get("repoURL")) for g in _generators(doc) if isinstance(g, Mapping) and "git" in g}
    if len(repos) != 1:
        raise GitOpsError(
            f"{PIN_FILE}: cannot tell the GitOps repoURL for the {env} generator (git generators read {sorted(repos) or 'none'})"
        )
    spec = CommentedMap()
    spec["repoURL"] = repos.pop()
    spec["revision"] = DoubleQuotedScalarString(sha)
    spec["files"] = CommentedSeq([CommentedMap([("path", release_file(env))])])
    spec["values"] = CommentedMap([(PINNED_ENVS[env], DoubleQuotedScalarString(sha))])
    return CommentedMap([("git", spec)])


def set_pinned_revision(repo: GitOpsRepo, env: str, sha: str) -> str | None:
    """Round-trip edit of the pin of `env` to `sha`: returns the old pin, "" when the env had no
    generator (appended now, pinned), None if unchanged.

    Refuses (nothing written) if the edit would change any other byte of the file: a move changes
    exactly the pin lines, an append only inserts the new generator's lines.
    """
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    path = repo.file(PIN_FILE)
    if not path.exists():
        raise GitOpsError(f"{PIN_FILE}: missing from the GitOps repository; it pins <{env}>")
    text = path.read_text()
    doc = load_yaml_text(text, PIN_FILE)
    spec = pin_generator(doc, env)
    before = text.splitlines(keepends=True)
    if spec is None:
        gens: Any = _generators(doc)
        gens.append(_new_pin_generator(doc, env, sha))
        gens.yaml_set_comment_before_after_key(
            len(gens) - 1, before=f"{env}, read at its pin (appended by its first promotion).", indent=4
        )
        new_text = dump_yaml(doc)
        ops = difflib.SequenceMatcher(a=before, b=new_text.splitlines(keepends=True), autojunk=False).get_opcodes()
        if [op[0] for op in ops if op[0] != "equal"] != ["insert"]:
            raise GitOpsError(
                f"{PIN_FILE}: adding the {env} generator would change other lines of the file; nothing written"
            )
        path.write_text(new_text)
        return ""
    old = _pin_of(spec, env)
    if old == sha and str(spec.get("revision")) == sha:
        return None
    keys = [PINNED_ENVS[env], *PIN_KEYS]
    spec["values"][PINNED_ENVS[env]] = DoubleQuotedScalarString(sha)
    for key in PIN_KEYS:
        spec[key] = DoubleQuotedScalarString(sha)
    new_text = dump_yaml(doc)
    after = new_text.splitlines(keepends=True)
    changed = [b for a, b in zip(before, after, strict=False) if a != b]
    if (
        len(before) != len(after)
        or not 1 <= len(changed) <= len(keys)
        or any(not any(f"{k}:" in line for k in keys) for line in changed)
    ):
        raise GitOpsError(
            f"{PIN_FILE}: editing {PINNED_ENVS[env]} would change other lines of the file; nothing written"
        )
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
        was = f"it was pinned to {old}" if old else "its generator is new (the first pin: no Application before)"
        return Message(
            subject=f"pin({env}): llm-service-{env} → {sha[:12]}",
            body=f"Argo CD syncs <{env}> from {sha} ({cause}); {was}.",
            trailers=[
                ("Pin-Env", env),
                ("Pinned-Revision", sha),
                ("Previous-Revision", old or "none"),
                ("Pinned-By", actor),
            ],
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
    out: dict[str, Any] = {"mode": "pinned", "revision": pin, "matches": False}
    if pin is None:
        return {**out, "detail": f"no {env} generator yet: nothing promoted, Argo CD generates no Application"}
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
