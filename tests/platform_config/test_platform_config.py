"""platform.yaml is the one source: the tree agrees with it, drift is named, apply is all or
nothing, and `init` turns the repo into another organisation's whose render, policies and CLI
follow every value."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from pipeline.core.platform import PlatformError, load_platform, parse_platform
from pipeline.platform_config import derived
from pipeline.platform_config.apply import ApplyError, apply, tree_envs

REPO = Path(__file__).resolve().parents[2]

# Every value of platform.yaml, changed (init flags): no value of the example organisation survives.
NEW_ORG = [
    "--org", "acme",
    "--registry", "reg.acme.test/ml",
    "--git-url", "https://code.acme.test/ml/delivery.git",
    "--git-ssh-url", "ssh://git@ssh.acme.test/ml/delivery.git",
    "--branch", "trunk",
    "--domain", "acme.test",
    "--label-domain", "ml.acme.test",
    "--homepage", "https://docs.acme.test/delivery",
    "--contact", "ml-platform@acme.test",
    "--issuer", "https://id.acme.test/",
    "--audience", "acme-llm",
    "--jwks-url", "https://id.acme.test/keys",
    "--model-id", "acme/tiny-chat",
    "--model-revision", "1111111111111111111111111111111111111111",
    "--served-model-name", "tiny-chat",
    "--gpu-pool-label", "nodes.acme.test/gpu-pool",
    "--spot-label", "nodes.acme.test/lifecycle",
    "--spot-taint", "nodes.acme.test/preemptible",
    "--env", "test=ml-test",
    "--env", "preprod=ml-preprod@https://preprod.k8s.acme.test",
    "--env", "live=ml-live@https://live.k8s.acme.test",
]  # fmt: skip
OLD_VALUES = ("example.com", "llm-service.git", "llama-3-8b", "Meta-Llama", "e1945c40", "llm-staging", "llm-prod")


def copy_tree(dest: Path) -> Path:
    """The checkout as a user clones it (tracked and new files; no venv, runs or caches)."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for raw in filter(None, files):
        rel = raw.decode()
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


def cli(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline` of the copy (its own pipeline package: the code follows its platform.yaml)."""
    from pipeline.runtime.tools import TOOLS_DIR

    # The checkout's installed tools (helm, promtool, ...), as `make tools` would install them in the copy.
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "PIPELINE_RUNS_DIR": str(root / ".runs"),
        "PIPELINE_TOOLS_DIR": str(TOOLS_DIR),
    }
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *argv], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_repository_agrees_with_its_platform_file() -> None:
    assert derived.problems(REPO) == []


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ({"registry": "https://reg.example/x"}, "registry: Value error, 'https://reg.example/x' is not a registry"),
        ({"model": {"revision": "main"}}, "model.revision: Value error, 'main' is not a 40-hex commit"),
        ({"environments": [{"name": "dev"}]}, "environments.0.namespace: Field required"),
        ({"labelDomain": "LLM.Example"}, "labelDomain: Value error, 'LLM.Example' is not a DNS name"),
        ({"colour": "blue"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_a_bad_platform_file_is_refused_naming_the_field(edit: dict[str, object], named: str) -> None:
    data = yaml.safe_load((REPO / "platform.yaml").read_text())
    for key, value in edit.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and key in data else value
    with pytest.raises(PlatformError) as err:
        parse_platform(yaml.safe_dump(data), "platform.yaml")
    assert named in str(err.value)


def test_duplicate_env_names_are_refused() -> None:
    data = yaml.safe_load((REPO / "platform.yaml").read_text())
    data["environments"][1]["name"] = "dev"
    with pytest.raises(PlatformError, match="name must be unique, repeated: dev"):
        parse_platform(yaml.safe_dump(data))


def test_drift_in_a_derived_file_is_named(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    values = root / "charts/llm-service/values.yaml"
    values.write_text(values.read_text().replace("registry.example.com/llm/gateway", "docker.io/someone/gateway"))
    appset = root / "environments/argocd/appproject-llm-service.yaml"
    appset.write_text(appset.read_text().replace("namespace: llm-staging", "namespace: llm-stage"))
    found = derived.problems(root)
    assert len(found) == 2, found
    assert found[0].startswith("charts/llm-service/values.yaml disagrees with platform.yaml")
    assert "-    repository: docker.io/someone/gateway | +    repository: registry.example.com/llm/gateway" in found[0]
    assert found[1].startswith("environments/argocd/appproject-llm-service.yaml")
    assert "llm-staging" in found[1]


def test_the_promotion_chain_gives_the_trees_env_order(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    assert tree_envs(root) == ("dev", "staging", "prod")
    data = json.loads((root / "policies/promotion.data.json").read_text())
    data["promotion"]["allowed_sources"]["prod"] = ["dev"]  # two envs from dev: not a chain
    (root / "policies/promotion.data.json").write_text(json.dumps(data))
    with pytest.raises(ApplyError, match="allowed_sources is not one chain from ci"):
        tree_envs(root)


def test_a_refused_apply_changes_nothing(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    (root / "environments/live").mkdir()  # in the way of renaming prod → live
    (root / "environments/live/notes.txt").write_text("someone's\n")
    before = snapshot(root)
    data = yaml.safe_load((root / "platform.yaml").read_text())
    data["registry"] = "reg.acme.test/ml"
    data["environments"][2]["name"] = "live"
    with pytest.raises(ApplyError, match="environments/live already exists"):
        apply(root, parse_platform(yaml.safe_dump(data)), yaml.safe_dump(data))
    assert snapshot(root) == before


def test_a_write_failure_puts_the_tree_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = copy_tree(tmp_path)
    before = snapshot(root)
    data = yaml.safe_load((root / "platform.yaml").read_text())
    data["registry"] = "reg.acme.test/ml"
    data["environments"][0]["name"] = "test"
    real_replace = os.replace
    calls = {"n": 0}

    def flaky_replace(src: object, dst: object) -> None:
        calls["n"] += 1
        if str(dst).endswith("policies/params.yaml"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr("pipeline.platform_config.apply.os.replace", flaky_replace)
    with pytest.raises(OSError, match="No space left"):
        apply(root, parse_platform(yaml.safe_dump(data)), yaml.safe_dump(data))
    assert calls["n"] > 3  # it got as far as writing files
    assert snapshot(root) == before  # files, renamed dirs and temp files all back as they were


def test_init_makes_another_organisations_repo_and_everything_follows(tmp_path: Path) -> None:
    root = copy_tree(tmp_path / "repo")
    done = cli(root, "init", *NEW_ORG)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "renamed env prod → live" in done.stdout
    platform = load_platform(root)
    assert platform.env_names == ("test", "preprod", "live")
    assert not (root / "environments/prod").exists() and (root / "environments/live/release.yaml").is_file()
    assert (root / "loadtests/slo/preprod.yaml").is_file()

    check = cli(root, "init", "--check")
    assert check.returncode == 0, check.stdout + check.stderr

    # The CLI follows: env choices come from platform.yaml.
    bad = cli(root, "promote", "--to", "prod")
    assert bad.returncode == 2
    assert "invalid choice: 'prod' (choose from" in bad.stderr and "'live'" in bad.stderr

    # The bootstrap plan names the new namespaces, chart repository and TLS secret.
    plan = cli(root, "bootstrap", "--check", "-o", "json")
    assert plan.returncode == 0, plan.stderr
    secrets = {i["name"] for i in json.loads(plan.stdout)["items"] if i["kind"] == "secret"}
    assert {"ml-test/hf-token", "ml-preprod/hf-token", "ml-live/hf-token", "ml-live/llm-acme-test-tls"} <= secrets
    assert "argocd repo add reg.acme.test/ml/charts" in plan.stdout
    for old in OLD_VALUES:
        assert old not in plan.stdout, f"{old!r} survived init in the bootstrap plan"

    # Render (charts + Argo CD + every policy) passes for the new organisation.
    out = root / ".runs/render"
    rendered = cli(root, "--run-dir", str(out), "render", "--env", "all")
    result = json.loads((out / "render.json").read_text())
    failed = [f"{c['name']}: {c['detail']}" for c in result["checks"] if c["status"] == "failed"]
    assert rendered.returncode == 0 and not failed, failed or rendered.stderr[-2000:]

    manifests = {p.parent.name: p.read_text() for p in (out / "rendered").glob("*/manifests.yaml")}
    assert {"test", "preprod", "live", "argocd", "rollback-controller"} <= set(manifests)
    everything = "\n".join(manifests.values())
    for old in OLD_VALUES:
        assert old not in everything, f"{old!r} survived init in the rendered manifests"

    live = list(yaml.safe_load_all(manifests["live"]))
    # live (was prod) enables the canary: its model-serving workload is an Argo Rollouts Rollout.
    deployment = next(d for d in live if d and d["kind"] == "Rollout")
    assert deployment["metadata"]["namespace"] == "ml-live"
    assert deployment["metadata"]["labels"]["ml.acme.test/environment"] == "live"
    images = {c["name"]: c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert images["gateway"].startswith("reg.acme.test/ml/gateway@sha256:")
    assert images["vllm"].startswith("reg.acme.test/ml/vllm@sha256:")
    config = next(d for d in live if d and d["kind"] == "ConfigMap" and "GATEWAY_JWT_ISSUER" in d.get("data", {}))
    assert config["data"]["GATEWAY_JWT_ISSUER"] == "https://id.acme.test/"
    assert config["data"]["GATEWAY_JWT_JWKS"] == "https://id.acme.test/keys"
    route = next(d for d in live if d and d["kind"] == "HTTPRoute")
    assert route["spec"]["hostnames"] == ["llm.acme.test"]

    apps = [d for d in yaml.safe_load_all(manifests["argocd"]) if d and d["kind"] == "Application"]
    dest = {a["metadata"]["name"]: a["spec"]["destination"] for a in apps}
    assert dest["llm-service-preprod"] == {"server": "https://preprod.k8s.acme.test", "namespace": "ml-preprod"}
    sources = [s["repoURL"] for a in apps for s in a["spec"].get("sources", [])]
    assert set(sources) <= {"https://code.acme.test/ml/delivery.git", "reg.acme.test/ml/charts"}


def test_policies_follow_the_registry_and_envs(tmp_path: Path) -> None:
    from pipeline.checks import policy

    root = copy_tree(tmp_path / "repo")
    assert cli(root, "init", *NEW_ORG).returncode == 0
    params = policy.load_params(root / "policies/params.yaml", "live")
    assert params["allowed_registries"] == ["reg.acme.test/"]
    assert params["require_digests"] is True  # prod's policy entry moved to live
    assert params["label_domain"] == "ml.acme.test"
    data = json.loads((root / "policies/promotion.data.json").read_text())["promotion"]
    assert data["allowed_sources"] == {"test": ["ci"], "preprod": ["test"], "live": ["preprod"]}
    assert data["approvers_required"] == {"test": 0, "preprod": 0, "live": 2}


def test_the_test_stage_runs_another_organisations_tree_as_the_example(tmp_path: Path) -> None:
    """An adopter's `ci` tests its code, charts and policies on a copy re-derived for the example
    organisation (the suite's expectations); its own values are render's and init --check's."""
    from pipeline.checks import policy
    from pipeline.stages.test import example_tree

    root = copy_tree(tmp_path / "repo")
    with example_tree(root) as same:
        assert same == (root, None)  # the example itself: tested in place
    assert cli(root, "init", *NEW_ORG).returncode == 0
    failing = [o for o in policy.run_tests(root / "policies") if not o.passed]
    assert failing  # the Rego tests assert the example's labels, registries and env names
    with example_tree(root) as (suite, why):
        assert suite != root and why and "example organisation" in why
        # In the system temp dir, not under the run dir: tests bind AF_UNIX sockets (≤108 bytes) below it.
        assert suite.parent.parent == Path(tempfile.gettempdir())
        assert (suite / "platform.yaml").read_text() == (root / "tests/example-platform.yaml").read_text()
        assert (suite / "environments/prod/values.yaml").is_file() and not (suite / "environments/live").exists()
        assert derived.problems(suite) == []
        assert [o for o in policy.run_tests(suite / "policies") if not o.passed] == []
    assert not suite.exists()  # removed after the stage
    assert load_platform(root).env_names == ("test", "preprod", "live")  # the adopter's tree is untouched


def test_the_test_stage_runs_a_new_model_record_as_the_example(tmp_path: Path) -> None:
    """A model-only change (app/model.yaml) is tested on a copy holding the example record the
    suite asserts; the new record itself is build's, smoke's and eval's to judge."""
    from pipeline.stages.test import example_tree

    root = copy_tree(tmp_path / "repo")
    record = root / "app/model.yaml"
    shipped = record.read_text()
    record.write_text(shipped.replace("steps: 600", "steps: 700"))
    assert record.read_text() != shipped
    with example_tree(root) as (suite, why):
        assert suite != root and why and "example model record" in why and "organisation" not in why
        assert (suite / "app/model.yaml").read_text() == (root / "tests/example-model.yaml").read_text() == shipped
        assert derived.problems(suite) == []
    assert not suite.exists()
    assert "steps: 700" in record.read_text()  # the tree's own record is untouched


def test_pytest_refuses_to_run_on_another_organisations_values(tmp_path: Path) -> None:
    root = copy_tree(tmp_path / "repo")
    (root / "platform.yaml").write_text(
        (root / "platform.yaml").read_text().replace("organisation: example", "organisation: acme")
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--co", "tests/platform_config"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 4, done.stdout + done.stderr  # pytest's usage error
    assert "run `python -m pipeline test`" in done.stderr


def _args(*argv: str) -> object:
    import argparse

    from pipeline.commands import init

    parser = argparse.ArgumentParser()
    init.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_init_keeps_values_chosen_apart_from_the_domain_and_envs_clusters() -> None:
    from ruamel.yaml import YAML

    from pipeline.commands import init

    data = YAML(typ="rt").load((REPO / "platform.yaml").read_text())
    data["idp"]["issuer"] = "https://login.example.net/"  # chosen, not derived from the domain
    data["environments"][2]["cluster"] = "https://prod.k8s.example.net"
    init.apply_flags(data, _args("--domain", "acme.test", "--env", "dev", "--env", "staging", "--env", "prod=ml-prod"))
    assert data["idp"]["issuer"] == "https://login.example.net/"
    assert data["labelDomain"] == "llm.acme.test" and data["contact"] == "platform@acme.test"
    envs = {e["name"]: e for e in data["environments"]}
    assert envs["prod"] == {
        "name": "prod",
        "namespace": "ml-prod",
        "cluster": "https://prod.k8s.example.net",
        "host": "llm.acme.test",
    }
    assert envs["dev"]["namespace"] == "llm-dev" and envs["dev"]["host"] == "llm.dev.acme.test"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["init", "--git-url", "git@code.acme.test:ml/delivery.git"], "give the https URL Argo CD reads"),
        (["init", "--check", "--org", "acme"], "--check reads platform.yaml as it is; it takes none of --org"),
        (["init", "--registry", "https://reg.acme.test/ml"], "registry: Value error"),
    ],
)
def test_init_usage_errors_name_the_flag_and_change_nothing(tmp_path: Path, argv: list[str], message: str) -> None:
    root = copy_tree(tmp_path / "repo")
    before = snapshot(root)
    done = cli(root, *argv)
    assert done.returncode == 2 and message in done.stderr, done.stdout + done.stderr
    assert done.stdout == "" and snapshot(root) == before


@pytest.mark.parametrize("argv", [["status"], ["--help"], ["promote", "--help"]])
def test_a_broken_platform_file_is_a_usage_error_not_a_traceback(tmp_path: Path, argv: list[str]) -> None:
    root = copy_tree(tmp_path / "repo")
    text = (root / "platform.yaml").read_text()
    (root / "platform.yaml").write_text(text.replace("registry: registry.example.com/llm", "registry: https://Reg/x"))
    done = cli(root, *argv)
    assert done.returncode == 2, done.stderr
    assert "platform.yaml: registry: Value error" in done.stderr and "Traceback" not in done.stderr
    assert "git checkout platform.yaml" in done.stderr
