"""The pod images of the release an env runs: what `loadtest --attach` and the drill on pods play."""

from __future__ import annotations

from pathlib import Path

from pipeline.artifacts.release_pod import PodImages, pod_images_for
from pipeline.gitops import promotion as pm
from pipeline.gitops.release import Release
from pipeline.gitops.repo import GitOpsError, GitOpsRepo
from pipeline.runtime.engine import Engine


def env_pod_images(
    remote: str,
    env: str,
    work_dir: Path,
    engine: Engine | None,
    engine_reason: str,
    registry_host: tuple[str, bool] | None,
) -> tuple[Release | None, PodImages | None, str | None]:
    """(release, its pod images, None) — the gateway by its pinned digest, the same build's simulator
    image — or (release or None, None, why they cannot be played here)."""
    try:
        repo = GitOpsRepo(remote, work_dir)
        repo.sync()
        rel = pm.read_release(repo, env)
    except (GitOpsError, pm.PromotionError, OSError) as exc:
        return None, None, f"cannot read the release of {env}: {exc}"
    if rel is None or not rel.images_built:
        return rel, None, f"{env} runs no release with built images"
    if engine is None or not engine.can_play_pods:
        return rel, None, f"no engine here plays pods ({engine_reason})"
    if registry_host is None:
        why = "the embedded registry that holds its images is not serving (`python -m pipeline registry start`)"
        return rel, None, f"{env} runs {rel.id}, but {why}"
    host, local = registry_host
    return rel, pod_images_for(rel, host, local), None
