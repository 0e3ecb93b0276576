"""Structural checks on a Dockerfile that hadolint and trivy do not make (imported as a plain module).

Each check takes the parsed file and returns a list of violation messages; an empty list
passes. They are tested against planted violations so a check that silently stops
matching fails its own test.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass, field

DIGEST_RE = re.compile(r"@sha256:[0-9a-f]{64}$")
SECRET_NAME_RE = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL)", re.I)
SECRET_VALUE_RE = re.compile(
    r"(hf_[A-Za-z0-9]{20,}|ghp_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|sk-[A-Za-z0-9]{20,}|-----BEGIN)"
)
COMPILER_PACKAGES = {
    "gcc", "g++", "clang", "cc", "make", "cmake", "build-essential", "gfortran", "cargo", "rustc", "golang",
}  # fmt: skip
OCI_LABELS = ("title", "version", "revision", "created")


@dataclass
class Instruction:
    cmd: str  # upper-case keyword
    args: str  # the rest of the (continuation-joined) line
    line: int


@dataclass
class Stage:
    name: str
    base: str  # FROM argument after global ARG substitution
    parent: Stage | None  # the stage it is built FROM, if any
    instructions: list[Instruction] = field(default_factory=list)

    def lineage(self) -> list[Stage]:
        """This stage and the stages it inherits from, nearest first."""
        out: list[Stage] = []
        s: Stage | None = self
        while s is not None:
            out.append(s)
            s = s.parent
        return out


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join backslash continuations and drop comments/blank lines; keep the first line number."""
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for no, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped by Docker too
        if not buf:
            start = no
        if stripped.endswith("\\"):
            buf.append(stripped[:-1])
            continue
        buf.append(stripped)
        out.append((start, " ".join(b for b in buf if b)))
        buf = []
    if buf:
        out.append((start, " ".join(buf)))
    return out


def _substitute(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: variables.get(m.group(1), m.group(0)), value)


def _key_values(args: str) -> dict[str, str]:
    """ENV/ARG/LABEL arguments: `K=V K2="V 2"`, or the legacy `K V` form, or a bare `K` (ARG)."""
    parts = shlex.split(args)
    if len(parts) >= 2 and "=" not in parts[0]:
        return {parts[0]: " ".join(parts[1:])}
    out = {}
    for p in parts:
        k, _, v = p.partition("=")
        out[k] = v
    return out


def parse(text: str) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, logical in _logical_lines(text):
        cmd, _, args = logical.partition(" ")
        cmd = cmd.upper()
        args = args.strip()
        if cmd == "FROM":
            tokens = [t for t in args.split() if not t.startswith("--")]
            base = _substitute(tokens[0], global_args)
            name = tokens[2] if len(tokens) >= 3 and tokens[1].upper() == "AS" else f"stage-{len(stages)}"
            parent = next((s for s in stages if s.name == base), None)
            stages.append(Stage(name=name, base=base, parent=parent))
        elif not stages:
            if cmd == "ARG":
                global_args.update(_key_values(args))
        else:
            stages[-1].instructions.append(Instruction(cmd, args, line))
    return Dockerfile(global_args, stages)


# -- checks ---------------------------------------------------------------------------------


def check_base_images_pinned(df: Dockerfile) -> list[str]:
    """Every external FROM and COPY --from image is pinned by an sha256 digest (never `latest`)."""
    names = {s.name for s in df.stages}
    bad = []
    for s in df.stages:
        if s.parent is None and s.base != "scratch" and not DIGEST_RE.search(s.base):
            bad.append(f"stage {s.name}: FROM {s.base} is not pinned by @sha256 digest")
        if ":latest" in s.base:
            bad.append(f"stage {s.name}: FROM {s.base} uses the latest tag")
        for ins in s.instructions:
            m = re.search(r"--from=(\S+)", ins.args) if ins.cmd == "COPY" else None
            if m and m.group(1) not in names and not m.group(1).isdigit() and not DIGEST_RE.search(m.group(1)):
                bad.append(f"line {ins.line}: COPY --from={m.group(1)} is not pinned by digest")
    return bad


def check_targets(df: Dockerfile, required: tuple[str, ...]) -> list[str]:
    names = [s.name for s in df.stages]
    return [f"target {t} missing (stages: {', '.join(names)})" for t in required if t not in names]


def effective_user(stage: Stage) -> str | None:
    """The USER in force at the end of a stage, inherited through FROM <stage>."""
    for s in stage.lineage():
        users = [i for i in s.instructions if i.cmd == "USER"]
        if users:
            return users[-1].args.strip()
    return None


def check_non_root_user(df: Dockerfile, stages: tuple[str, ...]) -> list[str]:
    """Shipped stages end as a numeric non-root UID (Kubernetes runAsNonRoot can verify only numbers)."""
    bad = []
    for name in stages:
        user = effective_user(df.stage(name))
        if user is None:
            bad.append(f"stage {name}: no USER (runs as root)")
            continue
        uid = user.split(":")[0]
        if not uid.isdigit():
            bad.append(f"stage {name}: USER {user} is not a numeric UID")
        elif int(uid) == 0:
            bad.append(f"stage {name}: USER {user} is root")
    return bad


def check_no_secrets(df: Dockerfile) -> list[str]:
    """No credential-like ENV/ARG names with values, and no token-looking values anywhere."""
    bad = []
    everything = [("ARG", k, v, 0) for k, v in df.global_args.items()]
    for s in df.stages:
        for ins in s.instructions:
            if ins.cmd in ("ENV", "ARG"):
                everything += [(ins.cmd, k, v, ins.line) for k, v in _key_values(ins.args).items()]
            if SECRET_VALUE_RE.search(ins.args):
                bad.append(f"line {ins.line}: {ins.cmd} contains a credential-looking value")
    for cmd, key, val, line in everything:
        if SECRET_NAME_RE.search(key):
            # Even an empty secret ARG is wrong: build args end up in the image history.
            bad.append(f"line {line}: {cmd} {key} looks like a secret; use a build secret mount or a runtime Secret")
        elif SECRET_VALUE_RE.search(val):
            bad.append(f"line {line}: {cmd} {key} has a credential-looking value")
    return bad


def check_no_compilers(
    df: Dockerfile, stages: tuple[str, ...], allowed: dict[str, set[str]] | None = None
) -> list[str]:
    """Shipped stages (and the stages they inherit from) never install compilers or build tools,
    except the packages `allowed` names for a stage (with the reason in the Dockerfile)."""
    allowed = allowed or {}
    bad = []
    for name in stages:
        for s in df.stage(name).lineage():
            for ins in s.instructions:
                if ins.cmd != "RUN":
                    continue
                words = set(re.split(r"[\s;&|=]+", ins.args))
                found = sorted(
                    w
                    for w in words
                    if (w in COMPILER_PACKAGES or w.endswith("-dev") or fnmatch.fnmatch(w, "gcc-*"))
                    and w not in allowed.get(s.name, set())
                )
                if found and re.search(r"\b(apt-get|apt|apk|yum|dnf|microdnf)\b", ins.args):
                    bad.append(f"stage {name} (line {ins.line}): installs build tools {', '.join(found)}")
            if s.parent is None and s.base.split("@")[0].split(":")[-1].find("devel") >= 0:
                bad.append(f"stage {name}: base {s.base} is a -devel image")
    return bad


def check_apt_hygiene(df: Dockerfile, stages: tuple[str, ...]) -> list[str]:
    """Shipped stages install OS packages without recommends and leave no apt lists behind (same RUN)."""
    bad = []
    for name in stages:
        for s in df.stage(name).lineage():
            for ins in s.instructions:
                if ins.cmd != "RUN" or not re.search(r"\bapt-get\s+install\b", ins.args):
                    continue
                if "--no-install-recommends" not in ins.args:
                    bad.append(f"stage {name} (line {ins.line}): apt-get install without --no-install-recommends")
                if "rm -rf /var/lib/apt/lists" not in ins.args:
                    bad.append(f"stage {name} (line {ins.line}): apt lists not removed in the same RUN")
    return bad


def check_oci_labels(df: Dockerfile, stages: tuple[str, ...]) -> list[str]:
    bad = []
    for name in stages:
        keys: set[str] = set()
        for s in df.stage(name).lineage():
            for ins in s.instructions:
                if ins.cmd == "LABEL":
                    keys |= set(_key_values(ins.args))
        missing = [k for k in OCI_LABELS if f"org.opencontainers.image.{k}" not in keys]
        if missing:
            bad.append(f"stage {name}: missing OCI labels {', '.join(missing)}")
    return bad


def check_builder_separate(df: Dockerfile, runtime: str, builder: str) -> list[str]:
    """The runtime stage is not built FROM the builder; it only copies artefacts out of it."""
    stage = df.stage(runtime)
    bad = [f"stage {runtime} is built FROM {builder}" for s in stage.lineage() if s.name == builder]
    if not any(i.cmd == "COPY" and f"--from={builder}" in i.args for i in stage.instructions):
        bad.append(f"stage {runtime} copies nothing from {builder}")
    return bad


# -- .dockerignore ----------------------------------------------------------------------------


def dockerignore_excludes(patterns_text: str, path: str) -> bool:
    """Whether `path` (relative, with /) is left out of the build context; last matching rule wins."""
    rules = []
    for raw in patterns_text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        rules.append((negate, pattern.strip("/")))
    parts = path.strip("/").split("/")
    # A path is excluded if it or any parent directory is excluded (Docker skips the subtree).
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, pattern in rules:
        regex = _dockerignore_regex(pattern)
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negate
    return excluded


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """Go filepath.Match plus `**` (any number of directories), as Docker implements it."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)
