"""Argo CD sync windows and the freeze of an env's Application: is a sync allowed now, and why not."""

from __future__ import annotations

import datetime as dt
import fnmatch
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any
from zoneinfo import ZoneInfo

from pipeline.gitops.repo import GitOpsError, GitOpsRepo, load_yaml_text

log = logging.getLogger(__name__)


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
                out["active_deny"].append(
                    {
                        "window": label,
                        "since": _when(start),
                        "ends": _when(ends),
                        "manual_sync": bool(w.get("manualSync", False)),
                    }
                )
    return out


def sync_hold(repo: GitOpsRepo, env: str, now: dt.datetime, *, manual: bool) -> str | None:
    """Why Argo CD would not sync `env` now ("<window> until <time>"), or None if a sync may run.

    `manual` = a sync requested through the API/CLI (allowed in a deny window with manualSync: true);
    otherwise the automated sync of the Application's syncPolicy.
    """
    found = sync_windows(repo, env, now)
    blocking = [d for d in found["active_deny"] if not (manual and d["manual_sync"])]
    if blocking:
        last = max(blocking, key=lambda d: d["ends"])
        return f"{last['window']} until {last['ends']}"
    if found["allow_defined"] and not found["active_allow"]:
        return f"outside every allow window ({'; '.join(found['allow_windows'])})"
    return None
