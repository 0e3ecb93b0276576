"""Drive the Dagger module through the installed SDK without an engine.

The SDK builds every Dagger object lazily: a chain of GraphQL field selections that reaches the
engine only when a leaf is awaited. This harness uses the SDK's own registration
(`Module._typedefs()`) and invocation (`Module.get_structured_result()`, which converts raw JSON
inputs the way the engine hands them over) and fakes only the awaited leaves: `Container.exit_code`,
`Container.sync`, `Container.publish`, `Container.stdout` (answered by the test's `Harness.stdout_of`, given
the chain; like the engine, an error without an exec, and an unanswered one fails the call), `File.contents`
(answered from this checkout; a run directory's `exit-code` file with `Harness.exit_code`) and `Module.id`.
Each faked leaf records the chain it was called on, so a test asserts on what the function would send to
the engine: the containers, their order of steps, services, secrets and cache policies.

As strict as the engine where it can be here: every `dockerBuild` anywhere in what a call sent must name
a stage of that Dockerfile (`FROM … AS <stage>`; BuildKit fails a build whose target is none), else the
call fails; so does a build arg the Dockerfile does not declare (BuildKit only warns: here it is a typo).

What this cannot prove: that the engine accepts the chains, that images build, services start or
GPUs exist. That needs a CI run with an engine (see docs/pipeline.md, "Dagger").
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_SRC = REPO / "pipeline" / "dagger" / "src"
FROM_RE = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?\S+\s+AS\s+(\S+)\s*$", re.IGNORECASE | re.MULTILINE)
ARG_RE = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)", re.MULTILINE)


def dockerfile_stages(path: Path) -> set[str]:
    """The build stages of a Dockerfile: the names of its `FROM <image> AS <name>` lines."""
    return set(FROM_RE.findall(path.read_text()))


def dockerfile_args(path: Path) -> set[str]:
    """The build args a Dockerfile declares (`ARG NAME[=default]`, global or per stage)."""
    return set(ARG_RE.findall(path.read_text()))


@dataclass(frozen=True)
class Call:
    """One selected GraphQL field: `withExec(args: [...])`."""

    name: str
    args: dict[str, Any]


def chain(obj: Any) -> list[Call]:
    """The field selections that build `obj` (a lazy SDK object), root first."""
    return [Call(sel.name, dict(sel.args)) for sel in obj._ctx.selections]


@dataclass
class Leaf:
    """An awaited call that would reach the engine, with the chain of the object it was called on."""

    kind: str  # report | exit_code | sync | publish | stdout | contents | module_id
    chain: list[Call]
    arg: Any = None


@dataclass
class Run:
    """What one function call sent to the (fake) engine."""

    result: Any
    leaves: list[Leaf] = field(default_factory=list)

    def of(self, kind: str) -> list[Leaf]:
        return [leaf for leaf in self.leaves if leaf.kind == kind]

    @property
    def final(self) -> list[Call]:
        """The chain of the function's last exec (the `python -m pipeline <verb>` container): the container its
        run directory's exit-code file is read from (or, for a module awaiting `exit_code()`, that container)."""
        (leaf,) = self.of("report") or self.of("exit_code")
        return leaf.chain

    def execs(self) -> list[list[str]]:
        return [c.args["args"] for c in self.final if c.name == "withExec"]

    def services(self, calls: list[Call] | None = None) -> dict[str, list[Call]]:
        """alias → the service's chain, for every service bound (also services bound to services)."""
        found: dict[str, list[Call]] = {}
        for c in self.final if calls is None else calls:
            if c.name == "withServiceBinding":
                svc = chain(c.args["service"])
                found[c.args["alias"]] = svc
                found |= self.services(svc)
        return found


def names(calls: list[Call]) -> list[str]:
    return [c.name for c in calls]


def env(calls: list[Call]) -> dict[str, str]:
    return {c.args["name"]: c.args["value"] for c in calls if c.name == "withEnvVariable"}


def secret_env(calls: list[Call]) -> dict[str, Any]:
    return {c.args["name"]: c.args["secret"] for c in calls if c.name == "withSecretVariable"}


def service_args(calls: list[Call]) -> list[str]:
    (svc,) = [c for c in calls if c.name == "asService"]
    return list(svc.args.get("args", []))


def build_args(call: Call) -> dict[str, str]:
    """A `dockerBuild` call's build args (name → value)."""
    return {a["name"]: a["value"] for a in call.args.get("buildArgs") or []}


def image_of(calls: list[Call]) -> str:
    """`from <address>`, or `build:<stage>` for a Dockerfile stage of the source (`build:<stage>?K=V` with its
    build args other than REVISION, e.g. `build:vllm?VLLM_FLAVOR=cpu`)."""
    for c in calls:
        if c.name == "from":
            return str(c.args["address"])
        if c.name == "dockerBuild":
            extra = "&".join(f"{k}={v}" for k, v in sorted(build_args(c).items()) if k != "REVISION")
            return f"build:{c.args['target']}" + (f"?{extra}" if extra else "")
    raise AssertionError(f"no image in {names(calls)}")


def all_calls(obj: Any) -> list[Call]:
    """Every selection reachable from `obj` (a lazy SDK object or a chain): its chain and, recursively, the chains
    of the objects passed as arguments (services, files, secrets, directories)."""
    out: list[Call] = []
    todo: list[Any] = [obj]
    while todo:
        item = todo.pop()
        calls = item if isinstance(item, list) else chain(item)
        for c in calls:
            out.append(c)
            for value in c.args.values():
                for v in value if isinstance(value, list) else [value]:
                    if hasattr(v, "_ctx"):
                        todo.append(v)
    return out


def check_docker_builds(calls: list[Call]) -> list[Call]:
    """Every `dockerBuild` in `calls` names an existing Dockerfile, one of its stages and only ARGs it declares."""
    builds = [c for c in calls if c.name == "dockerBuild"]
    for c in builds:
        dockerfile = REPO / str(c.args.get("dockerfile", "Dockerfile"))
        assert dockerfile.is_file(), f"dockerBuild: no {dockerfile}"
        stages = dockerfile_stages(dockerfile)
        assert c.args.get("target") in stages, f"dockerBuild target {c.args.get('target')!r}: not a stage {stages}"
        unknown = set(build_args(c)) - dockerfile_args(dockerfile)
        assert not unknown, f"dockerBuild build args {sorted(unknown)} are not ARGs of {dockerfile}"
    return builds


def secret_id(obj: Any) -> str:
    """The ID a Secret input was loaded from (how the engine hands secrets to a function)."""
    return str(next(c.args["id"] for c in chain(obj) if "id" in c.args))


@dataclass
class Registered:
    """One function as registered: description, cache policy, argument name → type ("Directory", "[File]", ...)."""

    description: str
    cache_policy: str | None
    args: dict[str, str]
    returns: str = ""


def _typedef(obj: Any) -> str:
    calls = chain(obj)
    out = ""
    for c in calls:
        if c.name == "withKind":
            out = str(c.args["kind"]).split(".")[-1].removesuffix("_KIND")
        elif c.name == "withObject":
            out = str(c.args["name"])
        elif c.name == "withListOf":
            out = f"[{_typedef(c.args['elementType'])}]"
        elif c.name == "withOptional" and c.args.get("optional"):
            out += "?"
    return out


class Harness:
    """The module's `Pipeline` object under the SDK, with the engine's leaves faked."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import dagger

        self.leaves: list[Leaf] = []
        self.module_ids: list[Any] = []
        self.exit_code = 0  # what a run directory's exit-code file says
        # What a container's `stdout()` returns, given its chain (None: no test expects one; the call fails).
        self.stdout_of: Callable[[list[Call]], str] | None = None
        leaves = self.leaves

        async def exit_code(ctr: Any) -> int:
            leaves.append(Leaf("exit_code", chain(ctr)))
            return 0

        async def sync(ctr: Any) -> Any:
            leaves.append(Leaf("sync", chain(ctr)))
            return ctr

        async def publish(ctr: Any, address: str, **_: Any) -> str:
            leaves.append(Leaf("publish", chain(ctr), address))
            return f"{address.rsplit(':', 1)[0]}@sha256:{hashlib.sha256(address.encode()).hexdigest()}"

        async def stdout(ctr: Any) -> str:
            calls = chain(ctr)
            # The SDK's Container.stdout: "Returns an error if no command was executed".
            assert any(c.name == "withExec" for c in calls), f"stdout() of a container with no exec: {names(calls)}"
            leaves.append(Leaf("stdout", calls))
            if self.stdout_of is None:
                last = [c.args["args"] for c in calls if c.name == "withExec"][-1]
                raise AssertionError(f"stdout() of {last}: the test gives no Harness.stdout_of")
            return self.stdout_of(calls)

        async def contents(file: Any, **_: Any) -> str:
            calls = chain(file)
            if len(calls) > 2 and calls[-2].name == "directory" and calls[-1].name == "file":
                # A file of a container's directory: the run directory's exit-code file (the report).
                leaves.append(Leaf("report", calls[:-2], f"{calls[-2].args['path']}/{calls[-1].args['path']}"))
                return f"{self.exit_code}\n"
            leaves.append(Leaf("contents", calls))
            (path,) = [c.args["path"] for c in calls if c.name == "file"]
            return (REPO / path).read_text()

        async def module_id(mod: Any) -> str:
            self.module_ids.append(mod)
            return "module-id"

        monkeypatch.setattr(dagger.Container, "exit_code", exit_code)
        monkeypatch.setattr(dagger.Container, "sync", sync)
        monkeypatch.setattr(dagger.Container, "publish", publish)
        monkeypatch.setattr(dagger.Container, "stdout", stdout)
        monkeypatch.setattr(dagger.File, "contents", contents)
        monkeypatch.setattr(dagger.Module, "id", module_id)
        self.module = importlib.import_module("pipeline_dagger.main").Pipeline.__dagger_module__
        # The runtime names the main object through DAGGER_MAIN_OBJECT; here the module is imported directly.
        monkeypatch.setattr(self.module, "_main_name", "Pipeline")
        monkeypatch.setattr(self.module, "_main", self.module._objects["Pipeline"])

    def register(self) -> dict[str, Registered]:
        """`dagger functions`/`dagger call --help`: what the SDK registers, read from the Module chain."""
        asyncio.run(self.module._typedefs())
        mod = self.module_ids[-1]
        out: dict[str, Registered] = {}
        for c in chain(mod):
            if c.name != "withObject":
                continue
            for fc in chain(c.args["object"]):
                if fc.name != "withFunction":
                    continue
                fn = chain(fc.args["function"])
                name = fn[0].args["name"]
                desc = next((f.args["description"] for f in fn if f.name == "withDescription"), "")
                policy = next((str(f.args["policy"]).split(".")[-1] for f in fn if f.name == "withCachePolicy"), None)
                args = {f.args["name"]: _typedef(f.args["typeDef"]) for f in fn if f.name == "withArg"}
                out[name] = Registered(desc, policy, args, _typedef(fn[0].args["returnType"]))
        return out

    def objects(self) -> dict[str, dict[str, str]]:
        """Every object type the module registers: name → its fields (name → type)."""
        asyncio.run(self.module._typedefs())
        out: dict[str, dict[str, str]] = {}
        for c in chain(self.module_ids[-1]):
            if c.name != "withObject":
                continue
            calls = chain(c.args["object"])
            name = next(str(x.args["name"]) for x in calls if x.name == "withObject")
            out[name] = {str(x.args["name"]): _typedef(x.args["typeDef"]) for x in calls if x.name == "withField"}
        return out

    def call(self, name: str, **inputs: Any) -> Run:
        """Invoke a function as the engine would: raw JSON-able inputs (object arguments as IDs)."""
        start = len(self.leaves)
        result, _ = asyncio.run(
            self.module.get_structured_result("Pipeline", {"source": "source-dir-id"}, name, inputs)
        )
        run = Run(result, self.leaves[start:])
        sent = [c for leaf in run.leaves for c in all_calls(leaf.chain)]
        sent += all_calls(result.report) if hasattr(result, "report") else all_calls(result)
        check_docker_builds(sent)
        return run


@contextlib.contextmanager
def harness_for(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """The harness with the module's source on sys.path (the engine installs it as its own project)."""
    sys.path.insert(0, str(MODULE_SRC))
    try:
        yield Harness(monkeypatch)
    finally:
        sys.path.remove(str(MODULE_SRC))
