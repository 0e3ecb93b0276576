"""lm-evaluation-harness' CLI with one model type added, run by the vLLM venv's interpreter.

    <vllm-venv>/bin/python pipeline/models/eval_driver.py run --model gate-chat-completions ...

`gate-chat-completions` is lm_eval's own `local-chat-completions`
(lm_eval/models/openai_completions.py, LocalChatCompletion) with one change: a request the
server refuses with HTTP 400 (vLLM: "This model's maximum context length is ..." when the
serving config cannot hold the prompt) scores as an empty answer for that item and is written
to $GATE_REFUSALS_FILE, instead of aborting the whole run after lm_eval's retries. A refused
item is the candidate's failure, not the harness'. Every other status (401/403 from the
gateway, 429, 5xx) still aborts: those say the set-up is wrong, not the model.

Stdlib only at import (like pipeline/runtime/tiny_model.py): lm_eval is imported in main().
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

MODEL_TYPE = "gate-chat-completions"
REFUSALS_ENV = "GATE_REFUSALS_FILE"


def _register() -> None:
    import requests
    from lm_eval.api.registry import register_model
    from lm_eval.models.openai_completions import LocalChatCompletion

    refusals = os.environ.get(REFUSALS_ENV)

    @register_model(MODEL_TYPE)
    class GateChatCompletion(LocalChatCompletion):  # type: ignore[misc]
        def model_call(self, messages: Any, *, generate: bool = True, gen_kwargs: Any = None, **kw: Any) -> Any:
            try:
                return super().model_call(messages, generate=generate, gen_kwargs=gen_kwargs, **kw)
            except requests.HTTPError as exc:
                resp = exc.response
                if resp is None or resp.status_code != 400:
                    raise
                if refusals:
                    with open(refusals, "a", encoding="utf-8") as fh:
                        record = {"messages": self.create_message(messages), "status": 400, "body": resp.text[:500]}
                        fh.write(json.dumps(record) + "\n")
                return {"choices": [{"index": 0, "message": {"content": ""}}]}


def main() -> None:
    _register()
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval", *sys.argv[1:]]
    cli_evaluate()


if __name__ == "__main__":
    main()
