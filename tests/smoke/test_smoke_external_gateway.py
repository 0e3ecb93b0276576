"""`smoke --target URL --gateway-url URL --token-file F`: the same checks against a gateway started elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import cli
from pipeline.core.context import RunContext
from pipeline.core.result import Status
from pipeline.probes.smoke_checks import CHECKS
from pipeline.runtime.local_stack import local_stack
from pipeline.stages.smoke import SmokeOptions, run

GW = "sha256:" + "a" * 64
VLLM = "sha256:" + "b" * 64


def _ctx(tmp_path: Path) -> RunContext:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    return RunContext(run_dir=run_dir)


@pytest.mark.slow  # starts the simulator and the gateway outside the stage (as Dagger starts the images)
def test_external_gateway_simulator_passes_every_check_and_claims_the_images(tmp_path: Path) -> None:
    with local_stack(tmp_path / "stack", model="sim-llama") as stack:
        token = tmp_path / "token"
        token.write_text(stack.mint(sub="smoke", roles=("user",)) + "\n")
        opts = SmokeOptions(
            target=stack.upstream_url,
            gateway_url=stack.gateway_url,
            gateway_metrics_url=stack.internal_url,
            token_file=token,
            model="sim-llama",
            subject_digests={"gateway": GW, "vllm": VLLM},
        )
        result = run(opts, _ctx(tmp_path))
    assert result.status is Status.PASSED, [(c.name, c.detail) for c in result.failures()]
    assert [c.name for c in result.checks] == list(CHECKS)
    assert result.evidence["gateway_url"] == stack.gateway_url
    subject = result.evidence["subject"]
    assert (subject["gateway_digest"], subject["vllm_digest"]) == (GW, VLLM)
    assert subject["gateway"].startswith("the gateway image named by gateway_digest")
    assert not (tmp_path / "run" / "stack").exists()  # no gateway of its own


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (SmokeOptions(gateway_url="http://gw:8080", token_file=Path("t")), "needs --target"),
        (SmokeOptions(target="http://v:8000", gateway_url="http://gw:8080"), "--token-file"),
        (SmokeOptions(target="http://v:8000", token_file=Path("t")), "needs --gateway-url"),
        (SmokeOptions(target="http://v:8000", gateway_url="http://gw:8080", token_file=Path("t")), "go together"),
        (
            SmokeOptions(
                target="http://v:8000",
                gateway_url="http://gw:8080",
                gateway_metrics_url="http://gw:8081",
                token_file=Path("/nonexistent"),
            ),
            "token",
        ),
    ],
)
def test_external_gateway_options_are_checked_before_anything_runs(
    tmp_path: Path, opts: SmokeOptions, message: str
) -> None:
    result = run(opts, _ctx(tmp_path))
    assert result.status is Status.FAILED and [c.name for c in result.checks] == ["options"]
    assert message in result.checks[0].detail


def test_cli_accepts_gateway_url_and_token_file() -> None:
    argv = ["smoke", "--target", "http://vllm:8000", "--gateway-url", "http://gateway:8080", "--token-file", "/t"]
    args = cli.build_parser(cli.discover()).parse_args([*argv, "--gateway-metrics-url", "http://gateway:8081"])
    assert (args.gateway_url, args.token_file) == ("http://gateway:8080", Path("/t"))
    assert args.gateway_metrics_url == "http://gateway:8081"
