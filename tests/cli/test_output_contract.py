"""Results on stdout (one document for -o json|yaml), progress on stderr, distinct exit codes,
nothing left in the tree by read-only verbs, messages wrapped and never cut."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from pipeline.core.exit_codes import ExitCode
from pipeline.gitops import promotion as pm
from pipeline.gitops.release import Release
from pipeline.gitops.repo import git

from .conftest import Ran


def heads(remote: str) -> str:
    return git("ls-remote", remote, "refs/heads/main")


def test_result_alone_on_stdout_progress_on_stderr(run_process: Callable[..., Ran], remote: str) -> None:
    ran = run_process(
        "freeze",
        "--env",
        "staging",
        "--reason",
        "incident 7",
        "--actor",
        "alice",
        "--gitops-repo",
        remote,
        "-o",
        "json",
    )
    assert ran.code == ExitCode.OK, ran.err
    doc = json.loads(ran.out)  # the whole of stdout is one JSON document
    assert doc["env"] == "staging" and doc["frozen"] is True and doc["changed"] is True and doc["by"] == "alice"
    # The push progress and the run dir pointer went to stderr, not into the document.
    assert "pushed" in ran.err and "results:" in ran.err
    assert "pushed" not in ran.out


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_output_option_before_or_after_the_verb(run_cli: Callable[..., Ran], remote: str, where: str, fmt: str) -> None:
    verb = ["status", "--gitops-repo", remote]
    ran = run_cli(*(["-o", fmt, *verb] if where == "before" else [*verb, "--output", fmt]))
    assert ran.code == 0, ran.err
    rows = json.loads(ran.out) if fmt == "json" else yaml.safe_load(ran.out)
    assert [r["env"] for r in rows] == list(pm.ENVS)


def test_status_json_alias_still_works(run_cli: Callable[..., Ran], remote: str) -> None:
    ran = run_cli("status", "--json", "--gitops-repo", remote)
    assert [r["env"] for r in json.loads(ran.out)] == list(pm.ENVS)


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_every_gitops_verb_prints_one_parseable_document(
    run_cli: Callable[..., Ran],
    remote: str,
    in_dev: Callable[[Release], None],
    make_release: Callable[..., Release],
    fmt: str,
) -> None:
    in_dev(make_release(1))
    load = json.loads if fmt == "json" else yaml.safe_load
    g = ("--gitops-repo", remote)
    docs = {
        "status": run_cli("status", *g, "-o", fmt),
        "history": run_cli("history", "--env", "dev", *g, "-o", fmt),
        "promote": run_cli(
            "promote", "--to", "staging", "--policy-profile", "local", "--actor", "rm", "--dry-run", *g, "-o", fmt
        ),
        "freeze": run_cli("freeze", "--env", "prod", "--reason", "r", "--actor", "a", *g, "-o", fmt),
        "unfreeze": run_cli("unfreeze", "--env", "prod", "--actor", "a", *g, "-o", fmt),
        "rollback": run_cli("rollback", "--env", "dev", "--actor", "a", *g, "-o", fmt),
    }
    parsed = {verb: load(ran.out) for verb, ran in docs.items()}
    assert all(ran.code in (0, 1) for ran in docs.values()), {v: (r.code, r.err[-300:]) for v, r in docs.items()}
    assert parsed["history"][0]["kind"] == "promote" and parsed["history"][0]["release"] == make_release(1).id
    assert parsed["promote"]["stage"] == "promote" and parsed["promote"]["status"] == "passed"  # a StageResult
    assert parsed["freeze"]["frozen"] is True and parsed["unfreeze"]["frozen"] is False
    # dev's only promotion has nothing before it: a verdict (refused), still one document.
    assert parsed["rollback"]["stage"] == "rollback" and parsed["rollback"]["status"] == "failed"
    assert docs["rollback"].code == ExitCode.REFUSED


def test_a_stage_verb_prints_its_stage_result(run_cli: Callable[..., Ran], tmp_path: Path) -> None:
    # render is a real stage (helm, schemas, policies): its -o json document is the StageResult it wrote.
    ran = run_cli(
        "--run-dir", str(tmp_path / "r"), "render", "--env", "dev", "--out", str(tmp_path / "o"), "-o", "json"
    )
    doc = json.loads(ran.out)
    assert doc == json.loads((tmp_path / "r" / "render.json").read_text())
    assert doc["stage"] == "render" and ran.code == (0 if doc["status"] != "failed" else 1)


def test_exit_codes_distinguish_verdict_usage_and_error(
    run_cli: Callable[..., Ran],
    remote: str,
    in_dev: Callable[[Release], None],
    make_release: Callable[..., Release],
    tmp_path: Path,
) -> None:
    in_dev(make_release(1))
    g = ("--gitops-repo", remote)
    # 1: the production policy refuses (staging needs 30 min of soak in dev): a verdict.
    refused = run_cli("promote", "--to", "staging", "--actor", "rm", *g, "-o", "json")
    assert refused.code == ExitCode.REFUSED
    assert json.loads(refused.out)["error"] is False
    # 2: a bad value; the valid ones are listed.
    bad = run_cli("freeze", "--env", "qa", "--reason", "r", *g)
    assert bad.code == ExitCode.USAGE and "choose from 'dev', 'staging', 'prod'" in bad.err and bad.out == ""
    # 2: options that parse but do not go together.
    combo = run_cli("promote", "--to", "dev", "--release", "x", *g)
    assert combo.code == ExitCode.USAGE and "--release" in combo.err
    # 3: no verdict: the GitOps remote does not exist.
    missing = str(tmp_path / "no-such-remote.git")
    for argv in (
        ["promote", "--to", "staging", "--actor", "rm", "--gitops-repo", missing],
        ["status", "--gitops-repo", missing],
        ["freeze", "--env", "dev", "--reason", "r", "--gitops-repo", missing],
    ):
        err = run_cli(*argv, "-o", "json")
        assert err.code == ExitCode.ERROR, (argv, err.err)
        doc = json.loads(err.out)
        # A stage's result says error=true; a command that raised prints the error document.
        assert doc.get("error") is True or (doc["status"] == "error" and "no-such-remote" in doc["error"]), doc
        assert "no-such-remote" in err.err


def test_read_only_verbs_leave_no_run_dir_or_clone(
    run_process: Callable[..., Ran],
    remote: str,
    in_dev: Callable[[Release], None],
    make_release: Callable[..., Release],
    tmp_path: Path,
) -> None:
    in_dev(make_release(1))
    before = heads(remote)
    g = ("--gitops-repo", remote)
    for argv in (
        ["status", *g],
        ["history", "--env", "dev", *g],
        ["promote", "--to", "staging", "--policy-profile", "local", "--actor", "rm", "--dry-run", *g],
        ["freeze", "--help"],
        ["--help"],
    ):
        ran = run_process(*argv)
        assert ran.code == 0, (argv, ran.err[-500:])
    assert list((tmp_path / "runs").iterdir()) == []  # no .runs/<time>-<verb>/
    assert list((tmp_path / "tmp").iterdir()) == []  # the temporary run dir and clone were removed
    assert heads(remote) == before  # the dry run pushed nothing
    # A verb that changes something keeps its run dir (the evidence of what it did).
    assert run_process("freeze", "--env", "dev", "--reason", "r", "--actor", "a", *g).code == 0
    assert [p.name.split("-", 1)[1] for p in (tmp_path / "runs").iterdir()] == ["freeze"]


def test_read_only_verbs_never_create_the_default_remote_in_the_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source_tree: Path
) -> None:
    monkeypatch.delenv("PIPELINE_GITOPS_REPO", raising=False)
    scratch = tmp_path / "scratch"
    remote = pm.remote_for_reading(None, source_tree, scratch)
    assert not (source_tree / ".gitops").exists()
    assert Path(remote).is_relative_to(scratch) and (Path(remote) / "HEAD").is_file()
    # Once the embedded default exists (a promotion created it), readers read that one.
    from pipeline.gitops.repo import resolve_remote

    default = resolve_remote(None, source_tree)
    assert pm.remote_for_reading(None, source_tree, scratch) == default


def test_long_messages_are_wrapped_never_cut(
    run_cli: Callable[..., Ran],
    remote: str,
    in_dev: Callable[[Release], None],
    make_release: Callable[..., Release],
    tmp_path: Path,
) -> None:
    # A long release id: each refusal naming it is longer than the 160 characters the table used to keep.
    in_dev(make_release(1).model_copy(update={"id": "0.1.0+build." + "x" * 150}))
    run_dir = tmp_path / "run"
    table = run_cli("--run-dir", str(run_dir), "promote", "--to", "staging", "--gitops-repo", remote, "--actor", "rm")
    assert table.code == ExitCode.REFUSED
    # The same run's result, as written beside the table.
    details = [c["detail"] for c in json.loads((run_dir / "promote.json").read_text())["checks"]]
    assert max(len(d) for d in details) > 160
    flat = "".join(table.out.split())
    for d in details:
        assert "".join(d.split()) in flat, d


def test_a_command_that_returns_only_an_exit_code_still_prints_one_document(run_process: Callable[..., Ran]) -> None:
    # `registry` prints its state with print(): that is progress (stderr); stdout is the document.
    ran = run_process("registry", "status", "-o", "json")
    doc = json.loads(ran.out)
    assert doc == {"verb": "registry", "exit_code": ran.code, "result": None}
    assert "registry" in ran.err


def test_on_a_narrow_terminal_a_long_detail_is_folded_not_cut() -> None:
    from rich.console import Console

    from pipeline.core import output
    from pipeline.core.result import Check, StageResult, Status

    detail = "policy: " + " ".join(f"word{i}" for i in range(80)) + " [brackets] stay"
    result = StageResult.from_checks("promote", [Check(name="policy", status=Status.FAILED, detail=detail)])
    console = Console(record=True, width=80)
    output.render_stage(console, result)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80  # wrapped to the terminal
    assert "".join(detail.split()) in "".join(text.split())  # and every character still there
