"""app/model.yaml, the model's release record, as a validated object.

Everything that changes what the model answers is here (source revision, tokenizer, variant,
serving arguments, chat template) and feeds `behaviour_inputs()`, the key the eval gate is
cached by. A bad field is refused with its path named.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel
from ruamel.yaml import YAML

MODEL_FILE = "app/model.yaml"
HF_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Variant(_Camel):
    dtype: Literal["bfloat16", "float16", "float32", "auto"] = "bfloat16"
    quantization: str = "none"


class Serving(_Camel):
    max_model_len: int = Field(gt=0)
    chat_template: str = "model"  # "model" = the tokenizer's own; else a repo path


class EvalGate(_Camel):
    suite: str
    floor: float = Field(ge=0.0, le=1.0)
    alpha: float = Field(gt=0.0, lt=1.0)


class StandIn(_Camel):
    recipe: Literal["tiny-chat"] = "tiny-chat"
    seed: int = 1234
    steps: int = Field(gt=0)


class ModelRecord(_Camel):
    id: str = Field(min_length=1)
    revision: str
    tokenizer_revision: str
    served_name: str = Field(min_length=1)
    variant: Variant = Variant()
    serving: Serving
    eval: EvalGate
    stand_in: StandIn

    @field_validator("revision", "tokenizer_revision")
    @classmethod
    def _commit(cls, v: str) -> str:
        if not HF_COMMIT_RE.match(v):
            raise ValueError(f"must be a 40-hex model commit (a branch or tag would float), got {v!r}")
        return v

    def behaviour_inputs(self, root: Path) -> dict[str, Any]:
        """What changes the model's answers (the chat template by content when it is a repo file)."""
        data = self.model_dump(mode="json", by_alias=True, exclude={"eval"})
        if self.serving.chat_template != "model":
            data["serving"]["chatTemplateSha256"] = hashlib.sha256(
                (root / self.serving.chat_template).read_bytes()
            ).hexdigest()
        return data

    def behaviour_digest(self, root: Path) -> str:
        return hashlib.sha256(json.dumps(self.behaviour_inputs(root), sort_keys=True).encode()).hexdigest()


class ModelRecordError(ValueError):
    """app/model.yaml is missing or invalid; the message names the field."""


def load_record(root: Path) -> ModelRecord:
    path = root / MODEL_FILE
    try:
        data = YAML(typ="safe").load(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelRecordError(f"{MODEL_FILE}: cannot read: {exc}") from exc
    try:
        return ModelRecord.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise ModelRecordError(f"{MODEL_FILE}: {problems}") from exc
