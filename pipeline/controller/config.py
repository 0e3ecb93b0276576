"""The controller's settings; webhook credentials come from the environment or mounted secret files."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.gitops import promotion as pm
from pipeline.gitops.argocd_sync import ArgoCDConfig


@dataclass
class ControllerConfig:
    gitops_repo: str
    work_root: Path
    envs: tuple[str, ...] = pm.ENVS
    bearer_token: str | None = None
    basic_user: str | None = None
    basic_password: str | None = None
    # At most `rate_limit` automatic rollbacks per env within `rate_window` seconds.
    rate_limit: int = 1
    rate_window: float = 3600.0
    # An alert that started this long before the current pins were committed predates them.
    stale_tolerance: float = 60.0
    rollback_label: str = "rollback"
    env_label: str = "env"
    # The release the alerting series belong to (the gateway labels its metrics with its release id).
    release_label: str = "release"
    # Why requests failed; any value but `release` (e.g. idp, redis) is a dependency, not the release.
    cause_label: str = "cause"
    # Only a release promoted less than this long ago is rolled back automatically (seconds).
    bake_window: float = 4 * 3600.0
    actor: str = "rollback-controller"
    audit_file: Path | None = None
    attempts: int = 5
    # Argo CD API to request the sync of a rollback (None: wait for Argo CD's polling).
    argocd: ArgoCDConfig | None = None
    # Wall clock of sync-window decisions (tests pin it to a weekend).
    clock: Callable[[], dt.datetime] = pm.utcnow

    @classmethod
    def from_env(cls, gitops_repo: str, work_root: Path, **kw: Any) -> ControllerConfig:
        """Credentials from the environment or mounted secret files (never from argv)."""

        def secret(name: str) -> str | None:
            path = os.environ.get(f"{name}_FILE")
            if path:
                return Path(path).read_text().strip()
            return os.environ.get(name) or None

        kw.setdefault("argocd", ArgoCDConfig.from_env())
        return cls(
            gitops_repo=gitops_repo,
            work_root=work_root,
            bearer_token=secret("ROLLBACK_CONTROLLER_TOKEN"),
            basic_user=secret("ROLLBACK_CONTROLLER_BASIC_USER"),
            basic_password=secret("ROLLBACK_CONTROLLER_BASIC_PASSWORD"),
            **kw,
        )

    def auth_configured(self) -> bool:
        return bool(self.bearer_token) or bool(self.basic_user and self.basic_password)
