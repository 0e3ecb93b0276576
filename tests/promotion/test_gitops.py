"""gitops: retry on a fresh base when someone else pushed, bounded; atomic seeding; YAML edits."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.gitops.repo import GitOpsError, GitOpsRepo, Message, edit_yaml, git, parse_trailers
from tests.promotion.conftest import GIT_IDENT


def push_competing(remote: str, where: Path, name: str) -> None:
    other = GitOpsRepo(remote, where)
    other.sync()
    (other.path / name).write_text("x\n")
    git("add", "-A", cwd=other.path)
    git("commit", "-qm", f"competing {name}", cwd=other.path, env=GIT_IDENT)
    git("push", "-q", "origin", "HEAD:main", cwd=other.path)


def test_rejected_push_is_retried_on_a_fresh_base(remote: str, tmp_path: Path) -> None:
    calls = {"n": 0}

    def mutate(repo: GitOpsRepo) -> Message:
        calls["n"] += 1
        if calls["n"] == 1:
            push_competing(remote, tmp_path / "other", "competitor.txt")
        (repo.path / "mine.txt").write_text(f"attempt {calls['n']}\n")
        return Message("mine", trailers=[("Run-Id", "r")])

    tx = GitOpsRepo(remote, tmp_path / "work").transact(mutate, backoff=0.01)
    assert tx.changed and tx.attempts == 2
    check = GitOpsRepo(remote, tmp_path / "check")
    check.sync()
    assert (check.path / "competitor.txt").exists() and (check.path / "mine.txt").read_text() == "attempt 2\n"


def test_retries_are_bounded(remote: str, tmp_path: Path) -> None:
    calls = {"n": 0}

    def mutate(repo: GitOpsRepo) -> Message:
        calls["n"] += 1
        push_competing(remote, tmp_path / f"o{calls['n']}", f"c{calls['n']}.txt")
        (repo.path / "mine.txt").write_text("x\n")
        return Message("mine")

    with pytest.raises(GitOpsError, match="gave up after 3"):
        GitOpsRepo(remote, tmp_path / "work").transact(mutate, attempts=3, backoff=0.01)


def test_exception_in_mutate_pushes_nothing(remote: str, tmp_path: Path) -> None:
    repo = GitOpsRepo(remote, tmp_path / "work")
    before = repo.sync()

    def mutate(r: GitOpsRepo) -> Message:
        (r.path / "half.txt").write_text("half\n")
        raise GitOpsError("boom")

    with pytest.raises(GitOpsError):
        repo.transact(mutate)
    assert repo.sync() == before and not (repo.path / "half.txt").exists()


def test_edit_yaml_refuses_to_move_unrelated_keys(tmp_path: Path) -> None:
    f = tmp_path / "v.yaml"
    f.write_text("a:\n  b: 1  # keep\nc: 2\n")
    assert edit_yaml(f, {("a", "b"): 3}, "v.yaml")
    assert f.read_text() == "a:\n  b: 3  # keep\nc: 2\n"
    assert not edit_yaml(f, {("a", "b"): 3}, "v.yaml")
    f.write_text("- not a mapping\n")
    with pytest.raises(GitOpsError, match="expected a mapping"):
        edit_yaml(f, {("a",): 1}, "v.yaml")


def test_trailer_parsing() -> None:
    msg = Message(
        "subj", "body line: not a trailer", [("Approved-By", "a"), ("Approved-By", "b"), ("X", "multi\nline")]
    )
    parsed = parse_trailers(msg.render())
    assert parsed["approved-by"] == ["a", "b"] and parsed["x"] == ["multi line"]
    assert parse_trailers("subject only") == {}
