"""How a value and a list of known names are written in a configuration error message."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import msgspec


def show(value: Any) -> str:
    """A value as the operator wrote it, TOML-ish: strings quoted, booleans lower-case."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def known(name: str, choices: Iterable[str]) -> str:
    """`` (known: a, b); did you mean 'a'?`` for an unknown ``name``."""
    names = list(choices)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f" (known: {', '.join(names)}){hint}"
