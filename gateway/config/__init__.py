"""The gateway's configuration: one TOML file, then environment, then command line.

Decoding is done by msgspec into frozen Structs (``sections.py``) with ``forbid_unknown_fields``
so that a typo is an error at start instead of a silently ignored setting. Every problem is
reported as a single ``ConfigError`` whose message starts with the dotted name of the field
(``server.port: expected int >= 0 <= 65535, got "x"``) and, for overrides, says which
environment variable or flag supplied the value (``decode.py``), because the operator reading a
crash-looping pod's log has to know where to look.

Precedence, strongest last: defaults < file < ``PAXOS_GATEWAY__SECTION__KEY`` < ``--set`` and the
shortcut flags (``sources.py``). Rules across fields: ``validate.py``; URLs and feeds:
``resolve.py``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec

from gateway.config.decode import decode
from gateway.config.errors import ConfigError
from gateway.config.resolve import REST_URLS, rest_url_for
from gateway.config.sections import (
    DEFAULT_FEED_PATHS,
    BackfillConfig,
    ClusterConfig,
    Config,
    FeedConfig,
    LogConfig,
    MetricsConfig,
    Role,
    ServerConfig,
    ShutdownConfig,
    UpstreamConfig,
)
from gateway.config.sources import ENV_PREFIX, Override, apply_override, env_overrides, parse_set
from gateway.config.sources import read_file as _read_file
from gateway.config.validate import MIN_PRODUCTION_INTERVAL, validate

__all__ = [
    "DEFAULT_FEED_PATHS",
    "ENV_PREFIX",
    "MIN_PRODUCTION_INTERVAL",
    "REST_URLS",
    "BackfillConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "FeedConfig",
    "LogConfig",
    "MetricsConfig",
    "Override",
    "Role",
    "ServerConfig",
    "ShutdownConfig",
    "UpstreamConfig",
    "add_arguments",
    "env_overrides",
    "from_args",
    "load_config",
    "parse_set",
    "rest_url_for",
]


def load_config(
    path: Path | None,
    env: Mapping[str, str],
    overrides: Sequence[str | Override] = (),
    *,
    feeds: Sequence[str] | None = None,
) -> Config:
    """Build the validated configuration; raise ``ConfigError`` naming the bad field.

    ``overrides`` are ``section.key=value`` strings (as given to ``--set``) or ``Override``s
    (shortcut flags name themselves). ``feeds``, if given, replaces the feed list: each entry is
    a path (``/marketdata/BTCUSD``, joined to ``upstream.base_url``) or a full ``ws(s)://`` URL.
    """
    raw = _read_file(path) if path is not None else {}
    sources: dict[str, str] = {}
    for ov in [
        *env_overrides(env),
        *(parse_set(o) if isinstance(o, str) else o for o in overrides),
    ]:
        apply_override(raw, ov)
        sources[ov.key] = ov.source
    if feeds is not None:
        raw["feeds"] = [{"url": f} if "://" in f else {"path": f} for f in feeds]
        sources["feeds"] = "--feed"
    config = decode(raw, sources)
    validate(config, sources)
    return config


# (flag, attribute, key): shortcuts for --set; a word-valued one is quoted as a TOML string so
# that e.g. an unexpected "--log-level 5" is reported as the string it is.
_NUMBER_SHORTCUTS = (
    ("--port", "port", "server.port"),
    ("--metrics-port", "metrics_port", "metrics.port"),
)
_WORD_SHORTCUTS = (
    ("--log-format", "log_format", "log.format"),
    ("--log-level", "log_level", "log.level"),
    ("--role", "role", "cluster.role"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The config flags shared by every subcommand that runs a gateway."""
    group = parser.add_argument_group("configuration")
    group.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file")
    group.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        dest="set_overrides",
        help="override one setting (repeatable), e.g. --set server.port=8766",
    )
    group.add_argument("--port", metavar="PORT", help="server.port (subscriber WebSocket)")
    group.add_argument("--metrics-port", metavar="PORT", help="metrics.port (/metrics, /readyz)")
    group.add_argument(
        "--feed",
        action="append",
        metavar="PATH_OR_URL",
        dest="feeds",
        help="upstream feed (repeatable; replaces the configured feeds), "
        "e.g. /marketdata/BTCUSD or wss://ws.sandbox.paxos.com/executiondata",
    )
    group.add_argument("--log-format", metavar="FORMAT", help="log.format: text or json")
    group.add_argument("--log-level", metavar="LEVEL", help="log.level, e.g. info or debug")
    group.add_argument(
        "--role",
        metavar="ROLE",
        help="cluster.role with cluster.nats_urls set: all, ingest or edge (docs/cluster.md)",
    )


def from_args(args: argparse.Namespace, env: Mapping[str, str]) -> Config:
    """``load_config`` from the flags added by ``add_arguments``."""
    overrides: list[str | Override] = list(args.set_overrides)
    for flag, attr, key in _NUMBER_SHORTCUTS + _WORD_SHORTCUTS:
        value = getattr(args, attr, None)
        if value is None:
            continue
        if (flag, attr, key) in _WORD_SHORTCUTS:
            value = msgspec.json.encode(value).decode()
        overrides.append(Override(key=key, value=value, source=flag))
    return load_config(args.config, env, overrides, feeds=args.feeds)
