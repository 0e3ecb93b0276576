"""Builders shared by several test suites (import as `tests.helpers.<module>`)."""
