"""`status`: what runs in each env according to git, since when, who put it there, and why."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.core.context import RunContext
from pipeline.core.result import CommandResult
from pipeline.gitops import canary_record, promotion_model
from pipeline.gitops import promotion as pm
from pipeline.gitops.argocd_pin import pin_status
from pipeline.gitops.argocd_rollout import ABORTED, PAUSED, live_rollout
from pipeline.gitops.argocd_sync import ArgoCDConfig, rollout_state
from pipeline.gitops.evidence import read_evidence
from pipeline.gitops.repo import GitOpsRepo, safe_url, work_dir_for

log = logging.getLogger(__name__)

NAME = "status"
HELP = "Show per env: pinned digests and model, since when, who promoted it, evidence, frozen, Argo CD revision"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gitops-repo", metavar="URL", help="GitOps remote URL (default: $PIPELINE_GITOPS_REPO or the local one)"
    )
    # The spelling before `-o json` existed on every verb; kept so scripts keep working.
    parser.add_argument(
        "--json", dest="output", action="store_const", const="json", default=argparse.SUPPRESS, help="same as -o json"
    )


def read_only(args: argparse.Namespace) -> bool:
    return True


def sync_cell(repo: GitOpsRepo, env: str, last: Any, pin: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """Whether the cluster has caught up with the env's last change in git (held by a sync window?)."""
    expected = pin.get("revision") if pin["mode"] == "pinned" else (last.sha if last else "")
    state = rollout_state(ArgoCDConfig.from_env(), repo, env, str(expected or ""), now)
    if not (last and last.trailer("Rollback-Env") == env):
        state["detail"] = str(state["detail"]).replace("reverted in git", "changed in git")
    return state


def rollout_cell(repo: GitOpsRepo, env: str, argocd: ArgoCDConfig | None) -> dict[str, Any] | None:
    """The env's canary: git's record (rollout.yaml: state, from → to, steps) and the Rollout's live phase as
    Argo CD reports it (paused = health Suspended, aborted = Degraded "RolloutAborted: ..."). None: no Rollout."""
    record = canary_record.read(repo, env)
    live = live_rollout(argocd, env)
    if record is None and live is None:
        return None
    release = (record or {}).get("release") or {}
    plan = (record or {}).get("plan") or {}
    out: dict[str, Any] = {
        "git_state": (record or {}).get("state"),
        "from": release.get("from"),
        "to": release.get("to"),
        "steps": canary_record.steps_line(plan["steps"]) if plan.get("steps") else (record or {}).get("steps"),
        "live": live,
    }
    phase = (live or {}).get("phase")
    out["state"] = phase or out["git_state"]
    if phase == ABORTED:
        out["detail"] = (
            f"aborted: the stable release serves, git still pins {out['to'] or '?'} until it is reverted "
            f"(the rollback controller does so on an error-rate alert; by hand: rollback --env {env})"
        )
    elif phase == PAUSED:
        msg = str(((live or {}).get("health") or {}).get("message") or "")
        out["detail"] = f"paused{f' ({msg})' if msg else ''}: the canary waits for a human (promote or abort it)"
    elif phase is not None:
        out["detail"] = f"{phase} (Argo CD health {((live or {}).get('health') or {}).get('status', '?')})"
    elif live is not None and "error" in live:
        out["detail"] = f"{out['git_state']} per git; live phase unknown: Argo CD: {live['error']}"
    else:
        out["detail"] = f"{out['git_state']} per git (live phase: needs the Argo CD API)"
    return out


def collect(repo: GitOpsRepo, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    now = now or pm.utcnow()
    argocd = ArgoCDConfig.from_env()
    rows = []
    for env in pm.ENVS:
        if not repo.file(f"environments/{env}").is_dir():
            continue
        rel = pm.read_release(repo, env)
        last = pm.pinned_since(repo, env)
        freeze = pm.read_freeze(repo, env)
        evidence = read_evidence(repo, env, rel.id) if rel else None
        gates = {k: v.get("status") for k, v in (evidence or {}).get("gates", {}).items()}
        pin = pin_status(repo, env)
        by = ""
        if last:
            by = last.trailer("Promoted-By") or last.trailer("Rolled-Back-By") or last.author
        rows.append(
            {
                "env": env,
                "release": rel.id if rel else None,
                "gateway_digest": rel.gateway_digest if rel else None,
                "vllm_digest": rel.vllm_digest if rel else None,
                "model_revision": rel.model_revision if rel else None,
                # Model id, revision, artifact digest and the eval score its promotion recorded.
                "model": promotion_model.read_model(repo, env, rel, evidence),
                "images_built": rel.images_built if rel else None,
                "since": pm.iso(last.date) if last else None,
                "by": by,
                "commit": last.sha if last else None,
                "change": last.subject if last else None,
                "approved_by": last.trailer_all("Approved-By") if last else [],
                "evidence": pm.evidence_path(env, rel.id) if evidence and rel else None,
                "gates": gates,
                "frozen": freeze.as_dict(),
                # What Argo CD syncs this env from: the branch, or (prod) the pinned commit.
                "argocd_revision": pin,
                # Has the cluster caught up? "reverted in git, not yet synced: <window> until <time>".
                "sync": sync_cell(repo, env, last, pin, now),
                # The canary: git's rollout.yaml and the Rollout's live phase (None: the env has no Rollout).
                "rollout": rollout_cell(repo, env, argocd),
            }
        )
    return rows


def short(digest: str | None) -> str:
    return (digest or "-").removeprefix("sha256:")[:12]


def model_cell(m: dict[str, Any]) -> str:
    ev = m.get("eval") or {}
    score = f"eval {ev['score']} ({ev.get('gate')})" if ev.get("score") is not None else "eval -"
    artifact = f"artifact {short(m['artifact_digest'])}" if m.get("artifact_digest") else "hub (no artifact)"
    return "\n".join([m.get("id") or "-", f"rev {(m.get('revision') or '-')[:12]}", artifact, score])


def revision_cell(rev: dict[str, Any]) -> str:
    if rev["mode"] == "branch":
        return str(rev["detail"])
    pin = (rev.get("revision") or "-")[:12]
    return f"{pin} [green]matches[/green]" if rev["matches"] else f"{pin} [red]{rev['detail']}[/red]"


def main(args: argparse.Namespace, ctx: RunContext) -> CommandResult:
    repo = GitOpsRepo(
        pm.remote_for_reading(args.gitops_repo, ctx.repo_root, ctx.run_dir), work_dir_for(ctx.run_dir / "work")
    )
    repo.sync()
    rows = collect(repo)
    return CommandResult(data=rows, render=lambda console: render(console, rows, safe_url(repo.remote)))


def render(console: Console, rows: list[dict[str, Any]], remote: str) -> None:
    table = Table(title=f"GitOps status ({remote})")
    cols = (
        "env",
        "release",
        "digests (gateway / vllm)",
        "model",
        "since",
        "by",
        "evidence",
        "frozen",
        "argo cd syncs",
        "cluster",
        "rollout",
    )
    for col in cols:
        table.add_column(col, overflow="fold")
    for r in rows:
        gates = " ".join(f"{k}:{v}" for k, v in sorted(r["gates"].items())) or "-"
        frozen = r["frozen"]
        table.add_row(
            r["env"],
            escape(r["release"] or "(none)"),
            f"{short(r['gateway_digest'])} / {short(r['vllm_digest'])}",
            escape(model_cell(r["model"])),
            r["since"] or "-",
            escape(r["by"] + (f" (approved: {', '.join(r['approved_by'])})" if r["approved_by"] else "")),
            gates,
            f"[red]FROZEN[/red] by {escape(frozen['by'])}: {escape(frozen['reason'])}" if frozen["frozen"] else "no",
            revision_cell(r["argocd_revision"]),
            f"[red]{escape(str(r['sync']['detail']))}[/red]"
            if r["sync"]["state"] in ("held", "pending")
            else r["sync"]["state"],
            rollout_text(r["rollout"]),
        )
    console.print(table)


def rollout_text(ro: dict[str, Any] | None) -> str:
    if ro is None:
        return "-"
    moved = f"{ro.get('from') or '(none)'} → {ro.get('to') or '?'}"
    head = f"[red]{escape(str(ro['state']))}[/red]" if ro["state"] in (ABORTED, PAUSED) else escape(str(ro["state"]))
    return "\n".join(
        [f"{head} {escape(moved)}", escape(str(ro.get("detail") or "")), escape(str(ro.get("steps") or ""))]
    )
