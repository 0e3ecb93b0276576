"""The canary drill's targets (issue 23), in one place: what a drill result must show for its fault.

A bad canary (fault `errors` or `latency`) is aborted within ABORT_WITHIN_S of its first weight with at most
MAX_EXPOSED_FRACTION of all requests sent to it (and more than none: an abort on no canary traffic proves
nothing); a good canary (fault `none`) is promoted with no failed request and no broken stream; model pods
never exceed the env's replicas and the drill reports no problem. `drill --canary` exits by the verdict
(EXPECTED_VERDICT); ci's canary stage judges the whole result with `misses`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EXPECTED_VERDICT: dict[str, str] = {"errors": "aborted", "latency": "aborted", "none": "promoted"}
ABORT_WITHIN_S = 60.0
MAX_EXPOSED_FRACTION = 0.05


def misses(fault: str, result: Mapping[str, Any]) -> list[str]:
    """Each target a drill result (the `drill --canary --json` object) missed, with its numbers; [] = all met."""
    if fault not in EXPECTED_VERDICT:
        raise ValueError(f"fault must be one of {', '.join(EXPECTED_VERDICT)}, got {fault!r}")
    verdict = result.get("verdict")
    if verdict == "error":
        return [f"the drill could not run: {result.get('error')}"]
    out: list[str] = []
    if verdict == "paused":
        failing = result.get("failing") or {}
        out.append(
            f"paused: analysis {failing.get('metric')} was Inconclusive {failing.get('values')} "
            "(Argo Rollouts waits for a human); expected " + EXPECTED_VERDICT[fault]
        )
    elif verdict != EXPECTED_VERDICT[fault]:
        failing = result.get("failing") or {}
        why = f" ({failing.get('metric')} {failing.get('values')})" if failing else ""
        out.append(f"verdict {verdict}{why}, expected {EXPECTED_VERDICT[fault]}")
    if EXPECTED_VERDICT[fault] == "aborted":
        abort_s, exposed = result.get("abort_seconds"), float(result.get("exposed_fraction") or 0.0)
        if abort_s is None or float(abort_s) > ABORT_WITHIN_S:
            out.append(f"abort_seconds {abort_s}, target ≤ {ABORT_WITHIN_S:g}")
        if not 0 < exposed <= MAX_EXPOSED_FRACTION:
            out.append(f"exposed_fraction {exposed}, target 0 < f ≤ {MAX_EXPOSED_FRACTION:g}")
    else:
        for key in ("failed_requests", "broken_streams"):
            if int(result.get(key) or 0) != 0:
                out.append(f"{key} {result.get(key)}, target 0")
    pods, replicas = int(result.get("max_model_pods") or 0), int(result.get("replicas") or 0)
    if not 1 <= pods <= replicas:
        out.append(f"max_model_pods {pods}, target 1 ≤ pods ≤ replicas {replicas}")
    out += [f"problem: {p}" for p in result.get("problems") or []]
    return out
