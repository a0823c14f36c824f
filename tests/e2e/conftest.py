"""Fixtures of the end-to-end tests that start processes (tests.support.processes)."""

from tests.support.processes import simulator_urls

__all__ = ["simulator_urls"]
