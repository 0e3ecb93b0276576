"""The slow image tests' podman, local base and registry fixtures (shared with tests/models)."""

from tests.helpers.container_fixtures import base, podman, reg

__all__ = ["base", "podman", "reg"]
