"""The README's walkthroughs, executed from the README text itself: a README that stops working fails CI.

The fenced blocks are taken from README.md with a Markdown parser, run as written in a fresh
environment. What a test substitutes is limited and said here: free loopback ports for the
service walkthrough's 8000/8080/8081, a private GitOps remote and run directory for the release
walkthrough (never the user's `.gitops/`) in which prod already runs an earlier release (promoted
through the promote stage, as in any deployment but the very first — a rollback needs something to
return to), the acting identity, and — for the prod promotion only — a clock outside the prod deny
sync windows (the README says prod is refused in them).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from markdown_it import MarkdownIt

from pipeline.core.context import RunContext
from pipeline.core.result import Status
from pipeline.gitops import repo as gitops
from pipeline.gitops import sync_windows as pm
from pipeline.gitops.release import Release
from pipeline.runtime import engine as engines
from pipeline.runtime import registry
from pipeline.runtime.procs import free_port
from pipeline.stages import promote
from tests.promotion.conftest import ci_evidence, prod_local_options

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


def fenced_blocks(heading: str, text: str | None = None) -> list[tuple[str, str]]:
    """(language, code) of every fenced block under `heading` (until the next heading of any level)."""
    tokens = MarkdownIt().parse(README.read_text() if text is None else text)
    blocks: list[tuple[str, str]] = []
    current = None
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            current = tokens[i + 1].content
        elif tok.type == "fence" and current == heading:
            blocks.append((tok.info.strip(), tok.content))
    return blocks


def test_fenced_blocks_finds_each_block_of_a_section() -> None:
    text = "# A\n```bash\na\n```\n## B\n```python\nb\n```\n```bash\nc\n```\n# C\n```bash\nd\n```\n"
    assert fenced_blocks("B", text) == [("python", "b\n"), ("bash", "c\n")]
    assert fenced_blocks("missing", text) == []


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without the project's own settings, git config isolated."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PIPELINE_", "VIRTUAL_ENV"))}
    env |= {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "CI": "true"}
    return env | extra


def run_script(script: str, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """bash -c script in its own process group; the group (background jobs included) is killed after."""
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"walkthrough did not finish in {timeout:.0f} s:\n{out[-4000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the simulator and gateway it left running
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


@pytest.fixture
def checkout_copy(tmp_path: Path) -> Path:
    """What the service walkthrough touches, copied (mtimes kept, so `make venv` stays a no-op)."""
    work = tmp_path / "checkout"
    shutil.copytree(REPO / "app", work / "app", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Makefile", "pyproject.toml", "uv.lock"):
        shutil.copy2(REPO / name, work / name)
    (work / ".venv").symlink_to(REPO / ".venv")
    return work


@pytest.mark.slow
def test_try_the_service_by_hand(checkout_copy: Path) -> None:
    blocks = fenced_blocks("Try the service by hand")
    assert [lang for lang, _ in blocks] == ["bash", "python"], "the walkthrough's shape changed: update this test"
    ports = {"8000": str(free_port()), "8080": str(free_port()), "8081": str(free_port())}

    def on_free_ports(code: str) -> str:
        return re.sub(r"\b(8000|8080|8081)\b", lambda m: ports[m.group(1)], code)

    shell, python = (on_free_ports(code) for _, code in blocks)
    # The walkthrough leaves the simulator and gateway running, as a user would; stop them with it.
    script = f"set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{shell}\n.venv/bin/python - <<'PYTHON'\n{python}PYTHON\n"
    res = run_script(script, checkout_copy, clean_env(), timeout=180)
    assert res.returncode == 0, res.stdout[-4000:]
    unary, _, streamed = res.stdout.partition("ChatCompletion(")[2].partition("\n")
    assert "finish_reason=" in unary and "role='assistant'" in unary, res.stdout[-2000:]
    assert streamed.strip(), f"the streaming example printed nothing:\n{res.stdout[-2000:]}"
    # The walkthrough's keys went where it said, inside the copy, not the checkout.
    assert (checkout_copy / ".runs" / "keys" / "jwks.json").is_file()


def outside_deny_windows(env: str, now: dt.datetime) -> dt.datetime:
    """`now` if no deny sync window of `env` is active, else the last minute before the active one began."""
    repo = gitops.GitOpsRepo("unused", REPO)
    t = now
    for _ in range(64):  # each step jumps to before one window's start: bounded
        active = pm.sync_windows(repo, env, t)["active_deny"]
        if not active:
            return t
        since = min(dt.datetime.strptime(w["since"], "%a %Y-%m-%d %H:%M UTC").replace(tzinfo=dt.UTC) for w in active)
        t = since - dt.timedelta(minutes=1)
    raise AssertionError(f"no time outside {env}'s deny windows found before {now}")


def test_outside_deny_windows_steps_back_before_the_window() -> None:
    saturday = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
    assert outside_deny_windows("prod", saturday) == dt.datetime(2026, 11, 27, 17, 59, tzinfo=dt.UTC)
    christmas = dt.datetime(2026, 12, 25, 12, 0, tzinfo=dt.UTC)
    before = outside_deny_windows("prod", christmas)
    assert (
        before < dt.datetime(2026, 12, 20, tzinfo=dt.UTC)
        and not pm.sync_windows(gitops.GitOpsRepo("unused", REPO), "prod", before)["active_deny"]
    )
    wednesday = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
    assert outside_deny_windows("prod", wednesday) == wednesday


def release_commands() -> Iterator[str]:
    """The release block's commands, one per line, comments dropped."""
    (lang, code), *rest = fenced_blocks("Releasing (release managers)")
    assert lang == "bash" and not rest, "the release walkthrough's shape changed: update this test"
    for line in code.splitlines():
        command = line.split("  #", 1)[0].strip()
        if command:
            yield command


def seed_previous_release(remote: str, tmp_path: Path, now: dt.datetime) -> str:
    """Promote an earlier release dev → staging → prod through the promote stage; its id."""
    previous = Release(
        id="0.0.9+g0000009",
        commit="9" * 40,
        chart_version="0.1.0",
        gateway_digest="sha256:" + "1" * 64,
        vllm_digest="sha256:" + "2" * 64,
        model_revision="rev-previous",
    )
    ctx = RunContext(run_dir=tmp_path / "seed-run")
    steps = [
        promote.PromoteOptions(
            to="dev", release=previous, evidence=ci_evidence(rel=previous), run_id="seed", gitops_repo=remote
        ),
        promote.PromoteOptions(to="staging", gitops_repo=remote, policy_profile="local", actor="rm"),
        prod_local_options(remote, now=now),
    ]
    for opts in steps:
        result = promote.run(opts, ctx)
        assert result.status is Status.PASSED, result.summary
    return previous.id


@pytest.mark.slow
@pytest.mark.timeout(1800)  # `make ci` is part of the walkthrough
def test_release_manager_walkthrough(tmp_path: Path) -> None:
    remote = str(gitops.ensure_local_remote(tmp_path / "gitops.git", REPO))
    env = clean_env(
        PIPELINE_GITOPS_REPO=str(remote),
        PIPELINE_RUNS_DIR=str(tmp_path / "runs"),
        PIPELINE_ACTOR="release-manager@example.com",
    )
    prod_clock = outside_deny_windows("prod", dt.datetime.now(dt.UTC))
    previous = seed_previous_release(remote, tmp_path, prod_clock - dt.timedelta(minutes=5))
    script = ["set -euo pipefail"]
    for command in release_commands():
        if "--to prod" in command:
            # libfaketime: the promotion sees a time outside the deny windows, whatever today is.
            command = f"faketime -f {shlex.quote('@' + prod_clock.strftime('%Y-%m-%d %H:%M:%S'))} {command}"
        script += [f"echo '$ {command}'", command]
    serving_before = registry.status() is not None
    try:
        res = run_script("\n".join(script), REPO, env, timeout=1500)
        assert res.returncode == 0, res.stdout[-6000:]
        # `make ci` promoted to dev the digests it pushed, and says where: podman pulls them from there.
        dev = Release.from_values(
            yaml.safe_load(gitops.git("show", "main:environments/dev/release.yaml", cwd=Path(remote)))
        )
        assert dev.images_built and dev.registry and dev.gateway_repository and dev.vllm_repository, dev
        podman = engines.current().engine
        assert podman is not None
        for ref in (f"{dev.gateway_repository}@{dev.gateway_digest}", f"{dev.vllm_repository}@{dev.vllm_digest}"):
            pulled = podman.run(["pull", "--tls-verify=false", ref], timeout=600)
            assert pulled.returncode == 0, (ref, pulled.stderr[-2000:])
    finally:
        if not serving_before:  # `build` leaves the embedded registry serving, as a registry does
            registry.stop()
    assert res.returncode == 0, res.stdout[-6000:]
    assert "promote --to prod" in res.stdout
    # The walkthrough really moved prod, then rolled it back and lifted the freeze: git says so.
    log = subprocess.run(
        ["git", "--git-dir", remote, "log", "--format=%s", "main"], capture_output=True, text=True, check=True
    ).stdout
    # (each prod promotion and rollback also moves the Argo CD pin in a `pin(prod)` commit)
    subjects = [s for s in log.splitlines() if not s.startswith("pin(")]
    assert subjects[0] == "unfreeze(prod): by alice", log
    assert subjects[1].startswith("rollback(prod): ") and subjects[1].endswith(f"→ {previous}"), log
    assert any(s.startswith("promote(prod): ") for s in subjects), log
    assert any(s.startswith("promote(staging): ") for s in subjects), log
    assert any(s.startswith("promote(dev): ") for s in subjects), log
