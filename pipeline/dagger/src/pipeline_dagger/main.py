"""Dagger module for the LLM service pipeline: one function per `python -m pipeline` verb.

Every function prepares a container (pinned Python base, uv + pip caches, `uv sync --frozen`,
the verb's tools) and runs the SAME stage code inside it: `python -m pipeline <verb> ...`.
Only what needs the engine lives here: building/publishing images, the vLLM GPU service.
Each function returns the run directory (report JSON, logs, artifacts) plus an `exit-code`
file, so a failing stage still hands back its evidence:

    dagger call ci --registry=registry.example.com/llm --registry-username=ci \
        --registry-password=env:REGISTRY_TOKEN export --path=.runs/dagger-ci
"""

from __future__ import annotations

from typing import Annotated

import dagger
from dagger import DefaultPath, Doc, Ignore, dag, function, object_type

from .plan import (
    CHART_PASSWORD_ENV,
    CHART_REGISTRY_ENV,
    CHART_USERNAME_ENV,
    CRD_SCHEMAS_MOUNT,
    GITOPS_KNOWN_HOSTS,
    GITOPS_SSH_KEY,
    PYTHON_IMAGE,
    RUNS,
    WORKDIR,
    Plan,
    git_ssh_command,
    plan,
)

# Release images (their digests are the release pins) and the pipeline image (the rollback
# controller of charts/rollback-controller; pinned in environments/argocd, not per release).
TARGETS = ("gateway", "vllm")
IMAGE_TARGETS = (*TARGETS, "pipeline")
VLLM_PORT = 8000


@object_type
class Pipeline:
    """Test, build, scan, render, smoke, load-test and promote the LLM service."""

    source: Annotated[
        dagger.Directory,
        Doc("repository root"),
        DefaultPath("/"),
        Ignore([".venv", ".tools", ".runs", ".cache", ".gitops", "**/__pycache__", ".mypy_cache", ".ruff_cache"]),
    ]
    python_image: Annotated[str, Doc("Python base image, pinned by digest")] = PYTHON_IMAGE

    # -- plumbing ---------------------------------------------------------------------------

    def _container(self, p: Plan) -> dagger.Container:
        ctr = dag.container().from_(p.image).with_directory(WORKDIR, self.source).with_workdir(WORKDIR)
        for name, path in p.caches.items():
            ctr = ctr.with_mounted_cache(path, dag.cache_volume(name))
        for key, value in p.env.items():
            ctr = ctr.with_env_variable(key, value)
        for argv in p.setup:
            ctr = ctr.with_exec(argv)
        return ctr

    async def _report(self, ctr: dagger.Container, p: Plan) -> dagger.Directory:
        # ANY: a failed gate must still return its report; the exit code travels in a file.
        done = ctr.with_exec(p.command, expect=dagger.ReturnType.ANY)
        code = await done.exit_code()
        return done.directory(f"{RUNS}/{p.verb}").with_new_file("exit-code", f"{code}\n")

    async def _run(self, verb: str, params: dict[str, object]) -> dagger.Directory:
        p = plan(verb, params, image=self.python_image)
        return await self._report(self._container(p), p)

    def _image(self, target: str, commit: str) -> dagger.Container:
        # REVISION feeds the Dockerfile's OCI labels (org.opencontainers.image.revision).
        build_args = [dagger.BuildArg(name="REVISION", value=commit)] if commit else []
        return self.source.docker_build(dockerfile="app/Dockerfile", target=target, build_args=build_args)

    async def _build_images(
        self, registry: str, username: str, password: dagger.Secret | None, commit: str
    ) -> dict[str, str]:
        """Build every image target; publish when credentials are given. target → digest (published only)."""
        digests: dict[str, str] = {}
        for target in IMAGE_TARGETS:
            image = self._image(target, commit)
            if registry and password is not None:
                ref = await image.with_registry_auth(registry, username, password).publish(
                    f"{registry}/{target}:{commit[:12] or 'dev'}"  # = the charts' image.repository
                )
                digests[target] = ref.split("@", 1)[1]
            else:
                await image.sync()  # proves the target builds; nothing to pin without a registry
        return digests

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
        """Mount a CRD schema directory; without one the stage defaults to the datreeio catalog URL under Dagger."""
        return ctr if crd_schemas is None else ctr.with_mounted_directory(CRD_SCHEMAS_MOUNT, crd_schemas)

    def _vllm_service(self, commit: str, gpu: bool) -> dagger.Service:
        ctr = self._image("vllm", commit).with_exposed_port(VLLM_PORT)
        if gpu:
            ctr = ctr.experimental_with_all_gp_us()
        return ctr.as_service(use_entrypoint=True)

    # -- verbs ------------------------------------------------------------------------------

    @function
    async def test(
        self,
        root: Annotated[str | None, Doc("project to test (default: this repository)")] = None,
        markers: Annotated[str, Doc("pytest -m expression")] = "not slow",
        pytest_args: Annotated[str, Doc("extra pytest arguments, one shell-quoted string")] = "",
        skip: Annotated[list[str] | None, Doc("checks to skip: ruff format mypy pytest rego chart")] = None,
        extra_args: Annotated[list[str] | None, Doc("more CLI arguments, passed through")] = None,
    ) -> dagger.Directory:
        """Run ruff, mypy, pytest, Rego tests and helm lint; returns the run directory."""
        return await self._run("test", dict(locals(), self=None))

    @function
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
        commit: Annotated[str, Doc("source commit (labels the images, tags them)")] = "",
        chart_version: Annotated[str | None, Doc("chart version to package (default: per commit)")] = None,
        chart_registry: Annotated[
            str | None, Doc("OCI chart repository without scheme (default with credentials: <registry>/charts)")
        ] = None,
        extra_args: Annotated[list[str] | None, Doc("more CLI arguments, passed through")] = None,
    ) -> dagger.Directory:
        """Build both images (publish with credentials), the chart (push with credentials), the dist; release pins."""
        if not (gateway_digest and vllm_digest):
            digests = await self._build_images(registry, registry_username, registry_password, commit)
            gateway_digest = digests.get("gateway", gateway_digest)
            vllm_digest = digests.get("vllm", vllm_digest)
        # Chart: packaged by the stage; pushed by it when a registry and credentials are given.
        if registry and registry_password is not None and not chart_registry:
            chart_registry = f"{registry}/charts"
        p = plan("build", dict(locals(), self=None, digests=None), image=self.python_image)
        ctr = self._with_chart_registry(self._container(p), chart_registry or "", registry_username, registry_password)
        return await self._report(ctr, p)

    @function
    async def scan(
        self,
        root: Annotated[str | None, Doc("directory to scan (default: this repository)")] = None,
        images: Annotated[list[str] | None, Doc("image refs to scan for vulnerabilities")] = None,
        render_dir: Annotated[str | None, Doc("rendered manifests to config-scan")] = None,
        ignorefile: Annotated[str | None, Doc("ignore file (default: .trivyignore.yaml)")] = None,
        download_db: Annotated[bool | None, Doc("download the vulnerability DB (default: yes in Dagger)")] = None,
        registry_username: Annotated[str, Doc("registry user for pulling the images")] = "",
        registry_password: Annotated[dagger.Secret | None, Doc("registry password or token")] = None,
        extra_args: Annotated[list[str] | None, Doc("more CLI arguments, passed through")] = None,
    ) -> dagger.Directory:
        """Trivy: secrets, config, SBOM, vulnerabilities (DB cached in a volume); returns the report."""
        params = dict(locals(), self=None)
        if download_db is False:
            params["extra_args"] = [*(extra_args or []), "--no-download-db"]
            params["download_db"] = None
        p = plan("scan", params, image=self.python_image)
        ctr = self._container(p)
        if registry_password is not None:
            ctr = ctr.with_env_variable("TRIVY_USERNAME", registry_username).with_secret_variable(
                "TRIVY_PASSWORD", registry_password
            )
        return await self._report(ctr, p)

    @function
    async def render(
        self,
        env: Annotated[list[str] | None, Doc("environments to render (dev, staging, prod or all)")] = None,
        out: Annotated[str | None, Doc("write rendered YAML here (default: the run dir)")] = None,
        crd_schemas: Annotated[
            dagger.Directory | None,
            Doc("CRD JSON schemas directory (<group>/<kind>_<version>.json); default: the datreeio catalog URL"),
        ] = None,
        kube_version: Annotated[str, Doc("Kubernetes version to target")] = "1.33",
        charts_dir: Annotated[
            list[str] | None, Doc("directories with packaged charts (llm-service-<version>.tgz) for pinned envs")
        ] = None,
        extra_args: Annotated[list[str] | None, Doc("CLI arguments for `pipeline render`")] = None,
    ) -> dagger.Directory:
        """Render the chart per environment, validate schemas and policies; returns the manifests."""
        params = dict(locals(), self=None, crd_schemas=CRD_SCHEMAS_MOUNT if crd_schemas is not None else None)
        p = plan("render", params, image=self.python_image)
        return await self._report(self._with_crd_schemas(self._container(p), crd_schemas), p)

    @function
    async def smoke(
        self,
        server: Annotated[str, Doc("model server: vllm or simulator")] = "vllm",
        target: Annotated[str | None, Doc("URL of a running vLLM-compatible server")] = None,
        model: Annotated[str, Doc("served model name")] = "tiny-llama",
        timeout: Annotated[float, Doc("seconds to wait for readiness")] = 300.0,  # noqa: ASYNC109 - a CLI flag
        gpu: Annotated[bool, Doc("run the vLLM image as a GPU service (needs a GPU engine)")] = False,
        commit: Annotated[str, Doc("source commit")] = "",
        subject_digests: Annotated[
            str | None, Doc("with target: image digests serving it, e.g. vllm=sha256:... (recorded as asserted)")
        ] = None,
        extra_args: Annotated[list[str] | None, Doc("more CLI arguments, passed through")] = None,
    ) -> dagger.Directory:
        """Smoke-test the gateway in front of vLLM (GPU service with --gpu); returns the report."""
        params = dict(locals(), self=None)
        p = plan("smoke", params, image=self.python_image)
        ctr = self._container(p)
        if gpu and target is None:
            ctr = ctr.with_service_binding("vllm", self._vllm_service(commit, gpu))
            p = plan("smoke", {**params, "target": f"http://vllm:{VLLM_PORT}"}, image=self.python_image)
        return await self._report(ctr, p)

    @function
    async def loadtest(
        self,
        env: Annotated[str, Doc("environment whose SLO file gates the run")] = "dev",
        target: Annotated[str | None, Doc("URL to load (default: a local simulator)")] = None,
        duration: Annotated[float | None, Doc("seconds of load (default: the SLO file's)")] = None,
        users: Annotated[int | None, Doc("concurrent users")] = None,
        shape: Annotated[str | None, Doc("load shape")] = None,
        workers: Annotated[int, Doc("locust worker processes")] = 0,
        model: Annotated[str, Doc("model name")] = "sim-llama",
        slo_file: Annotated[str | None, Doc("SLO file (default: the env's)")] = None,
        token_file: Annotated[str | None, Doc("JWT file")] = None,
        seed: Annotated[int, Doc("random seed")] = 0,
        sim_ttft_ms: Annotated[float | None, Doc("simulator time to first token")] = None,
        sim_itl_ms: Annotated[float | None, Doc("simulator inter-token latency")] = None,
        sim_error_rate: Annotated[float | None, Doc("simulator error rate")] = None,
        sim_arg: Annotated[list[str] | None, Doc("extra simulator arguments")] = None,
        attach: Annotated[bool, Doc("append the result to the evidence of the release pinned in env")] = False,
        gitops_repo: Annotated[str | None, Doc("with --attach: GitOps remote URL")] = None,
        actor: Annotated[str | None, Doc("with --attach: who records it")] = None,
        subject_digests: Annotated[
            str | None, Doc("with target: image digests serving it, gateway=sha256:...,vllm=sha256:... (asserted)")
        ] = None,
        gitops_ssh_key: Annotated[dagger.Secret | None, Doc("SSH deploy key for the GitOps remote")] = None,
        gitops_known_hosts: Annotated[dagger.Secret | None, Doc("known_hosts for the GitOps remote")] = None,
        extra_args: Annotated[list[str] | None, Doc("more CLI arguments, passed through")] = None,
    ) -> dagger.Directory:
        """Load-test against the SLO gate; returns Locust results and the verdict."""
        p = plan("loadtest", dict(locals(), self=None), image=self.python_image)
        return await self._report(self._with_gitops_key(self._container(p), gitops_ssh_key, gitops_known_hosts), p)

    @function
    async def promote(
        self,
        to: Annotated[str, Doc("target environment: dev, staging or prod")],
        source: Annotated[str | None, Doc("source environment (default: the rung below)")] = None,
        approve: Annotated[list[str] | None, Doc("approvers")] = None,
        dry_run: Annotated[bool, Doc("evaluate policy, change nothing")] = False,
        gitops_repo: Annotated[str | None, Doc("GitOps remote URL")] = None,
        policy_profile: Annotated[str, Doc("policy parameters profile")] = "production",
        allow_unbuilt_images: Annotated[bool, Doc("accept a release without registry images")] = False,
        trivy_reports: Annotated[str | None, Doc("VulnerabilityReports file for the prod gate")] = None,
        extra_evidence: Annotated[list[str] | None, Doc("extra StageResult JSON files")] = None,
        release_file: Annotated[str | None, Doc("release.json to promote")] = None,
        actor: Annotated[str | None, Doc("who promotes")] = None,
        gitops_ssh_key: Annotated[dagger.Secret | None, Doc("SSH deploy key for the GitOps remote")] = None,
        gitops_known_hosts: Annotated[dagger.Secret | None, Doc("known_hosts for the GitOps remote")] = None,
        extra_args: Annotated[list[str] | None, Doc("more CLI arguments, passed through")] = None,
    ) -> dagger.Directory:
        """Promote a release into an environment of the GitOps repo (policy-checked commit)."""
        p = plan("promote", dict(locals(), self=None), image=self.python_image)
        return await self._report(self._with_gitops_key(self._container(p), gitops_ssh_key, gitops_known_hosts), p)

    @function
    async def rollback(
        self,
        env: Annotated[str | None, Doc("environment to roll back")] = None,
        to: Annotated[str | None, Doc("promotion to return to")] = None,
        reason: Annotated[str, Doc("why (recorded in the revert commit)")] = "",
        actor: Annotated[str | None, Doc("who rolls back")] = None,
        gitops_repo: Annotated[str | None, Doc("GitOps remote URL")] = None,
        gitops_ssh_key: Annotated[dagger.Secret | None, Doc("SSH deploy key for the GitOps remote")] = None,
        gitops_known_hosts: Annotated[dagger.Secret | None, Doc("known_hosts for the GitOps remote")] = None,
        extra_args: Annotated[list[str] | None, Doc("more CLI arguments, passed through")] = None,
    ) -> dagger.Directory:
        """Revert an environment's last promotion in the GitOps repo."""
        p = plan("rollback", dict(locals(), self=None), image=self.python_image)
        return await self._report(self._with_gitops_key(self._container(p), gitops_ssh_key, gitops_known_hosts), p)

    @function
    async def ci(
        self,
        only: Annotated[list[str] | None, Doc("run only these stages")] = None,
        skip: Annotated[list[str] | None, Doc("leave out these stages")] = None,
        no_promote: Annotated[bool, Doc("stop before promoting to dev")] = False,
        no_cache: Annotated[bool, Doc("ignore cached stage results")] = False,
        gateway_digest: Annotated[str | None, Doc("published gateway digest (skips the image build)")] = None,
        vllm_digest: Annotated[str | None, Doc("published vLLM digest (skips the image build)")] = None,
        images: Annotated[list[str] | None, Doc("image refs for the vulnerability scan")] = None,
        stage_args: Annotated[list[str] | None, Doc("STAGE=ARGS extra arguments for one stage")] = None,
        crd_schemas: Annotated[
            dagger.Directory | None, Doc("CRD JSON schemas directory for render; default: the datreeio catalog URL")
        ] = None,
        gitops_repo: Annotated[
            str | None, Doc("GitOps remote to promote dev into; without one promotion is SKIPPED (container-local)")
        ] = None,
        gitops_ssh_key: Annotated[dagger.Secret | None, Doc("SSH deploy key for the GitOps remote")] = None,
        gitops_known_hosts: Annotated[dagger.Secret | None, Doc("known_hosts for the GitOps remote")] = None,
        registry: Annotated[str, Doc("registry/namespace to publish to")] = "",
        registry_username: Annotated[str, Doc("registry user")] = "",
        registry_password: Annotated[dagger.Secret | None, Doc("registry password or token")] = None,
        commit: Annotated[str, Doc("source commit")] = "",
        gpu: Annotated[bool, Doc("smoke against the vLLM image as a GPU service")] = False,
        extra_args: Annotated[list[str] | None, Doc("more CLI arguments, passed through")] = None,
    ) -> dagger.Directory:
        """Every stage in order, promote to dev when all pass; returns report.json/summary.md/junit.xml."""
        if not (gateway_digest and vllm_digest):
            digests = await self._build_images(registry, registry_username, registry_password, commit)
            gateway_digest = digests.get("gateway", gateway_digest)
            vllm_digest = digests.get("vllm", vllm_digest)
            if digests:
                images = [*(images or []), *(f"{registry}/{t}@{d}" for t, d in digests.items())]
        args = list(stage_args or [])
        if gpu:
            args.append(f"smoke=--target http://vllm:{VLLM_PORT}")
        params = dict(locals(), self=None, digests=None, args=None)
        params["stage_args"] = args or None
        params["crd_schemas"] = CRD_SCHEMAS_MOUNT if crd_schemas is not None else None
        p = plan("ci", params, image=self.python_image)
        ctr = self._with_crd_schemas(self._container(p), crd_schemas)
        ctr = self._with_gitops_key(ctr, gitops_ssh_key, gitops_known_hosts)
        if gpu:
            ctr = ctr.with_service_binding("vllm", self._vllm_service(commit, gpu))
        if registry_password is not None:
            ctr = ctr.with_env_variable("TRIVY_USERNAME", registry_username).with_secret_variable(
                "TRIVY_PASSWORD", registry_password
            )
        # The build stage inside ci packages the chart and pushes it to <registry>/charts.
        ctr = self._with_chart_registry(
            ctr, f"{registry}/charts" if registry else "", registry_username, registry_password
        )
        return await self._report(ctr, p)
