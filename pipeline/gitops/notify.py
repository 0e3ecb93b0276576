"""Tell people what changed: a Slack-compatible incoming-webhook POST on promote, rollback, freeze.

Optional (`--notify-url URL` or $PIPELINE_NOTIFY_URL). The payload is what Slack's incoming
webhooks accept (docs.slack.dev "Sending messages using incoming webhooks"): a JSON object
with `text` (the notification/fallback line) and Block Kit `blocks` (a header, sections of
mrkdwn at most 3000 characters each, a context line). Mattermost and Rocket.Chat accept the
same shape. A notification never changes the outcome of the change it reports: a failure is
returned (and printed on stderr by the caller), never raised. The URL carries the webhook's
secret in its path, so only its scheme and host are ever printed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from rich.markup import escape

log = logging.getLogger(__name__)

ENV_VAR = "PIPELINE_NOTIFY_URL"
TIMEOUT_SECONDS = 5.0
# Block Kit limits (section text, header text, blocks per message): beyond them Slack answers 400.
SECTION_MAX = 3000
HEADER_MAX = 150
BLOCKS_MAX = 50


@dataclass(frozen=True)
class Notice:
    """Whether the notification was delivered, and to which host (never the full URL)."""

    sent: bool
    detail: str
    to: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "detail": self.detail, "to": self.to}

    def line(self) -> str:
        """One line for the human view (rich markup)."""
        if self.sent:
            return f"[dim]notified {self.to}[/dim]"
        return f"[yellow]notification not delivered (the change itself stands):[/yellow] {escape(self.detail)}"


def resolve_url(explicit: str | None) -> str | None:
    """--notify-url, else $PIPELINE_NOTIFY_URL, else None (no notification)."""
    return explicit or os.environ.get(ENV_VAR, "").strip() or None


def where(url: str) -> str:
    """scheme://host[:port] of the webhook: printable (the path holds the secret)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"


def _chunks(text: str, size: int) -> list[str]:
    """Split at line ends into pieces of at most `size` characters (a longer line is split inside)."""
    pieces: list[str] = []
    current = ""
    for line in text.splitlines() or [""]:
        while len(line) > size:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:size])
            line = line[size:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > size:
            pieces.append(current)
            current = line
        else:
            current = candidate
    if current:
        pieces.append(current)
    return pieces


def payload(title: str, body: Sequence[str], facts: Mapping[str, str | None]) -> dict[str, Any]:
    """`text` = the title; blocks: header, the body lines (split into sections), the facts as context."""
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": title[: HEADER_MAX - 1] + "…" if len(title) > HEADER_MAX else title},
        }
    ]
    text = "\n".join(body)
    if text.strip():
        for piece in _chunks(text, SECTION_MAX):
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": piece}})
    context = " · ".join(f"*{k}*: {v}" for k, v in facts.items() if v)
    if context:
        # Context elements hold at most 10 items and the same 3000 characters as a section.
        for piece in _chunks(context, SECTION_MAX)[:10]:
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": piece}]})
    return {"text": title, "blocks": blocks[:BLOCKS_MAX]}


def send(url: str, doc: Mapping[str, Any], *, timeout: float = TIMEOUT_SECONDS) -> Notice:
    """POST `doc` as JSON; any failure (refused, timeout, HTTP error) is returned, never raised."""
    to = where(url)
    try:
        resp = httpx.post(url, json=dict(doc), timeout=timeout)
    except httpx.HTTPError as exc:
        return Notice(False, f"{type(exc).__name__} posting to {to}: {str(exc).replace(url, to)}", to)
    if resp.is_success:
        return Notice(True, f"HTTP {resp.status_code} from {to}", to)
    answer = " ".join(resp.text.split())[:300]
    return Notice(False, f"HTTP {resp.status_code} from {to}: {answer or '(empty body)'}", to)


def notify(url: str | None, title: str, body: Sequence[str], facts: Mapping[str, str | None]) -> Notice | None:
    """Send one notification when a URL is configured (None: none configured); the caller prints `line()` on stderr."""
    if not url:
        return None
    notice = send(url, payload(title, body, facts))
    log.debug("notification: %s", notice.detail)
    return notice


ACTOR_DEFAULT = "default: the CI identity, $PIPELINE_ACTOR, git user.email, the OS user"


def add_change_arguments(parser: Any, *, who: str, notify: str = "the change") -> None:
    """--actor, --gitops-repo and --notify-url: the flags of every verb that records a change in the
    GitOps repository (promote, rollback, freeze, unfreeze), worded alike."""
    parser.add_argument("--actor", metavar="NAME", help=f"{who} (recorded; {ACTOR_DEFAULT})")
    parser.add_argument(
        "--gitops-repo", metavar="URL", help="GitOps remote URL (default: $PIPELINE_GITOPS_REPO or the local one)"
    )
    parser.add_argument(
        "--notify-url",
        metavar="URL",
        help=f"post a Slack-compatible notification of {notify} here (default: ${ENV_VAR}; none if unset)",
    )
