"""SLO files: the shipped ones validate; a bad one is rejected with the offending key named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loadtests.slo import SLOFileError, load, load_env, validate


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_shipped_slo_files_are_valid(env: str) -> None:
    slo = load_env(env)
    assert slo.env == env
    assert slo.capacity is not None


def test_stricter_envs_are_stricter() -> None:
    dev, staging, prod = (load_env(e) for e in ("dev", "staging", "prod"))
    for metric in ("ttft_ms", "itl_ms", "e2e_ms"):
        d, s, p = (getattr(x.thresholds, metric).p95 for x in (dev, staging, prod))
        assert d >= s >= p
    assert dev.goodput.target <= staging.goodput.target <= prod.goodput.target


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda d: d["thresholds"]["ttft_ms"].__setitem__("p95", "fast"), "thresholds.ttft_ms.p95"),
        (lambda d: d["thresholds"]["ttft_ms"].__setitem__("p42", 10), "thresholds.ttft_ms.p42"),
        (lambda d: d["goodput"].pop("target"), "goodput.target"),
        (lambda d: d["thresholds"].__setitem__("error_rate", 1.5), "thresholds.error_rate"),
        (lambda d: d["run"].__setitem__("shape", "zigzag"), "run.shape"),
        (lambda d: d["workload"].__setitem__("output_tokens", "gaussian:5"), "workload.output_tokens"),
        (lambda d: d.__setitem__("thresholdz", {}), "thresholdz"),
        (lambda d: d["capacity"]["model"].__setitem__("weight_precision", "fp13"), "capacity.model.weight_precision"),
    ],
)
def test_bad_slo_names_the_key(dev_doc: dict[str, Any], mutate: Any, key: str) -> None:
    mutate(dev_doc)
    with pytest.raises(SLOFileError) as err:
        validate(dev_doc, "bad.yaml")
    assert f"\n  {key}: " in str(err.value)
    assert str(err.value).startswith("bad.yaml: invalid SLO file")


def test_unreadable_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(SLOFileError, match="cannot read"):
        load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("env: [dev\n")
    with pytest.raises(SLOFileError, match="not valid YAML"):
        load(bad)
