"""The load a local gate puts on one replica: model name, simulator profile, token roles.

Shared by the `loadtest` stage and the `capacity` command (both drive the simulator).
"""

from __future__ import annotations

DEFAULT_MODEL = "sim-llama"
# The simulator profile the local gate runs against: small, steady latencies like a lightly
# loaded GPU replica, so the dev thresholds have room on a shared CI machine.
DEFAULT_SIMULATOR_ARGS: tuple[str, ...] = ("--ttft-ms", "40", "--itl-ms", "8", "--max-num-seqs", "32")
# Roles of the minted load-test tokens; admin may use every model (see app/gateway RBAC).
TOKEN_ROLES = ("admin",)
