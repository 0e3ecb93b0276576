"""What a promotion or rollback ships: the env's values as Argo CD runs them now → as they will run.

Argo CD renders an env from `environments/<env>/values.yaml` + `release.yaml` at the revision it
syncs: the branch for dev/staging, the pinned commit for prod (argocd_pin). A change of that
revision ships every difference in those files, not only the pins, so `promote` and `rollback`
print the values diff and record it (commit trailers `Values-Change:`, the promotion record).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pipeline.gitops.argocd_pin import pinned_revision
from pipeline.gitops.repo import GitOpsError, GitOpsRepo, flatten, git, load_yaml_text

VALUES_FILE = "values.yaml"


def values_path(env: str) -> str:
    return f"environments/{env}/{VALUES_FILE}"


def running_revision(repo: GitOpsRepo, env: str) -> str:
    """The commit whose env files Argo CD runs now: the prod pin, else the branch head (before our commit)."""
    try:
        pin = pinned_revision(repo, env)
    except GitOpsError:
        pin = None
    if (
        pin
        and not set(pin) <= {"0"}
        and git("rev-parse", "--verify", "--quiet", f"{pin}^{{commit}}", cwd=repo.path, check=False).strip()
    ):
        return pin
    return repo.head()


def values_at(repo: GitOpsRepo, rev: str, env: str) -> dict[str, Any]:
    """The env's values.yaml at `rev` (empty when absent), as plain data."""
    text = git("show", f"{rev}:{values_path(env)}", cwd=repo.path, check=False)
    doc = load_yaml_text(text, f"{rev[:12]}:{values_path(env)}") if text.strip() else {}
    return dict(json.loads(json.dumps(doc or {}, default=str)))


def values_in_tree(repo: GitOpsRepo, env: str) -> dict[str, Any]:
    path = repo.file(values_path(env))
    if not path.exists():
        return {}
    doc = load_yaml_text(path.read_text(), values_path(env))
    return dict(json.loads(json.dumps(doc or {}, default=str)))


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """One line per changed leaf: `a.b: old → new`, `a.b: + new`, `a.b: - old`, sorted by key."""
    before, after = flatten(old), flatten(new)
    lines = []
    for key in sorted(before.keys() | after.keys()):
        name = ".".join(key)
        if key not in before:
            lines.append(f"{name}: + {json.dumps(after[key])}")
        elif key not in after:
            lines.append(f"{name}: - {json.dumps(before[key])}")
        elif before[key] != after[key]:
            lines.append(f"{name}: {json.dumps(before[key])} → {json.dumps(after[key])}")
    return lines


def shipped(repo: GitOpsRepo, env: str) -> dict[str, Any]:
    """The values diff the work copy's tree ships for `env` against what Argo CD runs now.

    `changes`: what the cluster will see; `branch_changes`: what differs from the branch head
    (a rollback drops unpromoted hand edits of the branch: they are listed, never silently lost).
    """
    running = running_revision(repo, env)
    new = values_in_tree(repo, env)
    head = repo.head()
    return {
        "against": running,
        "changes": diff(values_at(repo, running, env), new),
        "branch_changes": diff(values_at(repo, head, env), new) if head != running else [],
    }


def summary(d: Mapping[str, Any]) -> str:
    changes = list(d.get("changes") or [])
    text = "; ".join(changes) if changes else "no values change"
    dropped = list(d.get("branch_changes") or [])
    if dropped:
        text += f" (branch edits undone: {'; '.join(dropped)})"
    return f"values vs {str(d.get('against', ''))[:12]}: {text}"


def trailers(d: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = [("Values-Against", str(d.get("against", "")))]
    out += [("Values-Change", c) for c in d.get("changes") or []]
    out += [("Values-Branch-Change", c) for c in d.get("branch_changes") or []]
    return out
