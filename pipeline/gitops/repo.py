"""The GitOps repository: the only place that says what runs where.

Every change (promotion, rollback, freeze) is one transaction on a private work copy:

    fresh base (fetch + hard reset to the remote branch) → mutate files → one commit → push

A rejected push (someone else pushed first) restarts the transaction on the new base, a
bounded number of times, so concurrent writers are serialized by git itself. Nothing is
pushed unless the whole change is committed, so a failure (or a kill -9) leaves the remote
exactly as it was. The work copy is disposable and never the user's own checkout.

The default remote is a local bare repository under `<repo>/.gitops/` seeded on first use
from this repository's `environments/` (and `charts/`); `--gitops-repo URL` or
`PIPELINE_GITOPS_REPO` point at a real one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import io
import logging
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

log = logging.getLogger(__name__)

BRANCH = "main"
ENV_VAR = "PIPELINE_GITOPS_REPO"
# What the default local remote is seeded from (paths relative to the source repo).
SEED_PATHS = ("environments", "charts")
# Bot identity for commits; the human (promoter/approver) is in the trailers and as author.
COMMITTER = ("llm-pipeline", "llm-pipeline@users.noreply.invalid")
TRAILER_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*): (.*)$")


class GitOpsError(RuntimeError):
    """A GitOps operation failed; the message says which file or step and why."""


class PushRejected(GitOpsError):
    """The remote moved on while we worked (non-fast-forward)."""


@dataclass(frozen=True)
class Commit:
    sha: str
    author: str
    date: dt.datetime
    subject: str
    body: str
    trailers: dict[str, list[str]]

    def trailer(self, key: str, default: str = "") -> str:
        values = self.trailers.get(key.lower())
        return values[0] if values else default

    def trailer_all(self, key: str) -> list[str]:
        return list(self.trailers.get(key.lower(), []))


@dataclass
class Message:
    """A structured commit message: subject, free-text body, ordered trailers."""

    subject: str
    body: str = ""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    author: str | None = None

    def render(self) -> str:
        lines = [self.subject.strip(), ""]
        if self.body.strip():
            lines += [self.body.rstrip(), ""]
        # Trailer values must stay on one line or git (and our parser) lose them.
        lines += [f"{k}: {one_line(v)}" for k, v in self.trailers if str(v) != ""]
        return "\n".join(lines).rstrip() + "\n"


@dataclass(frozen=True)
class TxResult:
    """Outcome of a transaction: the new commit, or None when there was nothing to change.

    `follow_up_sha` is the second commit of the same push when the transaction had a follow-up
    (e.g. moving the prod pin of the ApplicationSet to `sha`); `sha` stays the main change.
    """

    sha: str | None
    attempts: int
    message: Message | None = None
    follow_up_sha: str | None = None

    @property
    def changed(self) -> bool:
        return self.sha is not None


def one_line(value: object) -> str:
    return " ".join(str(value).split())


def parse_trailers(message: str) -> dict[str, list[str]]:
    """Trailers = `Key: value` lines of the last paragraph (git's own convention)."""
    paragraphs = [p for p in message.strip().split("\n\n") if p.strip()]
    if len(paragraphs) < 2:
        return {}
    out: dict[str, list[str]] = {}
    lines = paragraphs[-1].splitlines()
    if not all(TRAILER_RE.match(line) for line in lines):
        return {}
    for line in lines:
        m = TRAILER_RE.match(line)
        assert m is not None
        out.setdefault(m.group(1).lower(), []).append(m.group(2).strip())
    return out


# scheme://userinfo@host...: the userinfo (user[:password/token]) is what must never be printed.
_USERINFO_RE = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s'\"]+)@")


def safe_url(url: str) -> str:
    """`url` with any userinfo (user, password, token) replaced by `***`: for logs, errors, evidence.

    `https://x-access-token:ghp_…@github.com/o/r.git` → `https://***@github.com/o/r.git`; scp-like
    `git@host:path` and local paths carry no secret and are returned unchanged.
    """
    return _USERINFO_RE.sub(r"\g<scheme>***@", url)


def redact(text: str) -> str:
    """Redact the userinfo of every URL inside free text (git's stderr echoes the remote URL)."""
    return safe_url(text)


def git(*args: str, cwd: Path | None = None, check: bool = True, env: Mapping[str, str] | None = None) -> str:
    """Run git; raise GitOpsError with its (redacted) stderr on failure."""
    full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(env or {})}
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=full_env, check=False)
    if check and proc.returncode != 0:
        raise GitOpsError(f"git {args[0]} failed ({proc.returncode}): {redact((proc.stderr or proc.stdout).strip())}")
    return proc.stdout


# ---------------------------------------------------------------- YAML round trip


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    # Helm-style indentation; a huge width so long strings are never re-wrapped.
    y.indent(mapping=2, sequence=4, offset=2)
    y.width = 4096
    return y


def load_yaml_text(text: str, where: str) -> Any:
    try:
        return _yaml().load(text)
    except YAMLError as exc:
        raise GitOpsError(f"{where}: not valid YAML: {one_line(exc)}") from exc


def dump_yaml(data: Any) -> str:
    buf = io.StringIO()
    _yaml().dump(data, buf)
    return buf.getvalue()


REMOVE = object()  # a set_path/edit_yaml value: delete the key (an optional pin the new release lacks)


def set_path(doc: Any, dotted: Sequence[str], value: Any) -> bool:
    """Set doc[a][b][c] = value, creating maps on the way (REMOVE: delete it); True if it changed."""
    if value is REMOVE:
        node = doc
        for key in dotted[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or dotted[-1] not in node:
            return False
        del node[dotted[-1]]
        return True
    node = doc
    for key in dotted[:-1]:
        if key not in node or node[key] is None:
            node[key] = CommentedMap()
        node = node[key]
        if not isinstance(node, dict):
            raise GitOpsError(f"cannot set {'.'.join(dotted)}: {key} is not a mapping")
    last = dotted[-1]
    if last in node and node[last] == value:
        return False
    node[last] = value
    return True


def flatten(values: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for k, v in values.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, (*prefix, str(k))))
        else:
            out[(*prefix, str(k))] = v
    return out


def edit_yaml(path: Path, updates: Mapping[tuple[str, ...], Any], where: str) -> bool:
    """Round-trip edit: set exactly `updates`, keep comments/order/quoting; verify nothing else moved."""
    text = path.read_text() if path.exists() else ""
    doc = load_yaml_text(text, where) if text.strip() else CommentedMap()
    if not isinstance(doc, dict):
        raise GitOpsError(f"{where}: expected a mapping at the top level, found {type(doc).__name__}")
    before = flatten(_plain(doc))
    changed = False
    for dotted, value in updates.items():
        changed |= set_path(doc, dotted, value)
    if not changed:
        return False
    new_text = dump_yaml(doc)
    after = flatten(_plain(load_yaml_text(new_text, where)))
    moved = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)} - set(updates)
    if moved:
        raise GitOpsError(f"{where}: edit would change unrelated keys {sorted('.'.join(k) for k in moved)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new_text)
    return True


def _plain(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


# ---------------------------------------------------------------- remotes


def resolve_remote(url: str | None, repo_root: Path) -> str:
    """--gitops-repo, else $PIPELINE_GITOPS_REPO, else the local bare repo (created on first use)."""
    chosen = url or os.environ.get(ENV_VAR)
    if chosen:
        return chosen
    return str(ensure_local_remote(repo_root / ".gitops" / "gitops.git", repo_root))


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_local_remote(bare: Path, source_root: Path, seed_paths: Sequence[str] = SEED_PATHS) -> Path:
    """Create and seed a bare repository from `source_root`'s environments/ (idempotent, locked)."""
    with _file_lock(bare.parent / f".{bare.name}.lock"):
        if (bare / "HEAD").exists():
            return bare
        tmp_bare = bare.with_name(bare.name + ".tmp")
        shutil.rmtree(tmp_bare, ignore_errors=True)
        git("init", "-q", "--bare", f"--initial-branch={BRANCH}", str(tmp_bare))
        with tempfile.TemporaryDirectory(prefix="gitops-seed-") as tmp:
            work = Path(tmp)
            git("init", "-q", f"--initial-branch={BRANCH}", cwd=work)
            for rel in seed_paths:
                src = source_root / rel
                if src.is_dir():
                    shutil.copytree(src, work / rel, ignore=shutil.ignore_patterns("__pycache__", "*.tgz"))
            (work / "README.md").write_text(
                "# GitOps repository\n\nWritten only by `python -m pipeline promote|rollback|unfreeze`.\n"
            )
            git("add", "-A", cwd=work)
            _commit(work, Message("Seed GitOps repository", trailers=[("Seeded-From", "environments/")]))
            git("push", "-q", str(tmp_bare), f"HEAD:{BRANCH}", cwd=work)
        # Rename last so a crash mid-seed never leaves a half-seeded remote behind.
        tmp_bare.rename(bare)
        log.info("created local GitOps remote %s", bare)
        return bare


def _commit(work: Path, msg: Message) -> str:
    author = msg.author or COMMITTER[0]
    env = {
        "GIT_AUTHOR_NAME": author,
        "GIT_AUTHOR_EMAIL": f"{re.sub(r'[^A-Za-z0-9._-]', '-', author)}@users.noreply.invalid",
        "GIT_COMMITTER_NAME": COMMITTER[0],
        "GIT_COMMITTER_EMAIL": COMMITTER[1],
    }
    proc = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", "commit", "-q", "--no-verify", "-F", "-"],
        cwd=work,
        input=msg.render(),
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C", **env},
        check=False,
    )
    if proc.returncode != 0:
        raise GitOpsError(f"git commit failed: {redact((proc.stderr or proc.stdout).strip())}")
    return git("rev-parse", "HEAD", cwd=work).strip()


# ---------------------------------------------------------------- the work copy


Mutator = Callable[["GitOpsRepo"], Message | None]
# Runs after the main commit `sha` is made (same work copy, same push): edits more files and
# returns the message of a second commit, or None when there is nothing more to change.
FollowUp = Callable[["GitOpsRepo", str], Message | None]


class GitOpsRepo:
    """A private clone of the GitOps remote; all writes go through `transact`."""

    def __init__(self, remote: str, work_dir: Path, branch: str = BRANCH) -> None:
        self.remote = remote
        self.path = work_dir
        self.branch = branch

    def sync(self) -> str:
        """Make the work copy exactly the remote branch (our copy is disposable). Returns HEAD."""
        if not (self.path / ".git").exists():
            shutil.rmtree(self.path, ignore_errors=True)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # `--`: a remote starting with `-` is a repository name, never an option of git clone.
            git("clone", "-q", "--no-tags", "--branch", self.branch, "--", self.remote, str(self.path))
        else:
            # A kill -9 in the middle of a git command leaves its lock behind; this copy is ours alone.
            (self.path / ".git" / "index.lock").unlink(missing_ok=True)
            git(
                "fetch", "-q", "--no-tags", "origin", f"+{self.branch}:refs/remotes/origin/{self.branch}", cwd=self.path
            )
            git("reset", "-q", "--hard", f"origin/{self.branch}", cwd=self.path)
            git("clean", "-q", "-fdx", cwd=self.path)
        return self.head()

    def head(self) -> str:
        return git("rev-parse", "HEAD", cwd=self.path).strip()

    def file(self, rel: str) -> Path:
        return self.path / rel

    def read_yaml(self, rel: str) -> Any:
        path = self.file(rel)
        if not path.exists():
            raise GitOpsError(f"{rel}: missing from the GitOps repository")
        return load_yaml_text(path.read_text(), rel)

    def log(self, *paths: str, limit: int | None = None) -> list[Commit]:
        """Commits touching `paths` (all if none), newest first."""
        fmt = "%H%x1f%an%x1f%cI%x1f%B%x1e"
        args = ["log", f"--format={fmt}", "--no-color"]
        if limit:
            args.append(f"-n{limit}")
        out = git(*args, "--", *paths, cwd=self.path) if paths else git(*args, cwd=self.path)
        commits = []
        for record in out.split("\x1e"):
            record = record.strip("\n")
            if not record:
                continue
            sha, author, date, body = record.split("\x1f", 3)
            subject, _, rest = body.partition("\n")
            commits.append(
                Commit(sha, author, dt.datetime.fromisoformat(date), subject, rest.strip(), parse_trailers(body))
            )
        return commits

    def commit_all(self, msg: Message) -> str | None:
        git("add", "-A", cwd=self.path)
        if not git("status", "--porcelain", cwd=self.path).strip():
            return None
        return _commit(self.path, msg)

    def push(self) -> None:
        proc = subprocess.run(
            ["git", "push", "-q", "--porcelain", "origin", f"HEAD:{self.branch}"],
            cwd=self.path,
            capture_output=True,
            text=True,
            env={**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"},
            check=False,
        )
        if proc.returncode == 0:
            return
        text = proc.stderr + proc.stdout
        if any(
            s in text
            for s in ("non-fast-forward", "fetch first", "[rejected]", "failed to update ref", "cannot lock ref")
        ):
            raise PushRejected(redact(one_line(text)))
        raise GitOpsError(f"git push failed: {redact(one_line(text))}")

    def transact(
        self, mutate: Mutator, *, attempts: int = 5, backoff: float = 0.2, follow_up: FollowUp | None = None
    ) -> TxResult:
        """fresh base → mutate → commit [→ follow_up → commit] → push; retry on a rejected push.

        `mutate` must be a pure function of the work copy (it is re-run on every new base)
        and return the commit message, or None when there is nothing to do. `follow_up` gets
        the main commit's sha and may add a second commit; both reach the remote in ONE push
        (a single fast-forward of the branch), so the remote never has one without the other.
        At most `attempts` pushes are tried.
        """
        for attempt in range(1, attempts + 1):
            self.sync()
            msg = mutate(self)
            if msg is None:
                return TxResult(None, attempt)
            sha = self.commit_all(msg)
            if sha is None:
                return TxResult(None, attempt, msg)
            second: str | None = None
            if follow_up is not None:
                follow_msg = follow_up(self, sha)
                second = self.commit_all(follow_msg) if follow_msg is not None else None
            try:
                self.push()
            except PushRejected as exc:
                log.info("push rejected (attempt %d/%d), retrying on a fresh base: %s", attempt, attempts, exc)
                # Jitter so racing writers do not collide again in lockstep.
                time.sleep(backoff * attempt * (0.5 + random.random()))  # noqa: S311
                continue
            log.info("pushed %s%s to %s", sha[:12], f" + {second[:12]}" if second else "", self.branch)
            return TxResult(sha, attempt, msg, second)
        raise GitOpsError(f"gave up after {attempts} rejected pushes: the GitOps repository is too busy; retry later")

    def revert_no_commit(self, shas: Sequence[str]) -> None:
        """Stage the inverse of `shas` (newest first) without committing; abort cleanly on conflict."""
        for sha in shas:
            proc = subprocess.run(
                ["git", "revert", "--no-commit", "--no-edit", sha],
                cwd=self.path,
                capture_output=True,
                text=True,
                env={**os.environ, "LC_ALL": "C"},
                check=False,
            )
            if proc.returncode != 0:
                subprocess.run(["git", "revert", "--abort"], cwd=self.path, capture_output=True, check=False)
                raise GitOpsError(f"cannot revert {sha[:12]} cleanly: {redact(one_line(proc.stderr or proc.stdout))}")


def work_dir_for(base: Path, name: str = "gitops") -> Path:
    """A fresh, unique work-copy directory (several transactions may run side by side)."""
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
