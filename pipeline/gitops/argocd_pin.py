"""The Argo CD pin of pinned envs (prod): the ApplicationSet's targetRevision per env, kept on the
GitOps commit that promoted (or rolled back) that env.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pipeline.gitops.repo import GitOpsError, GitOpsRepo, Message, dump_yaml, git, load_yaml_text

# Files of an env the Application reads (valueFiles): a pin "matches" when these are the same as on the branch.
APP_FILES = ("values.yaml", "release.yaml")
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


def _pin_node(doc: Any, env: str, path: tuple[str | int, ...] | None = None) -> tuple[Any, str | int]:
    """The mapping holding the pin value of `env` in the ApplicationSet, and the key in it."""
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
