"""Constants the local executor and the Dagger module share, loaded from contract.json (defined once).

The Dagger module cannot import the product (the engine installs only pipeline/dagger), so the
values live in a data file: this module loads it for the product, the Dagger functions read the same
file from their source directory (pipeline_dagger.plan.parse_contract). tests/pipeline compares both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONTRACT_FILE = Path(__file__).with_name("contract.json")
CONTRACT: dict[str, Any] = json.loads(CONTRACT_FILE.read_text())

# The dev identity provider of local stacks and Dagger services: tokens minted for their gateway.
ISSUER: str = CONTRACT["gateway"]["issuer"]
AUDIENCE: str = CONTRACT["gateway"]["audience"]
# Fixed gateway settings of a local stack / a Dagger gateway service (beside keys, RBAC, upstream).
GATEWAY_SETTINGS: dict[str, str] = dict(CONTRACT["gateway"]["settings"])
# Image targets of app/Dockerfile: the release's (their digests are the release pins), the CPU
# variant of the vLLM server, and tool images (the rollback controller's).
RELEASE_TARGETS: tuple[str, ...] = tuple(CONTRACT["images"]["release"])
VLLM_CPU_TARGET: str = CONTRACT["images"]["vllm_cpu"]
TOOL_TARGETS: tuple[str, ...] = tuple(CONTRACT["images"]["tools"])
