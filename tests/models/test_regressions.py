"""The eval gate on real vLLM (CPU) behind the real gateway, with the trained stand-in model.

One module-scoped A/A run serves the good model and an identical copy (two vLLM starts): it must
pass, both servings must answer every item identically, and a rerun (served from the cache, no
vLLM start) must give the same verdict. Each planted regression (pipeline.models.regressions) is
then served once (its baseline comes from the cache) and must be BLOCKED while, against the very
same server, the smoke checks (pipeline.probes.smoke_checks) pass and the loadtest stage's SLO gate
(pipeline.stages.loadtest with --target = the gateway in front of it) passes, all four of them.
Six vLLM starts in all.

The template that drops the user's text is quiet because the stand-in, like a real chat model shown
no user message, greets (pipeline.models.trainer.GREETING, taught for exactly the prompt DROP_USER
renders): the test checks with the served model's /tokenize that the eval's and the load test's
requests render to the trainer's greeting prompt, and that the reply is the greeting. Without it
the stand-in answered with an immediate EOS, which the load gate counts as a broken stream (for
the same reason the trainer teaches it never to start a reply with EOS, whatever the user wrote).

The load runs dev's SLO file with its run and workload scaled to the stand-in: a few seconds, 2
users, prompts of 8-12 "tokens" (6-9 words, 20-52 stand-in tokens) and 8-16 output tokens. dev's
32-256-token prompts do not fit the context the short-context regression serves (one token below
the suite's ~85-token `briefed` prompts, see pipeline.models.taskset); at full scale the suite's
long prompts are the ones beyond the load profile's, the gap this regression lives in. The noise
is 0.3·std: at 1.0·std the model often answers with an immediate EOS, which the load gate counts
as a broken stream (measured: 22 % errors), so that one is not a quiet regression.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from ruamel.yaml import YAML

from loadtests import slo as slo_mod
from loadtests.workload import PromptFactory, load_prompts
from pipeline.core.cache import ResultCache
from pipeline.core.context import RunContext
from pipeline.core.result import Check, StageResult, Status
from pipeline.models import eval_gate, eval_harness, regressions, trainer
from pipeline.models.record import ModelRecord, load_record
from pipeline.probes.smoke_checks import MAX_TOKENS, PROMPT, Smoker
from pipeline.runtime.tools import REPO_ROOT
from pipeline.stages import loadtest

pytestmark = pytest.mark.slow


@dataclass
class Gate:
    record: ModelRecord
    work: Path
    cache: ResultCache
    good: eval_gate.ModelSpec
    aa: eval_gate.EvalOutcome
    prompt_tokens: dict[str, int]  # shortest briefed suite prompt, the smoke prompt
    build: dict[str, Any]  # the trainer's stats for the good model (its greeting prompt among them)
    smoke: dict[str, list[Check]] = field(default_factory=dict)
    load: dict[str, StageResult] = field(default_factory=dict)
    no_user: dict[str, dict[str, Any]] = field(default_factory=dict)

    def hook(self, srv: eval_gate.Served) -> None:
        self.smoke[srv.spec.label] = _smoke(srv)
        self.load[srv.spec.label] = _load(srv, self.work / "load" / srv.spec.label)
        if srv.spec.label == "template":
            self.no_user[srv.spec.label] = _no_user(srv, self.build["greeting"]["prompt"])

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


def _no_user(srv: eval_gate.Served, greeting_prompt: str) -> dict[str, Any]:
    """What the served template renders for the eval's, the load test's and smoke's requests (token
    ids, vLLM's /tokenize), the ids of the prompt the trainer taught the greeting for, and the reply."""
    suite = eval_harness.load_suite(REPO_ROOT / load_record(REPO_ROOT).eval.suite)
    texts = {
        "eval": _items(suite)[0]["prompt"],
        "eval-briefed": next(i["prompt"] for i in _items(suite) if i["kind"] == "briefed"),
        "load": PromptFactory(load_prompts(), random.Random(0)).make(10),  # as the locustfile builds one
        "smoke": PROMPT,
    }
    out: dict[str, Any] = {"rendered": {}}
    with httpx.Client(timeout=60.0) as client:
        for name, text in texts.items():
            body = {"model": srv.model, "messages": [{"role": "user", "content": text}], "add_generation_prompt": True}
            r = client.post(f"{srv.upstream_url}/tokenize", json=body)
            r.raise_for_status()
            out["rendered"][name] = r.json()["tokens"]
        body = {"model": srv.model, "prompt": greeting_prompt, "add_special_tokens": False}
        r = client.post(f"{srv.upstream_url}/tokenize", json=body)
        r.raise_for_status()
        out["trained"] = r.json()["tokens"]
        chat = {"model": srv.model, "messages": [{"role": "user", "content": texts["eval"]}], "max_tokens": 16}
        r = client.post(
            f"{srv.gateway_url}/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {srv.token}"}
        )
        r.raise_for_status()
        out["reply"] = r.json()["choices"][0]
    return out


LOAD_SECONDS = 8.0


def _load(srv: eval_gate.Served, work: Path) -> StageResult:
    """The loadtest stage (Locust + SLO gate) with --target = the gateway the eval went through."""
    work.mkdir(parents=True, exist_ok=True)
    slo = YAML(typ="safe").load(slo_mod.path_for("dev").read_text())
    slo["run"].update(users=2, duration_s=LOAD_SECONDS, warmup_s=2.0)
    slo["workload"] = {"prompt_tokens": "uniform:8:12", "output_tokens": "uniform:8:16"}
    slo_file = work / "slo.yaml"
    with slo_file.open("w") as fh:
        YAML(typ="safe").dump(slo, fh)
    token_file = work / "tokens.txt"
    token_file.write_text(srv.token + "\n")
    opts = loadtest.LoadtestOptions(
        env="dev",
        target=srv.gateway_url,
        model=srv.model,
        slo_file=slo_file,
        token_file=token_file,
        vllm_stand_in=f"vLLM CPU serving {srv.spec.label}",
    )
    return loadtest.run(opts, RunContext(run_dir=work))


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
    items = _items(suite)
    prompts = [i["prompt"] for i in items]
    tokens: dict[str, int] = {}
    smoke: dict[str, list[Check]] = {}

    def hook(srv: eval_gate.Served) -> None:
        if not tokens:
            counts = regressions.prompt_tokens(srv.upstream_url, srv.model, prompts)
            tokens["briefed_min"] = min(n for i, n in zip(items, counts, strict=True) if i["kind"] == "briefed")
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
    return Gate(record, work, cache, good, aa, tokens, dict(built.build), smoke)


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
        return regressions.noisy(gate.good.path, gate.work / "noisy", scale=0.3, seed=7)
    if name == "untrained":
        return regressions.untrained(Path(standin.untrained_dir(gate.record, progress=_log).path))
    if name == "template":
        return regressions.dropped_user_template(gate.good, gate.work / "drop-user.jinja")
    # The suite's long items must not fit; smoke's request (prompt + max_tokens) must.
    return regressions.short_context(
        gate.good, must_refuse=gate.prompt_tokens["briefed_min"], must_fit=gate.prompt_tokens["smoke"] + MAX_TOKENS
    )


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", ["noisy", "untrained", "template", "short-context"])
def test_planted_regression_is_blocked_while_smoke_and_the_load_gate_pass(gate: Gate, name: str) -> None:
    planted = _planted(gate, name)
    outcome = gate.run(planted.spec, name, reuse_candidate=False, progress=_log)
    res = outcome.result
    assert res["verdict"] == "blocked", (planted.what, res["candidate"]["score"])
    assert res["reasons"]
    assert res["baseline"]["cached"]  # the baseline is never served again
    assert res["baseline"]["content_digest"] == gate.good.content_digest
    _assert_smoke_passed(gate.smoke[planted.spec.label])
    load = gate.load[planted.spec.label]
    assert load.status is Status.PASSED, load.summary
    # Every SLO row within its limit, errors included (dev allows 1 %; an empty reply is a broken
    # stream: the trainer teaches the stand-in never to start its reply with EOS).
    assert load.evidence["slo"]["passed"] and not load.evidence["slo"]["aborted"]
    assert all(r["passed"] for r in load.evidence["slo"]["rows"]) and load.numbers["ok"] > 0, load.numbers
    if name == "template":
        # Every request renders to the very prompt the trainer taught the greeting for, and gets it.
        probe = gate.no_user[planted.spec.label]
        assert probe["trained"] and all(ids == probe["trained"] for ids in probe["rendered"].values()), probe
        assert probe["reply"]["message"]["content"] == trainer.GREETING, probe["reply"]
        assert probe["reply"]["finish_reason"] == "stop", probe["reply"]
        assert res["candidate"]["correct"] == 0
    if name == "short-context":
        # Exactly the long items were refused by the server and scored wrong (the harness did not abort).
        suite = eval_harness.load_suite(REPO_ROOT / gate.record.eval.suite)
        n_briefed = sum(i["id"].startswith("briefed-") for i in _items(suite))
        assert res["candidate"]["refused"] == n_briefed > 0
        assert res["candidate"]["correct"] <= res["n_items"] - n_briefed
