"""Would a promotion outlive the process that makes it? (ci asks before promoting.)

Under the local executor the default GitOps remote is a bare repository in `.gitops/`: it
persists, so promoting into it is real. Under the Dagger executor the function container is
thrown away after the run, so a remote that is a path inside it (the default, or any local
path) would receive a commit nobody ever sees: such a promotion is SKIPPED with the reason,
never reported as PASSED.
"""

from __future__ import annotations

import os
import re

from pipeline.gitops.repo import ENV_VAR

NO_REMOTE = "no GitOps remote configured; promotion would be discarded with the container"
# scp-like `user@host:path` (git's ssh shorthand); a Windows drive letter is not a host.
_SCP_RE = re.compile(r"^[^/:]+@[^/:]+:|^[A-Za-z0-9.-]{2,}:(?!//)")


def configured_remote(gitops_repo: str | None) -> str | None:
    """--gitops-repo, else $PIPELINE_GITOPS_REPO, else None (the local default)."""
    return gitops_repo or os.environ.get(ENV_VAR) or None


def is_network_remote(url: str) -> bool:
    """A remote outside this machine: a URL other than file://, or scp-like `git@host:path`."""
    if "://" in url:
        return not url.startswith("file://")
    return bool(_SCP_RE.match(url))


def discard_reason(executor: str, gitops_repo: str | None) -> str | None:
    """Why a promotion under `executor` would be discarded, or None when it would persist."""
    if executor != "dagger":
        return None
    remote = configured_remote(gitops_repo)
    if remote is None:
        return NO_REMOTE
    if not is_network_remote(remote):
        return f"GitOps remote {remote} is a path inside the Dagger container; {NO_REMOTE.split('; ', 1)[1]}"
    return None
