"""Real clients through the gateway in front of real vLLM (CPU build, tiny local model):
vLLM's own benchmark client (`vllm bench serve`, random dataset, which always sends `ignore_eos`),
the unmodified OpenAI SDK's multi-turn chat, and clients reusing one X-Request-ID concurrently."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from pipeline.runtime import vllm_cpu
from pipeline.runtime.local_stack import Stack, local_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

# `vllm bench serve` through its Python entry point: the `vllm` console script (and the CLI's
# `main`) fail in this venv because the package metadata is named vllm-cpu.
BENCH = (
    "import argparse, sys\n"
    "from vllm.benchmarks import serve\n"
    "p = argparse.ArgumentParser()\n"
    "serve.add_cli_args(p)\n"
    "serve.main(p.parse_args(sys.argv[1:]))\n"
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    work = tmp_path_factory.mktemp("real-vllm")
    vllm_cpu.ensure_venv()
    model_dir = vllm_cpu.ensure_tiny_model()
    with (
        vllm_cpu.vllm_server(work, model_dir, name="tiny") as server,
        local_stack(work / "stack", upstream_url=server.url, model="tiny") as st,
    ):
        st.gateway.wait_http(f"{st.internal_url}/readyz", timeout=60)
        yield st, model_dir


def test_vllm_bench_serve_random_dataset_all_requests_succeed(stack: tuple[Stack, Path], tmp_path: Path) -> None:
    st, model_dir = stack
    argv = [str(vllm_cpu.venv_python()), "-c", BENCH, "--backend", "vllm", "--base-url", st.gateway_url]
    argv += ["--endpoint", "/v1/completions", "--model", "tiny", "--tokenizer", str(model_dir)]
    argv += ["--dataset-name", "random", "--random-input-len", "32", "--random-output-len", "16"]
    argv += ["--num-prompts", "100", "--max-concurrency", "8", "--seed", "1", "--disable-tqdm"]
    argv += ["--save-result", "--result-dir", str(tmp_path), "--result-filename", "bench.json"]
    env = {**os.environ, **vllm_cpu.server_env(), "OPENAI_API_KEY": st.mint(sub="vllm-bench")}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, Any] = json.loads((tmp_path / "bench.json").read_text())
    assert result["completed"] == 100, {k: result.get(k) for k in ("completed", "failed", "errors")}
    assert result.get("failed", 0) == 0
    assert result["total_output_tokens"] == 100 * 16  # ignore_eos reached vLLM
    audit = [json.loads(line) for line in st.audit_log.read_text().splitlines()]
    assert sum(1 for a in audit if a["route"] == "/v1/completions" and a["status"] == 200) >= 100


def test_openai_sdk_multi_turn_chat(stack: tuple[Stack, Path]) -> None:
    st, _ = stack
    sdk = openai.OpenAI(base_url=f"{st.gateway_url}/v1", api_key=st.mint(sub="multi-turn"), max_retries=0)
    history: list[Any] = [{"role": "user", "content": "Hello! How are you today?"}]
    for turn in range(3):
        out = sdk.chat.completions.create(model="tiny", messages=history, max_tokens=8)
        # The assistant message exactly as the SDK returns it (refusal, annotations, audio, … as nulls).
        history += [out.choices[0].message, {"role": "user", "content": f"And then? ({turn})"}]
    assert len(history) == 7
    assert sdk.models.retrieve("tiny").id == "tiny"


def test_clients_reusing_one_request_id_concurrently(stack: tuple[Stack, Path]) -> None:
    st, _ = stack
    headers = {"authorization": f"Bearer {st.mint(sub='dup-id')}", "x-request-id": "gateway-ready-probe"}
    body = {"model": "tiny", "prompt": "Hello", "max_tokens": 32, "stream": True, "ignore_eos": True}

    def one() -> int:
        with httpx.stream("POST", f"{st.gateway_url}/v1/completions", json=body, headers=headers, timeout=60) as r:
            text = "".join(r.iter_text())
        assert '"error"' not in text, text
        return r.status_code

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        assert [f.result(timeout=120) for f in [ex.submit(one) for _ in range(4)]] == [200] * 4
    assert httpx.get(f"{st.internal_url}/readyz", timeout=5).status_code == 200
