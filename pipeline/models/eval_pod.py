"""The eval gate's models served as the chart's pod (what `ci` runs once `build` pushed the images).

Each model is the pushed artifact, pinned by digest: the env is rendered with the run's release pins
whose model pins are that artifact's (pipeline.artifacts.release_pod.helm_template_with_pins), so the
chart's `model-fetch` init container pulls it, copies it into the model volume and checks it against the
content digest before the vllm-cpu image serves it, behind the release's gateway image. Both models of a
comparison run in the same images: only the model differs. The local profile's changes (CPU sizing, the
eval's serving arguments, dev JWKS, load-test RBAC so the env's tier limits do not throttle the suite) are
substitutions in the pod's evidence, which the run records under `served_by`.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.artifacts.release_pod import PodImages, VllmServing, release_pod
from pipeline.models.eval_gate import EvalSetupError, ModelSpec, Progress, Served, Serving
from pipeline.runtime.engine import Engine

Pins = Callable[[str, str], dict[str, Any]]


def _rbac_yaml(model: str) -> str:
    from ruamel.yaml import YAML

    from pipeline.runtime.local_stack import default_rbac

    buf = io.StringIO()
    YAML(typ="safe", pure=True).dump(default_rbac(model), buf)
    return buf.getvalue()


class PodServer:
    """Serve each model as `env`'s pod from the given images; `pins(artifact, content_digest)` gives the
    release values to render for a model (the stage's: the run's release with that model's pins)."""

    def __init__(self, root: Path, env: str, images: PodImages, pins: Pins, engine: Engine) -> None:
        self.root, self.env, self.images, self.pins, self.engine = root, env, images, pins, engine
        self._last: dict[str, Any] = {}

    def identity(self) -> dict[str, Any]:
        # Not the image digests: they carry the commit (an OCI revision label) and would re-serve both models
        # on every commit. The vllm-cpu image installs the venv's pins (images.VLLM_CPU_REQUIREMENTS, checked
        # equal to vllm_cpu.VLLM_PIN), whose versions the run key already holds; the digests are in the evidence.
        from pipeline.artifacts.images import VLLM_CPU_REQUIREMENTS

        return {"kind": "pod", "image_pins": list(VLLM_CPU_REQUIREMENTS)}

    def describe(self) -> dict[str, Any]:
        return {"kind": "pod", "env": self.env, **self._last}

    def pins_for(self, spec: ModelSpec) -> dict[str, Any]:
        """The release values to render for `spec`: its artifact pinned by digest (a directory cannot be)."""
        if spec.artifact is None or "@" not in spec.artifact:
            raise EvalSetupError(
                f"{spec.label or spec.source}: the chart's pod serves a model artifact pinned by digest; "
                f"{spec.source} is a directory"
            )
        return self.pins(spec.artifact, spec.content_digest)

    @contextlib.contextmanager
    def serve(
        self, spec: ModelSpec, serving: Serving, work_dir: Path, *, timeout: float, progress: Progress
    ) -> Iterator[tuple[Served, float]]:
        from pipeline.artifacts.chart_render import RenderError
        from pipeline.runtime.pod import PodFailed

        label = spec.label or "model"
        vllm = VllmServing(
            max_model_len=serving.max_model_len,
            dtype=serving.dtype,
            chat_template=Path(serving.chat_template) if serving.chat_template else None,
        )
        try:
            with release_pod(
                self.root,
                self.env,
                self.images,
                self.engine,
                work_dir / "pod",
                rbac_yaml=_rbac_yaml(serving.served_name),
                timeout=timeout,
                progress=progress,
                pins=self.pins_for(spec),
                serving=vllm,
                rename=(f"llm-eval-{label}", "the eval gate's pod for this model"),
            ) as pod:
                self._last = {
                    "pod": pod.evidence.get("pod"),
                    "pod_spec_digest": pod.evidence.get("pod_spec_digest"),
                    "images": pod.evidence.get("images"),
                    "model_artifact": pod.evidence.get("model_artifact"),
                    "substitutions": pod.evidence.get("substitutions"),
                }
                if pod.model != serving.served_name:
                    raise EvalSetupError(
                        f"env {self.env}'s chart serves {pod.model!r}, the record's servedName is {serving.served_name!r}"
                    )
                progress(f"{label}: pod {pod.evidence.get('pod')} ready after {pod.ready_seconds:.0f}s")
                token = pod.mint(sub="eval-gate", roles=("user",), ttl=3600)
                yield (
                    Served(spec, pod.upstream_url, pod.gateway_url, pod.gateway_internal_url, pod.model, token),
                    pod.ready_seconds,
                )
        except (PodFailed, RenderError) as exc:
            raise EvalSetupError(f"serving {spec.source} as env {self.env}'s pod failed: {exc}") from exc
