"""How many model-serving pods a Rollout's canary can run at once, by Argo Rollouts' own replica arithmetic.

A GPU-bound pod that does not fit stays Pending, so the canary must stay within the env's replicas plus an
explicit surge budget (`rollout.surge`, rendered as the Rollout annotation `<labelDomain>/model-pod-surge`).
Mirrored from argoproj/argo-rollouts utils/replicaset/canary.go (checked at v1.8.0 and master):

- basic canary (no trafficRouting): CalculateReplicaCountsForBasicCanary never scales up past
  `maxReplicaCountAllowed = spec.replicas + maxSurge` (MaxSurge resolves a percentage rounding up).
- traffic-routed canary with dynamicStableScale: CalculateReplicaCountsForTrafficRoutedCanary gives the canary
  ceil(weight x replicas / 100) (setCanaryScale weight, or the setWeight) and the stable the larger of its
  desired and its *actual* traffic share. Traffic moves only once the canary's pods are available, so moving
  from weight a to b runs ceil(b R/100) + ceil((100-a) R/100) pods, and an abort at weight w scales the stable
  back to R before traffic (and then the canary) leaves the canary: R + ceil(w R/100).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SURGE_ANNOTATION = "model-pod-surge"  # <labelDomain>/model-pod-surge on the Rollout


@dataclass(frozen=True)
class Peak:
    """The most model-serving pods at once for `replicas`, and when."""

    replicas: int
    pods: int
    when: str


def weight_to_replicas(replicas: int, weight: int, max_weight: int = 100) -> int:
    """trafficWeightToReplicas: rounds up."""
    return math.ceil(weight * replicas / max_weight)


def resolve_surge(value: int | str | None, replicas: int) -> int:
    """MaxSurge of a Rollout: an int, or "N%" of replicas rounded up; upstream's default is 25%."""
    if value is None:
        value = "25%"
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(int(value[:-1]) * replicas / 100)
    return int(value)


def set_weights(steps: Sequence[Mapping[str, Any]]) -> list[int]:
    """The traffic weights a canary's steps go through, in order."""
    return [int(s["setWeight"]) for s in steps if "setWeight" in s]


def peak_pods(canary: Mapping[str, Any], replicas: int) -> Peak:
    """The most pods the canary strategy runs at once for spec.replicas = replicas."""
    if not canary.get("trafficRouting"):
        surge = resolve_surge(canary.get("maxSurge"), replicas)
        return Peak(replicas, replicas + surge, f"any step (maxSurge {surge})")
    weights = set_weights(canary.get("steps") or [])
    if not canary.get("dynamicStableScale"):
        # The stable stays at 100 %: every canary pod is on top of it.
        top = max([*weights, 100])
        return Peak(replicas, replicas + weight_to_replicas(replicas, top), "stable kept at full scale")
    best = Peak(replicas, replicas, "no step")
    previous = 0
    for weight in [*weights, 100]:
        moving = weight_to_replicas(replicas, weight) + weight_to_replicas(replicas, 100 - previous)
        if moving > best.pods:
            best = Peak(replicas, moving, f"setWeight {previous} -> {weight}")
        if weight < 100:
            aborting = replicas + weight_to_replicas(replicas, weight)
            if aborting > best.pods:
                best = Peak(replicas, aborting, f"abort at setWeight {weight}")
        previous = weight
    return best


def problems(rollout: Mapping[str, Any], replica_range: Sequence[int], surge: int) -> list[str]:
    """Replica counts in range for which the canary would run more than replicas + surge pods."""
    canary = ((rollout.get("spec") or {}).get("strategy") or {}).get("canary")
    name = (rollout.get("metadata") or {}).get("name", "?")
    if canary is None:
        return [f"Rollout <{name}>: no canary strategy"]
    out = []
    for replicas in replica_range:
        peak = peak_pods(canary, replicas)
        if peak.pods > replicas + surge:
            out.append(
                f"Rollout <{name}>: {peak.pods} model-serving pods at {replicas} replica(s) ({peak.when}) exceed "
                f"replicas + surge budget {surge}; raise rollout.surge to {peak.pods - replicas} or route by replica ratio (surge 0)"
            )
            break
    return out
