"""Where render finds CRD schemas: flag, env, Dagger default, local default (a clear error when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.checks import validate


def test_flag_then_env_then_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(validate.CRD_SCHEMAS_ENV, raising=False)
    monkeypatch.setenv("PIPELINE_EXECUTOR", "local")
    repo = tmp_path / "repo"
    assert validate.resolve_crd_location(None, repo) == str((repo / validate.DEFAULT_CRD_SCHEMAS).resolve())
    monkeypatch.setenv(validate.CRD_SCHEMAS_ENV, str(tmp_path / "env"))
    assert validate.resolve_crd_location(None, repo) == str(tmp_path / "env")
    assert validate.resolve_crd_location(str(tmp_path / "flag"), repo) == str(tmp_path / "flag")


def test_every_executor_defaults_to_the_repository_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under Dagger the default is the same in-repo copy as locally — never a floating catalog URL."""
    monkeypatch.delenv(validate.CRD_SCHEMAS_ENV, raising=False)
    for executor in ("dagger", "local"):
        monkeypatch.setenv("PIPELINE_EXECUTOR", executor)
        assert validate.resolve_crd_location(None, tmp_path) == str(tmp_path / "policies" / "crd-schemas")
    assert validate.resolve_crd_location("/crd-schemas", tmp_path) == "/crd-schemas"  # a mounted directory wins


def test_missing_directory_error_names_both_settings(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        validate.CrdSchemas(str(tmp_path / "nope"))
    assert "--crd-schemas" in str(err.value) and f"${validate.CRD_SCHEMAS_ENV}" in str(err.value)
