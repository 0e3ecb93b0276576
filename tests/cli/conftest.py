"""Fixtures for the CLI contract: a private GitOps remote (tests/promotion's), the CLI run in-process
and as a subprocess, and a Slack incoming-webhook stand-in on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipeline import cli
from pipeline.gitops.release import Release
from pipeline.stages import promote
from tests.promotion.conftest import ci_evidence, make_release, remote, source_tree  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Run dirs and temporary dirs under tmp_path; no CI identity or remote from the caller's shell."""
    for var in ("GITHUB_ACTOR", "GITLAB_USER_LOGIN", "CI_COMMIT_AUTHOR", "BUILDKITE_BUILD_CREATOR_EMAIL"):
        monkeypatch.delenv(var, raising=False)
    for var in ("PIPELINE_GITOPS_REPO", "PIPELINE_NOTIFY_URL", "PIPELINE_ACTOR"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "runs").mkdir()
    (tmp_path / "tmp").mkdir()
    env = {"PIPELINE_RUNS_DIR": str(tmp_path / "runs"), "TMPDIR": str(tmp_path / "tmp")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # tempfile caches its directory: make it see TMPDIR for in-process runs too.
    monkeypatch.setattr("tempfile.tempdir", None)
    return env


@pytest.fixture
def run_cli(cli_env: dict[str, str], capfd: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """The CLI in this process (cli.main), stdout and stderr captured at the file-descriptor level."""

    def run(*argv: str) -> Ran:
        capfd.readouterr()
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse: --help, --version, usage errors
            code = int(exc.code or 0)
        out, err = capfd.readouterr()
        return Ran(code, out, err)

    return run


@pytest.fixture
def run_process(cli_env: dict[str, str]) -> Callable[..., Ran]:
    """`python -m pipeline ...` as its own process: what a script sees."""

    def run(*argv: str, env: dict[str, str] | None = None) -> Ran:
        full = {**os.environ, **cli_env, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline", *argv], cwd=REPO, env=full, capture_output=True, text=True, timeout=120
        )
        return Ran(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def in_dev(remote: str, tmp_path: Path) -> Callable[[Release], None]:  # noqa: F811 (the imported fixture)
    """Promote a release into the first env the way `ci` does (its release and gate evidence)."""
    from pipeline.core.context import RunContext

    def put(rel: Release) -> None:
        res = promote.run(
            promote.PromoteOptions(
                to="dev", release=rel, evidence=ci_evidence(rel=rel), gitops_repo=remote, actor="ci"
            ),
            RunContext(run_dir=tmp_path / "ci-run"),
        )
        assert res.ok and "promoted" in res.summary, res.summary

    return put


# ---------------------------------------------------------------- a Slack incoming-webhook stand-in


@dataclass
class Webhook:
    url: str
    received: list[dict[str, Any]] = field(default_factory=list)
    # Every request answered with this status (a broken receiver), when set.
    fail_with: int | None = None


# Block Kit limits Slack enforces on incoming webhooks (docs.slack.dev: reference/block-kit/blocks —
# "section" text max 3000 characters, "header" plain_text max 150, at most 50 blocks per message;
# messaging/sending-messages-using-incoming-webhooks — malformed JSON → 400 invalid_payload,
# a message without text or blocks → 400 no_text, success → 200 "ok").
BLOCK_TYPES = {"header", "section", "context", "divider"}


def slack_error(doc: Any) -> str | None:
    """What Slack would answer with HTTP 400 for this payload, or None when it accepts it."""
    if not isinstance(doc, dict):
        return "invalid_payload"
    text, blocks = doc.get("text"), doc.get("blocks")
    if not (isinstance(text, str) and text.strip()) and not blocks:
        return "no_text"
    if blocks is None:
        return None
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "invalid_blocks"
    for b in blocks:
        if not isinstance(b, dict) or b.get("type") not in BLOCK_TYPES:
            return "invalid_blocks"
        if b["type"] == "header":
            t = b.get("text") or {}
            if t.get("type") != "plain_text" or not 0 < len(t.get("text", "")) <= 150:
                return "invalid_blocks"
        elif b["type"] == "section":
            t = b.get("text") or {}
            if t.get("type") not in ("mrkdwn", "plain_text") or not 0 < len(t.get("text", "")) <= 3000:
                return "invalid_blocks"
        elif b["type"] == "context":
            els = b.get("elements")
            if not isinstance(els, list) or not 0 < len(els) <= 10:
                return "invalid_blocks"
            # Each element is an image or a text object (mrkdwn/plain_text, text at most 3000 characters).
            for el in els:
                if not isinstance(el, dict) or el.get("type") not in ("mrkdwn", "plain_text", "image"):
                    return "invalid_blocks"
                if el["type"] != "image" and not 0 < len(str(el.get("text") or "")) <= 3000:
                    return "invalid_blocks"
    return None


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    """An incoming-webhook receiver on 127.0.0.1 (free port; the path plays the secret), stopped after."""
    hook = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if hook.fail_with is not None:
                return self._answer(hook.fail_with, "internal_error")
            if self.path != "/services/T000/B000/s3cr3t":
                return self._answer(404, "no_service")
            if not (self.headers.get("Content-Type") or "").startswith("application/json"):
                return self._answer(400, "invalid_payload")
            try:
                doc = json.loads(body)
            except ValueError:
                return self._answer(400, "invalid_payload")
            error = slack_error(doc)
            if error:
                return self._answer(400, error)
            hook.received.append(doc)
            self._answer(200, "ok")

        def _answer(self, status: int, text: str) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/s3cr3t"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
