"""The eval gate on real vLLM (CPU) behind the real gateway, with the trained stand-in model.

One module-scoped A/A run serves the good model and an identical copy (two vLLM starts): it must
pass, both servings must answer every item identically, and a rerun (served from the cache, no
vLLM start) must give the same verdict. Each planted regression (pipeline.models.regressions) is
then served once (its baseline comes from the cache) and must be BLOCKED while the smoke checks
(pipeline.probes.smoke_checks) against the very same server still pass — except the short context
when the smoke prompt is longer than every suite prompt (then smoke's chat is refused too, asserted).
Six vLLM starts in all.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.cache import ResultCache
from pipeline.core.result import Check, Status
from pipeline.models import eval_gate, eval_harness, regressions
from pipeline.models.record import ModelRecord, load_record
from pipeline.probes.smoke_checks import PROMPT, Smoker
from pipeline.runtime.tools import REPO_ROOT

pytestmark = pytest.mark.slow


@dataclass
class Gate:
    record: ModelRecord
    work: Path
    cache: ResultCache
    good: eval_gate.ModelSpec
    aa: eval_gate.EvalOutcome
    prompt_tokens: dict[str, int]  # shortest suite prompt, the smoke prompt
    smoke: dict[str, list[Check]] = field(default_factory=dict)

    def hook(self, srv: eval_gate.Served) -> None:
        self.smoke[srv.spec.label] = _smoke(srv)

    def run(self, candidate: eval_gate.ModelSpec, name: str, **kw: Any) -> eval_gate.EvalOutcome:
        return eval_gate.run_gate(
            candidate,
            self.good,
            record=self.record,
            root=REPO_ROOT,
            work_dir=self.work / name,
            cache=self.cache,
            on_served=self.hook,
            **kw,
        )


def _smoke(srv: eval_gate.Served) -> list[Check]:
    """The smoke stage's checks against the server the gate is evaluating."""
    smoker = Smoker(
        srv.upstream_url, srv.gateway_url, srv.model, srv.token, 60.0, gateway_metrics_url=srv.gateway_metrics_url
    )
    try:
        return smoker.run_all()
    finally:
        smoker.close()


def _log(msg: str) -> None:
    print(f"· {msg}", flush=True)


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Gate:
    from pipeline.models import standin  # owner H1: trains (or reuses) the stand-in

    record = load_record(REPO_ROOT)
    built = standin.ensure_model_dir(record, progress=_log)
    work = tmp_path_factory.mktemp("eval-gate")
    good = eval_gate.dir_spec(Path(built.path), label="baseline")
    copy = eval_gate.dir_spec(Path(shutil.copytree(built.path, work / "copy")), label="copy")
    assert copy.content_digest == good.content_digest
    suite = eval_harness.load_suite(REPO_ROOT / record.eval.suite)
    prompts = [i["prompt"] for i in _items(suite)]
    tokens: dict[str, int] = {}
    smoke: dict[str, list[Check]] = {}

    def hook(srv: eval_gate.Served) -> None:
        if not tokens:
            tokens["suite_min"] = min(regressions.prompt_tokens(srv.upstream_url, srv.model, prompts))
            tokens["smoke"] = regressions.prompt_tokens(srv.upstream_url, srv.model, [PROMPT])[0]
        smoke[srv.spec.label] = _smoke(srv)

    cache = ResultCache(work / "cache")
    aa = eval_gate.run_gate(
        copy,
        good,
        record=record,
        root=REPO_ROOT,
        work_dir=work / "aa",
        reuse_candidate=False,
        reuse_baseline=False,
        cache=cache,
        on_served=hook,
        progress=_log,
    )
    return Gate(record, work, cache, good, aa, tokens, smoke)


def _items(suite: eval_harness.Suite) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in (suite.path / eval_harness.ITEMS_FILE).read_text().splitlines()]


def _assert_smoke_passed(checks: list[Check]) -> None:
    failed = [f"{c.name}: {c.detail}" for c in checks if c.status is not Status.PASSED]
    assert checks and not failed, failed


@pytest.mark.timeout(2400)
def test_identical_copy_passes_deterministically_and_a_rerun_gives_the_same_verdict(gate: Gate) -> None:
    res = gate.aa.result
    assert res["verdict"] == "pass", res["reasons"]
    assert res["candidate"]["score"] >= gate.record.eval.floor
    # Two separate servings of the same weights answered every item identically.
    assert res["candidate"]["samples_sha256"] == res["baseline"]["samples_sha256"]
    assert (res["mcnemar"]["b"], res["mcnemar"]["c"]) == (0, 0)
    assert not res["candidate"]["cached"] and not res["baseline"]["cached"]
    _assert_smoke_passed(gate.smoke["copy"])
    _assert_smoke_passed(gate.smoke["baseline"])
    served_before = dict(gate.smoke)
    gate.smoke.clear()
    again = gate.run(eval_gate.dir_spec(gate.work / "copy", label="copy"), "rerun")
    assert again.result["verdict"] == res["verdict"]
    assert again.result["samples_sha256"] == res["samples_sha256"]
    assert again.result["candidate"]["cached"] and again.result["baseline"]["cached"]
    assert gate.smoke == {}  # nothing was served again
    gate.smoke.update(served_before)


def _planted(gate: Gate, name: str) -> regressions.Planted:
    from pipeline.models import standin

    if name == "noisy":
        return regressions.noisy(gate.good.path, gate.work / "noisy", scale=1.0, seed=7)
    if name == "untrained":
        return regressions.untrained(Path(standin.untrained_dir(gate.record, progress=_log).path))
    if name == "template":
        return regressions.dropped_user_template(gate.good, gate.work / "drop-user.jinja")
    return regressions.short_context(gate.good, gate.prompt_tokens["suite_min"])


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", ["noisy", "untrained", "template", "short-context"])
def test_planted_regression_is_blocked_while_smoke_passes(gate: Gate, name: str) -> None:
    planted = _planted(gate, name)
    outcome = gate.run(planted.spec, name, reuse_candidate=False, progress=_log)
    res = outcome.result
    assert res["verdict"] == "blocked", (planted.what, res["candidate"]["score"])
    assert res["reasons"]
    assert res["baseline"]["cached"]  # the baseline is never served again
    assert res["baseline"]["content_digest"] == gate.good.content_digest
    smoke = gate.smoke[planted.spec.label]
    if name != "short-context":
        _assert_smoke_passed(smoke)
        return
    # Every item was refused by the server and scored wrong (the harness did not abort).
    assert res["candidate"]["refused"] == res["n_items"] and res["candidate"]["correct"] == 0
    if gate.prompt_tokens["smoke"] >= gate.prompt_tokens["suite_min"]:
        # The smoke prompt is longer than the suite's shortest: it cannot fit either, so smoke sees it too.
        chat = next(c for c in smoke if c.name == "chat")
        assert chat.status is Status.FAILED and "HTTP 400" in chat.detail, chat.detail
    else:
        _assert_smoke_passed(smoke)
