"""Where settings come from besides the defaults: the TOML file, the environment and ``--set``.

Overrides are applied to the raw TOML document before decoding, so they pass through exactly the
same type checks as the file; each remembers its source, which error messages name.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config.errors import ConfigError
from gateway.config.sections import SECTIONS
from gateway.config.wording import known, show

ENV_PREFIX = "PAXOS_GATEWAY__"


@dataclass(frozen=True, slots=True)
class Override:
    """One ``section.key`` set from outside the file; ``source`` is named in error messages."""

    key: str
    value: str
    source: str


def parse_set(text: str, source: str | None = None) -> Override:
    """Parse ``section.key=value`` as given to ``--set``."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected SECTION.KEY=VALUE, e.g. server.port=8766")
    return Override(key=key, value=value, source=source or f"--set {key}")


def env_overrides(env: Mapping[str, str]) -> list[Override]:
    """``PAXOS_GATEWAY__SECTION__KEY=value`` variables, in a stable order."""
    result = []
    for name in sorted(env):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].split("__")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(
                f"environment variable {name}: expected {ENV_PREFIX}SECTION__KEY, "
                f"e.g. {ENV_PREFIX}SERVER__PORT"
            )
        key = ".".join(p.lower() for p in parts)
        result.append(Override(key=key, value=env[name], source=f"environment variable {name}"))
    return result


def read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"config file {path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path}: not UTF-8: {e}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib's message already carries "(at line N, column M)".
        raise ConfigError(f"config file {path}: invalid TOML: {e}") from None


def apply_override(raw: dict[str, Any], ov: Override) -> None:
    section, dot, key = ov.key.partition(".")
    if not dot or not key or "." in key:
        raise ConfigError(f"{ov.source}: {ov.key!r} is not SECTION.KEY, e.g. server.port")
    if section == "feeds":
        raise ConfigError(f"{ov.source}: feeds cannot be set by key; use --feed PATH_OR_URL")
    cls = SECTIONS.get(section)
    if cls is None:
        raise ConfigError(f"{ov.source}: unknown section {section!r}{known(section, SECTIONS)}")
    fields = cls.__struct_fields__
    if key not in fields:
        raise ConfigError(f"{ov.source}: unknown key {ov.key!r}{known(key, fields)}")
    table = raw.setdefault(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{section}: expected a table, got {show(table)}")
    table[key] = _parse_value(ov.value)


def _parse_value(text: str) -> Any:
    """A TOML scalar if the text is one (8766, 1.5, true, "x"), else the text itself.

    Falling back to the bare text lets ``--set upstream.base_url=wss://host`` work unquoted;
    anything that is not a scalar (arrays, dates) is kept as text too, so the type check that
    follows reports it as the string the operator typed. (A list, ``cluster.nats_urls``, is
    one comma-separated string in an override: ``decode.py`` splits it.)
    """
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    if isinstance(value, str | bool | int | float):
        return value
    return text
