"""The one exception the configuration raises."""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration problem; ``str(error)`` is the complete message for the operator."""
