"""Every CLI command line quoted in README.md and docs/*.md parses with the CLI's real argparse parser.

Found in fenced blocks (backslash continuations joined) and in inline code: `python -m pipeline …`,
`.venv/bin/python -m pipeline …` (any python), and `llm-delivery …`. Each is split like a shell
(comments dropped, cut at the first `|`, `&&`, `;` or redirection) and handed to
`pipeline.cli.build_parser(pipeline.cli.discover())` — parsed, never run. Placeholders are explicit
only: `<env>` stands for an env name (substituted: `dev`); a line with any other `<…>`, an ellipsis,
usage notation (`[--opt X]`, an upper-case METAVAR after an option) or a shell variable is skipped,
and the skips are counted so they cannot swallow the docs. The bare program name is a mention.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline import cli

REPO = Path(__file__).resolve().parents[2]
COMMAND_RE = re.compile(r"(?:\S*python3?\s+-m\s+pipeline(?=\s|$)|(?<![\w/-])llm-delivery(?=\s|$))(?P<args>.*)")
PLACEHOLDERS = {
    "<env>": "dev",
    # Shell variables docs/promotion.md defines beside its commands (image digests, the gateway's URL).
    '"$GW"': "sha256:" + "a" * 64,
    '"$VLLM"': "sha256:" + "b" * 64,
    "$GW": "sha256:" + "a" * 64,
    "$VLLM": "sha256:" + "b" * 64,
    '"$GATEWAY_URL"': "http://127.0.0.1:8080",
}
SHELL_TAIL = re.compile(r"\s(?:\|\|?|&&|;|>>?|2>)\s.*$")
SHELL_STOPS = {"|", "||", "&&", ";", ">", ">>", "2>", "2>&1", "&", "<"}


@dataclass(frozen=True)
class DocCommand:
    where: str  # file:line
    text: str


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _logical_lines(text: str) -> list[tuple[int, str, bool]]:
    """(line number, line, inside a fenced block), fenced continuation lines joined."""
    out: list[tuple[int, str, bool]] = []
    fenced = False
    pending: tuple[int, str] | None = None
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            pending = None
            continue
        if fenced:
            if pending is not None:
                n, line = pending[0], pending[1] + " " + line.strip()
            if line.rstrip().endswith("\\"):
                pending = (n, line.rstrip()[:-1])
                continue
            pending = None
        out.append((n, line, fenced))
    return out


def commands(path: Path) -> list[DocCommand]:
    rel = path.relative_to(REPO)
    found = []
    for n, line, fenced in _logical_lines(path.read_text()):
        # A fenced line with code spans is a diagram or a table: its spans are the code.
        spans = [line] if fenced and "`" not in line else re.findall(r"`([^`]+)`", line)
        for span in spans:
            for m in COMMAND_RE.finditer(span):
                if m.group("args").strip():  # the bare program is a mention of the CLI, not a command line
                    found.append(DocCommand(f"{rel}:{n}", m.group(0).strip()))
    return found


def argv_of(cmd: DocCommand) -> list[str] | None:
    """The arguments after the program, or None for an explicit placeholder line."""
    text = SHELL_TAIL.sub("", cmd.text)
    for ph, value in PLACEHOLDERS.items():
        text = text.replace(ph, value)
    if re.search(r"<[^>\s]+>", text) or "…" in text or "..." in text:
        return None
    # Usage notation (`[--opt X]`, an argparse-style METAVAR after an option) and shell variables
    # (`$VAR`, `$(…)`) are placeholders the reader fills in.
    if re.search(r"\[-|\[[A-Z]", text) or "$" in text or re.search(r"\s--?[\w-]+[ =]+[A-Z][A-Z_]*(?=\s|$|,)", text):
        return None
    lex = shlex.shlex(COMMAND_RE.match(text).group("args"), posix=True, punctuation_chars="|&;<>")  # type: ignore[union-attr]
    lex.whitespace_split = True
    lex.commenters = "#"
    argv = []
    for tok in lex:
        if tok in SHELL_STOPS or set(tok) <= set("|&;<>"):
            break
        argv.append(tok)
    return argv


def parse(parser: object, argv: list[str]) -> str | None:
    """None when argparse accepts argv (or prints help), else its error message."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(argv)  # type: ignore[attr-defined]
        except SystemExit as exc:
            if exc.code not in (0, None):
                return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else f"exit {exc.code}"
    return None


def test_the_extractor_finds_fenced_inline_continued_and_console_script_commands(tmp_path: Path) -> None:
    doc = REPO / "docs" / "_extractor_probe.md"
    sample = (
        "Run `python -m pipeline status --env dev` or `llm-delivery --version`.\n"
        "```bash\n.venv/bin/python -m pipeline render \\\n  --env dev   # comment\n"
        "python -m pipeline.runtime.tools ensure\n"
        "python -m pipeline rollback --env <env> --to <gitops-commit>\n```\n"
    )
    try:
        doc.write_text(sample)
        found = commands(doc)
    finally:
        doc.unlink()
    assert [c.where.rsplit(":", 1)[1] for c in found] == ["1", "1", "3", "6"]
    assert [argv_of(c) for c in found] == [["status", "--env", "dev"], ["--version"], ["render", "--env", "dev"], None]


def test_every_documented_command_parses() -> None:
    parser = cli.build_parser(cli.discover())
    checked, skipped, failures = 0, [], []
    for path in doc_files():
        for cmd in commands(path):
            argv = argv_of(cmd)
            if argv is None:
                skipped.append(cmd)
                continue
            checked += 1
            error = parse(parser, argv)
            if error:
                failures.append(f"{cmd.where}: {cmd.text}\n    {error}")
    assert checked >= 30, f"only {checked} commands found: the extractor lost them"
    assert len(skipped) < checked / 2, [s.where for s in skipped]
    if failures:
        pytest.fail(f"{len(failures)} of {checked} documented command(s) do not parse:\n" + "\n".join(failures))


def test_the_stage_table_of_docs_pipeline_lists_the_pipeline_verbs_in_order() -> None:
    rows = []
    for line in (REPO / "docs/pipeline.md").read_text().splitlines():
        m = re.match(r"^\| `([a-z-]+)` \|", line)
        if m:
            rows.append(m.group(1))
        elif rows:
            break
    assert rows == list(cli.PIPELINE_VERBS)
    intro = (REPO / "docs/pipeline.md").read_text().split("operational verbs (`", 1)[1].split("`)", 1)[0]
    assert intro.split() == list(cli.OPERATIONAL_VERBS)
