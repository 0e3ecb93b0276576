"""charts/rollback-controller: how the controller reaches argocd-server (TLS, tokens), as rendered.

The controller's client (pipeline/gitops/argocd_sync.py `ArgoCDConfig.from_env`) reads ARGOCD_SERVER,
ARGOCD_AUTH_TOKEN_FILE, ARGOCD_ROOT_TOKEN_FILE, ARGOCD_CA_FILE and ARGOCD_INSECURE; by default it
verifies against the system CAs, which never verify argocd-server's default self-signed certificate
(argo-cd docs/operator-manual/tls.md; util/settings/settings.go persists it in argocd-secret).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pipeline.runtime.tools import require
from tests.chart.conftest import by_kind

ENV_VALUES = Path("environments/argocd/rollback-controller-values.yaml")
DIGEST = "sha256:" + "a" * 64
BASE = (f"image.digest={DIGEST}", "gitops.repoURL=ssh://git@git.example.com/llm/llm-service.git")
HTTPS = "argocd.server=https://argocd-server.argocd.svc"
SECRETS = "/var/run/secrets/rollback-controller"


def _template(repo_root: Path, *sets: str, files: tuple[Path, ...] = ()) -> subprocess.CompletedProcess[str]:
    argv = [require("helm"), "template", "rollback-controller", str(repo_root / "charts/rollback-controller")]
    argv += ["--namespace", "llm-rollback"]
    for f in files:
        argv += ["-f", str(f)]
    for s in sets:
        argv += ["--set", s]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _docs(repo_root: Path, *sets: str, files: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    proc = _template(repo_root, *sets, files=files)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"])


def _env(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in _pod(docs)["containers"][0]["env"]}


def _mounts(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in _pod(docs)["containers"][0]["volumeMounts"]}


def _volume(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return dict(next(v for v in _pod(docs)["volumes"] if v["name"] == name))


def test_committed_values_verify_argocd_server_against_a_mounted_ca(repo_root: Path) -> None:
    docs = _docs(repo_root, files=(repo_root / ENV_VALUES,))
    env = _env(docs)
    assert env["ARGOCD_SERVER"] == "https://argocd-server.argocd.svc"
    assert env["ARGOCD_AUTH_TOKEN_FILE"] == f"{SECRETS}/argocd-token"
    assert "ARGOCD_INSECURE" not in env
    ca_file = Path(env["ARGOCD_CA_FILE"])
    assert _mounts(docs)["argocd-ca"] == str(ca_file.parent)
    volume = _volume(docs, "argocd-ca")
    assert volume["configMap"] == {"name": "argocd-server-ca", "items": [{"key": "ca.crt", "path": ca_file.name}]}
    assert "optional" not in volume["configMap"], "a missing bundle must keep the pod from starting"


def test_https_without_a_ca_decision_fails_to_render(repo_root: Path) -> None:
    proc = _template(repo_root, *BASE, HTTPS)
    assert proc.returncode != 0
    assert "argocd.server https://argocd-server.argocd.svc is https but argocd.tls makes no decision" in proc.stderr
    assert "argocd.tls.caConfigMap.name" in proc.stderr and "argocd.tls.insecure=true" in proc.stderr
    # A server without a scheme is https to the controller (from_env adds it).
    proc = _template(repo_root, *BASE, "argocd.server=argocd-server.argocd.svc")
    assert proc.returncode != 0 and "makes no decision" in proc.stderr


@pytest.mark.parametrize(
    ("sets", "why"),
    [
        (("argocd.tls.caConfigMap.name=a", "argocd.tls.caSecret.name=b"), "both set: name one CA bundle"),
        (("argocd.tls.caConfigMap.name=a", "argocd.tls.insecure=true"), "not both"),
    ],
)
def test_contradictory_tls_settings_fail(repo_root: Path, sets: tuple[str, ...], why: str) -> None:
    proc = _template(repo_root, *BASE, HTTPS, *sets)
    assert proc.returncode != 0 and why in proc.stderr, proc.stderr


def test_ca_from_a_secret_key(repo_root: Path) -> None:
    docs = _docs(
        repo_root, *BASE, HTTPS, "argocd.tls.caSecret.name=argocd-server-tls-ca", "argocd.tls.caSecret.key=tls.ca"
    )
    assert _volume(docs, "argocd-ca")["secret"] == {
        "secretName": "argocd-server-tls-ca",
        "items": [{"key": "tls.ca", "path": "ca.crt"}],
    }
    assert _env(docs)["ARGOCD_CA_FILE"] == f"{_mounts(docs)['argocd-ca']}/ca.crt"


def test_insecure_is_an_explicit_opt_out(repo_root: Path) -> None:
    docs = _docs(repo_root, *BASE, HTTPS, "argocd.tls.insecure=true")
    env = _env(docs)
    assert env["ARGOCD_INSECURE"] == "true" and "ARGOCD_CA_FILE" not in env
    assert "argocd-ca" not in _mounts(docs)


def test_plain_http_and_no_server_need_no_tls_decision(repo_root: Path) -> None:
    env = _env(_docs(repo_root, *BASE, "argocd.server=http://argocd-server.argocd.svc"))
    assert env["ARGOCD_SERVER"] == "http://argocd-server.argocd.svc"
    assert "ARGOCD_CA_FILE" not in env and "ARGOCD_INSECURE" not in env
    # The chart's default: no API server, the rollback waits for Argo CD's polling.
    docs = _docs(repo_root, *BASE)
    assert not any(k.startswith("ARGOCD_") for k in _env(docs))
    assert "argocd-ca" not in _mounts(docs)


def test_root_app_token_is_an_optional_key_beside_the_argocd_token(repo_root: Path) -> None:
    files = (repo_root / ENV_VALUES,)
    off = _docs(repo_root, "argocd.rootTokenKey=", files=files)
    assert "ARGOCD_ROOT_TOKEN_FILE" not in _env(off)
    keys = [d["secretKey"] for d in by_kind(off, "ExternalSecret")[0]["spec"]["data"]]
    assert keys == ["token", "ssh-privatekey", "known_hosts", "argocd-token"]

    # The committed values turn it on: prod rollbacks sync llm-platform-root with it.
    on = _docs(repo_root, files=files)
    env = _env(on)
    # Mirrors ARGOCD_AUTH_TOKEN_FILE: a key of the same Secret, in the same mounted directory.
    assert env["ARGOCD_ROOT_TOKEN_FILE"] == f"{SECRETS}/argocd-root-token"
    assert Path(env["ARGOCD_ROOT_TOKEN_FILE"]).parent == Path(env["ARGOCD_AUTH_TOKEN_FILE"]).parent
    assert _mounts(on)["secret"] == SECRETS
    es = by_kind(on, "ExternalSecret")[0]
    assert es["spec"]["data"][-1] == {
        "secretKey": "argocd-root-token",
        "remoteRef": {"key": "llm/rollback-controller", "property": "argocd-root-token"},
    }


def test_values_documented_and_schema_in_step(repo_root: Path) -> None:
    chart = repo_root / "charts/rollback-controller"
    schema = json.loads((chart / "values.schema.json").read_text())
    values = yaml.safe_load((chart / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(values)
    tls = schema["properties"]["argocd"]["properties"]["tls"]
    assert tls["additionalProperties"] is False
    assert set(tls["properties"]) == set(values["argocd"]["tls"]) == {"caConfigMap", "caSecret", "insecure"}
    lines = (chart / "values.yaml").read_text().splitlines()
    for key in ("rootTokenKey:", "tls:", "caConfigMap:", "caSecret:", "insecure:"):
        i = next(i for i, line in enumerate(lines) if line.strip().startswith(key))
        assert lines[i - 1].strip().startswith("# -- "), key
    bad = {**values, "argocd": {**values["argocd"], "tls": {**values["argocd"]["tls"], "insecure": "yes"}}}
    assert list(jsonschema.Draft7Validator(schema).iter_errors(bad))
