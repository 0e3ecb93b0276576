"""The models `dagger call eval` hands its stage: pure, no dagger import (like plan.py), testable offline.

`--candidate DIR|REF` and `--baseline DIR|REF` are one CLI flag each with two kinds of value. A host
directory reaches a function only as a Directory (`<dest>_dir`); a REF, a model artifact pinned by
digest, is pulled by the ENGINE (the image's MODEL_PATH, with the registry credentials). Without a
baseline the stage compares with the model the env runs (`--env`, default the first env), which it
would pull with a container engine the function's container does not have: the function reads the
env's pins itself and has the engine pull that artifact too. With `gitops_repo` the pins are the GitOps
remote's (what promotion compares with: `release_read_argv` runs git in a container); without, the
source tree's copy of environments/<env>/release.yaml (what was committed with this source). Every model
reaches the stage as a directory mounted at /inputs/<dest>.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

EVAL_MODELS = ("candidate", "baseline")
MODEL_PATH = "/model"  # pipeline.models.artifact.MODEL_PATH (a test compares)
PLATFORM_FILE = "platform.yaml"
_REF_RE = re.compile(r"^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+@sha256:[0-9a-f]{64}$")
_LINE_RE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?: +(?P<value>[^#]*?))?\s*(?:#.*)?$")


GITOPS_BRANCH = "main"  # pipeline.gitops.repo.BRANCH: the branch promotion writes (a test compares)
# Prints `$3` as the remote `$2` has it on branch `$1`: a shallow clone of that branch alone, no checkout
# (`git show` reads the blob). Arguments stay positional: a URL is never shell text, and `--` keeps one
# starting with `-` from being an option. The clone goes under $TMPDIR and is removed on exit.
RELEASE_READ_SH = (
    "set -eu; d=$(mktemp -d); trap 'rm -rf \"$d\"' EXIT; "
    'git clone -q --depth 1 --single-branch --no-tags --no-checkout --branch "$1" -- "$2" "$d"; '
    'git -C "$d" show "HEAD:$3"'
)


def release_file(env: str) -> str:
    return f"environments/{env}/release.yaml"


def release_read_argv(remote: str, env: str) -> list[str]:
    """The exec that prints `env`'s release.yaml on the GitOps remote's main (git fails naming a missing
    branch, path or repository). GIT_SSH_COMMAND (plan.git_ssh_command) supplies the deploy key."""
    if not remote:
        raise ValueError("gitops_repo is empty: give the GitOps remote URL, or leave it out to read the source tree")
    return ["sh", "-c", RELEASE_READ_SH, "read-release", GITOPS_BRANCH, remote, release_file(env)]


def eval_models(params: Mapping[str, Any]) -> dict[str, str | None]:
    """dest → the artifact REF the engine pulls (None: `<dest>_dir` was given), for each model given (no candidate:
    the stage's stand-in). Refuses a model given both ways, a baseline beside `env`, a REF not pinned by digest."""
    out: dict[str, str | None] = {}
    for dest in EVAL_MODELS:
        ref, directory = params.get(dest), params.get(f"{dest}_dir")
        if ref and directory is not None:
            raise ValueError(f"give {dest} (a model artifact ref) or {dest}_dir (a directory), not both")
        if ref and not _REF_RE.match(str(ref)):
            raise ValueError(
                f"{dest} must be a model artifact pinned by digest (<registry>/<repo>@sha256:<64 hex>), got {ref!r}"
            )
        if ref or directory is not None:
            out[dest] = str(ref) if ref else None
    if "baseline" in out and params.get("env"):
        raise ValueError("give baseline (or baseline_dir) or env, not both: the env's pinned model is its baseline")
    return out


def env_names(platform_text: str) -> tuple[str, ...]:
    """The environments of platform.yaml in promotion order (`environments:` → each `- name:`)."""
    block = re.search(r"^environments:[^\n]*\n((?:[ \t#-][^\n]*\n|[ \t]*\n)*)", platform_text, re.MULTILINE)
    names = re.findall(r"^[ \t]*- name:[ \t]*[\"']?([a-z0-9-]+)", block.group(1) if block else "", re.MULTILINE)
    if not names:
        raise ValueError(f"{PLATFORM_FILE} names no environment (environments: - name: ...)")
    return tuple(names)


def baseline_env(env: str | None, platform_text: str) -> str:
    """The env whose model is the baseline: `env`, else the first (the CLI's default); refuses an unknown one."""
    names = env_names(platform_text)
    if env is not None and env not in names:
        raise ValueError(f"env {env!r} is not an environment of {PLATFORM_FILE} ({', '.join(names)})")
    return env or names[0]


def scalars(text: str, where: str) -> dict[str, str]:
    """A block YAML file of nested mappings and scalars (release.yaml, as Release.to_values writes it) as dotted
    path → value. The module carries no YAML library; anything else in the file is refused, never guessed."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#") or line.strip() == "---":
            continue
        m = _LINE_RE.match(line)
        if not m:
            raise ValueError(f"{where}:{n}: not a `key: value` line this reader understands: {line.strip()!r}")
        indent, key, value = len(m["indent"]), m["key"], (m["value"] or "").strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([*(k for _, k in stack), key])
        if value:
            out[path] = value.strip("\"'")
        else:
            stack.append((indent, key))
    return out


def env_model_artifact(release_text: str, env: str) -> str | None:
    """`<repository>@<digest>` of the model artifact `env` pins (vllm.model.artifact.*), None when it pins none."""
    pins = scalars(release_text, release_file(env))
    repository, digest = pins.get("vllm.model.artifact.repository"), pins.get("vllm.model.artifact.digest")
    if not repository and not digest:
        return None
    ref = f"{repository}@{digest}"
    if not _REF_RE.match(ref):
        raise ValueError(
            f"{release_file(env)}: vllm.model.artifact pins {ref!r}, not <registry>/<repo>@sha256:<64 hex>"
        )
    return ref
