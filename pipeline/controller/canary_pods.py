"""The canary drill's model-serving pods as processes: one gateway + simulator pair per replica (what one pod
of the chart runs), each started and stopped on its own as a rollout replaces replicas.

Used when no engine or built images are at hand (the drill says so in its result). Every pair shares one
set of dev keys, so a client's token is accepted by whichever release HAProxy sends it to; each gateway
runs with GATEWAY_RELEASE of its release (the `release` label the analysis selects on). Prometheus finds
the pairs through a file_sd file rewritten atomically at every change (`write_targets`, shared with the
pod-backed canary_podman.ChartPods, which the drill prefers where an engine plays the chart's pods).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from app.gateway.tokens import DevKeys, write_dev_keys
from pipeline.runtime.contract import AUDIENCE, ISSUER
from pipeline.runtime.local_stack import Stack, local_stack


@dataclass
class ModelPod:
    name: str
    release: str
    stack: Stack
    exit: contextlib.ExitStack

    @property
    def gateway_port(self) -> int:
        return int(self.stack.gateway_url.rsplit(":", 1)[1])


class ProcessPods:
    """Start/stop model pods (gateway + simulator processes) by name; count the live ones."""

    deploy = "processes"

    def __init__(self, work: Path, namespace: str, model: str = "sim-llama") -> None:
        self.work, self.namespace, self.model = work, namespace, model
        self.keys: DevKeys = write_dev_keys(work / "keys")
        self.sd_file = work / "targets.json"
        self.pods: dict[str, ModelPod] = {}
        self.substitutions: list[str] = []  # recorded by the drill as a whole: processes, not pods
        self._lock = threading.Lock()
        self._write_targets()

    def mint(self, ttl: int) -> str:
        return self.keys.mint(sub="canary-drill", roles=["user"], issuer=ISSUER, audience=AUDIENCE, ttl_seconds=ttl)

    def start(self, name: str, release: str, simulator_args: Sequence[str]) -> ModelPod:
        exit_stack = contextlib.ExitStack()
        try:
            stack = exit_stack.enter_context(
                local_stack(
                    self.work / name,
                    model=self.model,
                    simulator_args=simulator_args,
                    gateway_env={"GATEWAY_RELEASE": release, "GATEWAY_JWT_JWKS": str(self.keys.jwks)},
                )
            )
        except BaseException:
            exit_stack.close()
            raise
        pod = ModelPod(name, release, stack, exit_stack)
        with self._lock:
            self.pods[name] = pod
        self._write_targets()
        return pod

    def stop(self, name: str) -> None:
        with self._lock:
            pod = self.pods.pop(name, None)
        self._write_targets()
        if pod is not None:
            pod.exit.close()

    def live(self) -> int:
        """Model-serving processes running now (simulators alive by PID)."""
        with self._lock:
            return sum(1 for p in self.pods.values() if p.stack.simulator is not None and p.stack.simulator.alive())

    def close(self) -> None:
        for name in list(self.pods):
            self.stop(name)

    def _write_targets(self) -> None:
        with self._lock:
            groups = [
                (p.name, [p.stack.internal_url.removeprefix("http://"), p.stack.upstream_url.removeprefix("http://")])
                for p in self.pods.values()
            ]
        write_targets(self.sd_file, groups, self.namespace)


def write_targets(sd_file: Path, pods: Sequence[tuple[str, Sequence[str]]], namespace: str = "") -> None:
    """Prometheus file_sd: each pod's targets (host:port) labelled with the drill's namespace and the pod's
    name, as the chart's ServiceMonitor/PodMonitor label them; replaced atomically (never read half-written)."""
    groups = [
        {"targets": [t], "labels": {"namespace": namespace, "pod": name}} for name, targets in pods for t in targets
    ]
    tmp = sd_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups))
    tmp.replace(sd_file)


class ServingPod(Protocol):
    """A model pod the drill's router points an HAProxy slot at."""

    name: str
    release: str

    @property
    def gateway_port(self) -> int: ...


class ModelPods(Protocol):
    """The drill's model pods: ProcessPods here, canary_podman.ChartPods on an engine that plays pods."""

    deploy: str  # "processes" | "pods"
    model: str
    substitutions: list[str]  # how a model pod differs from the chart's (one list for all of them)
    sd_file: Path

    def mint(self, ttl: int) -> str: ...
    def start(self, name: str, release: str, simulator_args: Sequence[str]) -> ServingPod: ...
    def stop(self, name: str) -> None: ...
    def live(self) -> int: ...
    def close(self) -> None: ...
