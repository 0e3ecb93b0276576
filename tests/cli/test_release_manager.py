"""Release-manager verbs against a private GitOps remote: promote --dry-run (pin and values diff),
soak refusals that say when, promote --release, history, freeze, and the notification hook."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.core.context import RunContext
from pipeline.core.exit_codes import ExitCode
from pipeline.gitops import promotion as pm
from pipeline.gitops.release import Release
from pipeline.gitops.repo import git
from pipeline.stages import promote
from tests.promotion.conftest import clone, commit_by_hand, prod_local_options

from .conftest import Ran, Webhook

LOCAL = ("--policy-profile", "local", "--actor", "rm")


def head(remote: str) -> str:
    return git("ls-remote", remote, "refs/heads/main").split()[0]


def to_staging(remote: str, ctx_dir: Path, **kw: object) -> None:
    res = promote.run(
        promote.PromoteOptions(to="staging", gitops_repo=remote, policy_profile="local", actor="rm", **kw),  # type: ignore[arg-type]
        RunContext(run_dir=ctx_dir),
    )
    assert res.ok and "promoted" in res.summary, res.summary


def test_dry_run_shows_the_pin_and_values_diff_and_pushes_nothing(
    run_cli: Callable[..., Ran],
    remote: str,
    in_dev: Callable[[Release], None],
    make_release: Callable[..., Release],
    tmp_path: Path,
) -> None:
    one, two = make_release(1), make_release(2)
    in_dev(one)
    to_staging(remote, tmp_path / "s1")
    assert promote.run(prod_local_options(remote), RunContext(run_dir=tmp_path / "p1")).ok
    # Someone edits prod's values on the branch: Argo CD runs prod at its pin, so the next prod promotion ships it.
    work = clone(remote, tmp_path, "edit")
    values = work.file("environments/prod/values.yaml")
    values.write_text(values.read_text().replace("replicaCount: 1", "replicaCount: 3"))
    commit_by_hand(work, "prod: 3 replicas")
    in_dev(two)
    to_staging(remote, tmp_path / "s2")
    before = head(remote)

    argv = ["promote", "--to", "prod", "--dry-run", *LOCAL, "--approve", "alice", "--approve", "bob"]
    argv += ["--allow-unbuilt-images", "--gitops-repo", remote]
    ran = run_cli(*argv, "-o", "json")
    assert ran.code == ExitCode.OK, ran.err
    doc = ran.json()
    assert doc["status"] == "passed" and "nothing pushed" in doc["summary"]
    pins = doc["evidence"]["pins_diff"]
    assert f'release.id: "{one.id}" → "{two.id}"' in pins
    assert f'gateway.image.digest: "{one.gateway_digest}" → "{two.gateway_digest}"' in pins
    assert 'vllm.model.revision: "rev1" → "rev2"' in pins
    assert doc["evidence"]["values_diff"]["changes"] == ["replicaCount: 1 → 3"]
    # The human view lists every pin change and the values change, whole.
    table = run_cli(*argv)
    assert table.code == 0
    for line in [*pins, "replicaCount: 1 → 3"]:
        assert line in table.out, line
    assert head(remote) == before  # nothing pushed
    assert pm.read_release(clone(remote, tmp_path, "after"), "prod") == one


def test_a_soak_refusal_says_when_the_release_becomes_eligible(
    run_cli: Callable[..., Ran],
    remote: str,
    in_dev: Callable[[Release], None],
    make_release: Callable[..., Release],
    tmp_path: Path,
) -> None:
    rel = make_release(1)
    in_dev(rel)
    pinned = pm.pinned_since(clone(remote, tmp_path, "c"), "dev")
    assert pinned is not None
    # policies/promotion.data.json: staging needs 1800 s of soak in dev.
    eligible = pm.iso(pinned.date + dt.timedelta(seconds=1800))
    ran = run_cli("promote", "--to", "staging", "--actor", "rm", "--gitops-repo", remote, "-o", "json")
    assert ran.code == ExitCode.REFUSED
    doc = ran.json()
    assert doc["evidence"]["eligible_at"] == eligible
    assert f"soak complete at {eligible}" in doc["summary"]
    soak = next(c for c in doc["checks"] if c["name"] == "soak")
    assert eligible in soak["detail"] and "<staging>" in soak["detail"]
    # The time is right: one second before it soak still refuses; at it, the same promotion passes.
    at = dt.datetime.fromisoformat(eligible.replace("Z", "+00:00"))
    opts = {"to": "staging", "gitops_repo": remote, "actor": "rm", "dry_run": True}
    early = promote.run(promote.PromoteOptions(**opts, now=at - dt.timedelta(seconds=1)), RunContext(tmp_path / "e"))  # type: ignore[arg-type]
    assert any("has soaked" in c.detail for c in early.failures())
    ontime = promote.run(promote.PromoteOptions(**opts, now=at), RunContext(tmp_path / "o"))  # type: ignore[arg-type]
    assert ontime.ok, [c.detail for c in ontime.failures()]


def test_promote_release_picks_one_the_source_env_ran(
    run_cli: Callable[..., Ran],
    remote: str,
    in_dev: Callable[[Release], None],
    make_release: Callable[..., Release],
    tmp_path: Path,
) -> None:
    one, two = make_release(1), make_release(2)
    in_dev(one)
    in_dev(two)
    g = ("--gitops-repo", remote)
    ran = run_cli("promote", "--to", "staging", "--release", one.id, *LOCAL, *g, "-o", "json")
    assert ran.code == ExitCode.OK, ran.err
    assert pm.read_release(clone(remote, tmp_path, "a"), "staging") == one  # not dev's current release
    assert ran.json()["evidence"]["release"]["id"] == one.id

    unknown = run_cli("promote", "--to", "staging", "--release", "9.9.9", *LOCAL, *g, "-o", "json")
    assert unknown.code == ExitCode.REFUSED
    assert f"never ran it; it ran: {two.id}, {one.id}" in unknown.json()["summary"]

    # A release a rollback took out of the source env is not promotable from there.
    assert run_cli("rollback", "--env", "dev", "--actor", "oncall", "--reason", "5xx", *g).code == 0
    reverted = run_cli("promote", "--to", "staging", "--release", two.id, *LOCAL, *g, "-o", "json")
    assert reverted.code == ExitCode.REFUSED
    assert "rolled back out of <dev>" in reverted.json()["summary"] and "5xx" in reverted.json()["summary"]


def test_history_lists_the_envs_changes_newest_first(
    run_cli: Callable[..., Ran], remote: str, in_dev: Callable[[Release], None], make_release: Callable[..., Release]
) -> None:
    one, two = make_release(1), make_release(2)
    in_dev(one)
    in_dev(two)
    g = ("--gitops-repo", remote)
    assert run_cli("rollback", "--env", "dev", "--actor", "oncall", "--reason", "p99", *g).code == 0
    assert run_cli("unfreeze", "--env", "dev", "--actor", "lead", "--reason", "fixed", *g).code == 0
    assert run_cli("freeze", "--env", "dev", "--actor", "rm", "--reason", "release party", *g).code == 0
    # A change to another env is not in dev's history.
    assert run_cli("freeze", "--env", "prod", "--actor", "rm", "--reason", "x", *g).code == 0

    entries = run_cli("history", "--env", "dev", *g, "-o", "json").json()
    assert [e["kind"] for e in entries] == ["freeze", "unfreeze", "rollback", "promote", "promote", "edit"]
    freeze, unfreeze, rollback, promo2, promo1, _seed = entries
    assert (freeze["by"], freeze["reason"], freeze["frozen"]) == ("rm", "release party", True)
    assert (unfreeze["by"], unfreeze["reason"], unfreeze["frozen"]) == ("lead", "fixed", False)
    assert (rollback["by"], rollback["release"], rollback["reverted_release"]) == ("oncall", one.id, two.id)
    assert rollback["reason"] == "p99" and rollback["frozen"] is True
    assert (promo2["release"], promo2["from"], promo1["release"]) == (two.id, "ci", one.id)
    assert [e["at"] for e in entries] == sorted((e["at"] for e in entries), reverse=True)
    assert len(run_cli("history", "--env", "dev", "--limit", "2", *g, "-o", "json").json()) == 2
    table = run_cli("history", "--env", "dev", *g)
    assert "release party" in table.out and "rollback" in table.out


def test_freeze_refuses_promotions_until_unfreeze(
    run_cli: Callable[..., Ran], remote: str, in_dev: Callable[[Release], None], make_release: Callable[..., Release]
) -> None:
    in_dev(make_release(1))
    g = ("--gitops-repo", remote)
    frozen = run_cli("freeze", "--env", "staging", "--reason", "change freeze", "--actor", "rm", *g, "-o", "json")
    assert frozen.code == 0 and frozen.json()["changed"] is True
    again = run_cli("freeze", "--env", "staging", "--reason", "other", "--actor", "bob", *g, "-o", "json")
    assert again.code == 0 and again.json()["changed"] is False and again.json()["by"] == "rm"  # who froze it stays
    refused = run_cli("promote", "--to", "staging", *LOCAL, *g, "-o", "json")
    assert refused.code == ExitCode.REFUSED
    assert any("frozen" in c["detail"] for c in refused.json()["checks"]), refused.json()["checks"]
    assert run_cli("unfreeze", "--env", "staging", "--actor", "rm", *g).code == 0
    assert run_cli("promote", "--to", "staging", *LOCAL, *g).code == ExitCode.OK


def test_promote_rollback_and_freeze_notify_a_slack_compatible_webhook(
    run_cli: Callable[..., Ran],
    remote: str,
    in_dev: Callable[[Release], None],
    make_release: Callable[..., Release],
    webhook: Webhook,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    one, two = make_release(1), make_release(2)
    g = ("--gitops-repo", remote)
    in_dev(one)
    promoted = run_cli("promote", "--to", "staging", *LOCAL, *g, "--notify-url", webhook.url, "-o", "json")
    assert promoted.code == 0 and promoted.json()["evidence"]["notification"]["sent"] is True
    in_dev(two)
    assert run_cli("promote", "--to", "staging", *LOCAL, *g).code == 0  # no URL: nothing sent
    monkeypatch.setenv("PIPELINE_NOTIFY_URL", webhook.url)
    assert run_cli("rollback", "--env", "staging", "--actor", "oncall", "--reason", "p99 high", *g).code == 0
    assert run_cli("freeze", "--env", "prod", "--actor", "rm", "--reason", "year end", *g).code == 0

    texts = [doc["text"] for doc in webhook.received]
    assert texts == [
        f"{one.id} promoted dev → staging",
        f"staging rolled back: {two.id} → {one.id}",
        "prod frozen by rm",
    ]
    # Each one is Slack's shape (the stand-in refuses anything else with 400) and carries the why.
    blocks = ["\n".join(str(b) for b in doc["blocks"]) for doc in webhook.received]
    assert "p99 high" in blocks[1] and "year end" in blocks[2]


def test_a_failed_notification_never_fails_the_change(
    run_cli: Callable[..., Ran],
    remote: str,
    in_dev: Callable[[Release], None],
    make_release: Callable[..., Release],
    webhook: Webhook,
    tmp_path: Path,
) -> None:
    in_dev(make_release(1))
    webhook.fail_with = 500
    ran = run_cli(
        "promote", "--to", "staging", *LOCAL, "--gitops-repo", remote, "--notify-url", webhook.url, "-o", "json"
    )
    assert ran.code == ExitCode.OK
    note = ran.json()["evidence"]["notification"]
    assert note["sent"] is False and "HTTP 500" in note["detail"]
    assert "notification not delivered" in ran.err and "HTTP 500" in ran.err
    assert "s3cr3t" not in ran.err + ran.out  # the webhook's secret path is never printed
    assert pm.read_release(clone(remote, tmp_path, "c"), "staging") == make_release(1)
    # Nobody listening at all: the same.
    closed = webhook.url.replace(webhook.url.split(":")[2].split("/")[0], "1")
    frozen = run_cli(
        "freeze", "--env", "dev", "--reason", "r", "--actor", "a", "--gitops-repo", remote, "--notify-url", closed
    )
    assert frozen.code == ExitCode.OK and "notification not delivered" in frozen.err


def test_a_long_notification_is_split_into_blocks_slack_accepts_without_losing_text() -> None:
    from pipeline.gitops import notify

    from .conftest import slack_error

    body = [f"Values-Change: replicas.{i}: {i} → {i + 1} " + "x" * 90 for i in range(80)]  # ~8 KB
    doc = notify.payload("r1 promoted staging → prod", body, {"by": "rm", "commit": "abc"})
    assert slack_error(doc) is None
    sections = "\n".join(b["text"]["text"] for b in doc["blocks"] if b["type"] == "section")
    assert sections == "\n".join(body)
    assert slack_error({"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "y" * 3001}}]}) is not None
