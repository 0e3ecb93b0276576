"""docs/adopt.md, executed from its own text: every fenced bash block runs, in order, in a temporary copy
of the repository, unless a `<!-- not-run-here: reason -->` comment right before it says it needs a
cluster (`<!-- slow-here: reason -->`: run only by the slow variant).

What the test substitutes, and nothing else: `$PIPELINE_GITOPS_REPO` is a private bare repository
(the doc's `https://git.acme.test/...` does not exist), git's identity comes from the environment
(the user's git config is never read), and `python` is this checkout's venv.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from pipeline.gitops.repo import git

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "adopt.md"
MARKER = re.compile(r"<!--\s*(not-run-here|slow-here):\s*(.+?)\s*-->", re.S)
# Not copied: environments and caches of this machine (linked where the copy needs them).
SKIP = {".git", ".venv", ".tools", ".runs", ".gitops", ".cache", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
IDENT = {
    "GIT_AUTHOR_NAME": "adopter",
    "GIT_AUTHOR_EMAIL": "a@x.test",
    "GIT_COMMITTER_NAME": "adopter",
    "GIT_COMMITTER_EMAIL": "a@x.test",
}


@dataclass(frozen=True)
class Block:
    code: str
    marker: str  # "" (runs here), "not-run-here" or "slow-here"
    reason: str


def blocks(text: str) -> list[Block]:
    """The bash blocks of the doc, each with the marker comment right before it (if any)."""
    tokens = MarkdownIt().parse(text)
    out = []
    for i, tok in enumerate(tokens):
        if tok.type != "fence" or tok.info.strip() != "bash":
            continue
        prev = tokens[i - 1] if i else None
        m = MARKER.search(prev.content) if prev is not None and prev.type == "html_block" else None
        out.append(Block(tok.content, m.group(1) if m else "", m.group(2) if m else ""))
    return out


def test_blocks_read_their_markers() -> None:
    text = "<!-- not-run-here: no cluster -->\n```bash\na\n```\n\n```bash\nb\n```\n<!-- slow-here: 5 min -->\n```bash\nc\n```\n"
    assert blocks(text) == [
        Block("a\n", "not-run-here", "no cluster"),
        Block("b\n", "", ""),
        Block("c\n", "slow-here", "5 min"),
    ]


def test_every_block_runs_here_or_says_why_not() -> None:
    found = blocks(DOC.read_text())
    assert len(found) >= 6
    assert all(b.reason for b in found if b.marker), "a marker without a reason"
    # The walkthrough's own commands are among the runnable ones.
    runnable = "".join(b.code for b in found if b.marker != "not-run-here")
    for cmd in (
        "pipeline init",
        "pipeline init --check",
        "pipeline bootstrap --check",
        "git -C",
        "pipeline ci",
        "pipeline status",
    ):
        assert cmd in runnable, cmd
    # What needs a cluster is marked so.
    for b in found:
        if re.search(r"^(kubectl|helm upgrade)|--kubeconfig", b.code, re.M):
            assert b.marker == "not-run-here", b.code


def _copy(dest: Path) -> Path:
    def ignore(directory: str, names: list[str]) -> set[str]:
        return (
            {n for n in names if n in SKIP or n == "__pycache__"}
            if Path(directory) == REPO
            else {"__pycache__"} & set(names)
        )

    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)
    # A clone, as an adopter has it (tests and the Dagger module read what git tracks and ignores).
    env = {**os.environ, **IDENT, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    for argv in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "clone"]):
        subprocess.run(["git", *argv], cwd=dest, env=env, check=True, capture_output=True)
    for link in (".venv", ".tools"):
        if (REPO / link).exists():
            (dest / link).symlink_to(REPO / link)
    return dest


def walk(tmp_path: Path, *, slow: bool) -> tuple[Path, str, list[str], list[str]]:
    """Run the doc's blocks: (the copy, the GitOps remote, each block's stdout, the scratch files left in $TMPDIR)."""
    # A short $TMPDIR of its own (not under tmp_path): `ci`'s nested test run binds AF_UNIX sockets
    # (≤108 bytes) under its temp dirs. Removed afterwards, as the doc's scratch files are the user's.
    scratch = Path(tempfile.mkdtemp(prefix="adopt-"))
    try:
        work, remote, outputs = _walk(tmp_path, scratch, slow=slow)
        return work, remote, outputs, sorted(p.name for p in scratch.iterdir())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _walk(tmp_path: Path, scratch: Path, *, slow: bool) -> tuple[Path, str, list[str]]:
    work = _copy(tmp_path / "repo")
    remote = tmp_path / "gitops.git"
    git("init", "-q", "--bare", "--initial-branch=main", str(remote))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "GATEWAY_", "VIRTUAL_ENV"))}
    env |= IDENT | {
        "PIPELINE_GITOPS_REPO": str(remote),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "PATH": f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        "TMPDIR": str(scratch),  # the doc's scratch files (the JSON plan, the seed checkout) land here
    }
    outputs = []
    for b in blocks(DOC.read_text()):
        if b.marker == "not-run-here" or (b.marker == "slow-here" and not slow):
            continue
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", b.code],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800 if b.marker else 600,
        )
        assert proc.returncode == 0, (
            f"block failed ({proc.returncode}):\n{b.code}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
        )
        outputs.append(proc.stdout)
    return work, str(remote), outputs


def test_adopt_walkthrough_runs(tmp_path: Path) -> None:
    work, remote, outputs, scratch = walk(tmp_path, slow=False)
    # init wrote the organisation's file and the tree agrees with it.
    assert "registry.acme.test/llm" in (work / "platform.yaml").read_text()
    assert (
        "git.acme.test/platform/llm-gitops.git"
        in (work / "environments/argocd/applicationset-llm-service.yaml").read_text()
    )
    # bootstrap --check printed the plan (and wrote it as JSON).
    assert "v3.1.0" in "".join(outputs) and scratch == ["bootstrap-plan.json"]
    # The seed commit is the first and only commit of the GitOps remote, and it carries no placeholder pin.
    assert git("--git-dir", remote, "rev-list", "--count", "main").strip() == "1"
    appset = git("--git-dir", remote, "show", "main:environments/argocd/applicationset-llm-service.yaml")
    assert "0" * 40 not in appset and "environments/prod/release.yaml\n            exclude: true" in appset
    # status read that remote: prod has no generator yet.
    assert "no prod generator yet" in outputs[-1]


@pytest.mark.slow
@pytest.mark.timeout(2400)  # `ci` (test with the unit suite, build, scan, render, smoke, loadtest) is part of it
def test_adopt_walkthrough_promotes_dev(tmp_path: Path) -> None:
    _, remote, _, _ = walk(tmp_path, slow=True)
    log = git("--git-dir", remote, "log", "--format=%s%n%b", "main")
    assert "Promote-To: dev" in log, log
