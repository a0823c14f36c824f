"""The gateway's configuration: one TOML file, then environment, then command line.

Decoding is done by msgspec into frozen Structs with ``forbid_unknown_fields`` so that a typo
(``[server] prot = 8766``) is an error at start instead of a silently ignored setting. Every
problem is reported as a single ``ConfigError`` whose message starts with the dotted name of the
field (``server.port: expected int >= 0 <= 65535, got "x"``) and, for overrides, says which
environment variable or flag supplied the value, because the operator reading a crash-looping
pod's log has to know where to look.

Precedence, strongest last: defaults < file < ``PAXOS_GATEWAY__SECTION__KEY`` < ``--set`` and the
shortcut flags. Overrides are applied to the raw TOML document before decoding, so they pass
through exactly the same type checks as the file.
"""

from __future__ import annotations

import argparse
import difflib
import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from gateway.contract.records import JS_SAFE_MAX
from gateway.ingest import feeds as feeds_mod
from gateway.ingest.feeds import FeedSpec

ENV_PREFIX = "PAXOS_GATEWAY__"
DEFAULT_FEED_PATHS = ("/executiondata", "/marketdata", "/marketdata/stablecoin")

# Paxos delays connections beyond one per second per IP; retrying faster than that only queues
# us behind ourselves. Tests and the demo talk to the local simulator and opt out explicitly.
MIN_PRODUCTION_INTERVAL = 1.0

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Count = Annotated[int, msgspec.Meta(ge=1)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["text", "json"]
SlowPolicy = Literal["conflate", "disconnect"]

# Feed names end up in metric labels and in stream names (``status.<name>``), so they are kept
# to characters that need no escaping anywhere and contain no dot.
_FEED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class ConfigError(Exception):
    """A configuration problem; ``str(error)`` is the complete message for the operator."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class UpstreamConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    base_url: NonEmpty = feeds_mod.PRODUCTION_URL
    backoff_initial: Positive = 1.0
    backoff_max: Positive = 60.0
    ping_interval: Positive = 10.0
    ping_timeout: Positive = 10.0
    connect_timeout: Positive = 10.0
    connect_interval: NonNegative = 1.0
    dedup_capacity: Count = 65536
    max_message_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 16 * 1024 * 1024
    allow_fast_retry: bool = False


# Paxos's REST API beside each WebSocket host (PROTOCOL.md "Market discovery").
REST_URLS = {
    "ws.paxos.com": "https://api.paxos.com/v2",
    "ws.sandbox.paxos.com": "https://api.sandbox.paxos.com/v2",
}


class BackfillConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """REST backfill of the executions missed during upstream outages (issue 17)."""

    enabled: bool = True
    # "" derives it from upstream.base_url (REST_URLS); any other upstream needs it set.
    rest_url: str = ""
    # Paxos: 10 requests/s per IP, averaged; never more, whatever the file says.
    requests_per_second: Annotated[float, msgspec.Meta(gt=0, le=10)] = 10.0
    burst: Annotated[int, msgspec.Meta(ge=1, le=10)] = 5
    request_timeout: Positive = 10.0  # s per REST request (each of connect, read, ...)
    timeout: Positive = 60.0  # s for the whole backfill after one reconnect
    max_held: Count = 10000  # live executions held per feed while a backfill runs
    window: Count = 2000  # Paxos's recent-executions window: a full one may hide a gap
    markets_refresh: Positive = 60.0  # s between refreshes of the REST market list


class FeedConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    path: str | None = None
    url: str | None = None
    name: str | None = None
    required: bool = True


def _default_feeds() -> tuple[FeedConfig, ...]:
    return tuple(FeedConfig(path=p) for p in DEFAULT_FEED_PATHS)


class ServerConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    host: NonEmpty = "127.0.0.1"
    port: Port = 8765
    max_subscribers: Count = 10000
    # Sent to subscribers in hello: bounded by what a JavaScript client reads exactly.
    max_subscriptions: Annotated[int, msgspec.Meta(ge=1, le=JS_SAFE_MAX)] = 1000
    max_request_bytes: Annotated[int, msgspec.Meta(ge=256, le=JS_SAFE_MAX)] = 65536
    buffer_bytes: Annotated[int, msgspec.Meta(ge=1024, le=JS_SAFE_MAX)] = 4 * 1024 * 1024
    slow_policy: SlowPolicy = "conflate"
    history: Annotated[int, msgspec.Meta(ge=0)] = 10000
    ping_interval: Positive = 20.0
    ping_timeout: Positive = 20.0
    handshake_timeout: Positive = 10.0
    # Connections accepted whose upgrade request is not read yet, in all and per client
    # address; beyond: 503 at accept (fanout/admission.py has the numbers).
    max_pending: Count = 1024
    max_pending_per_ip: Count = 64
    # SO_SNDBUF of each subscriber socket (Linux reserves twice this); 0: the kernel's
    # autotuned default (up to net.ipv4.tcp_wmem's max, 4 MiB). See docs/operations.md "Memory".
    send_buffer_bytes: Annotated[int, msgspec.Meta(ge=0)] = 256 * 1024
    # New connections per client address (IPv4, or IPv6 /64): token-bucket rate and burst.
    connections_per_ip_per_second: Positive = 20.0
    connection_burst_per_ip: Count = 50
    # Bearer tokens, one per line; with PAXOS_GATEWAY_AUTH_TOKENS. Any token => auth required.
    auth_token_file: str = ""


class MetricsConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # Loopback like server.host; the image and the chart set 0.0.0.0 (probes, scrapes).
    host: NonEmpty = "127.0.0.1"
    port: Port = 9108
    ready_grace: NonNegative = 30.0
    # Ops connections; beyond either cap the oldest idle one is shed (io/ops_http.py).
    max_connections: Count = 64
    max_connections_per_address: Count = 8


class ShutdownConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    drain_timeout: NonNegative = 10.0


class LogConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    level: LogLevel = "info"
    format: LogFormat = "text"


class Config(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    upstream: UpstreamConfig = msgspec.field(default_factory=UpstreamConfig)
    backfill: BackfillConfig = msgspec.field(default_factory=BackfillConfig)
    feeds: tuple[FeedConfig, ...] = msgspec.field(default_factory=_default_feeds)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    shutdown: ShutdownConfig = msgspec.field(default_factory=ShutdownConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)

    def feed_specs(self) -> tuple[FeedSpec, ...]:
        """The feeds as ``FeedSpec``, in ``feeds`` order. Only valid on a validated config."""
        return tuple(_resolve_feed(self.upstream.base_url, f) for f in self.feeds)

    def rest_url(self) -> str:
        """Paxos's REST base URL for the backfill ("" if none can be derived)."""
        return self.backfill.rest_url or rest_url_for(self.upstream.base_url)

    def required_feeds(self) -> frozenset[str]:
        """Names of the feeds that count for readiness."""
        return frozenset(
            spec.name for spec, f in zip(self.feed_specs(), self.feeds, strict=True) if f.required
        )


_SECTIONS: dict[str, type[_Section]] = {
    "upstream": UpstreamConfig,
    "backfill": BackfillConfig,
    "server": ServerConfig,
    "metrics": MetricsConfig,
    "shutdown": ShutdownConfig,
    "log": LogConfig,
}


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
        _apply_override(raw, ov)
        sources[ov.key] = ov.source
    if feeds is not None:
        raw["feeds"] = [{"url": f} if "://" in f else {"path": f} for f in feeds]
        sources["feeds"] = "--feed"
    config = _decode(raw, sources)
    _validate(config, sources)
    return config


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


def from_args(args: argparse.Namespace, env: Mapping[str, str]) -> Config:
    """``load_config`` from the flags added by ``add_arguments``."""
    overrides: list[str | Override] = list(args.set_overrides)
    shortcuts = (
        ("port", "server.port", "--port"),
        ("metrics_port", "metrics.port", "--metrics-port"),
        ("log_format", "log.format", "--log-format"),
        ("log_level", "log.level", "--log-level"),
    )
    for attr, key, flag in shortcuts:
        value = getattr(args, attr)
        if value is not None:
            # A shortcut's value is a plain word, never TOML: quote it so that e.g. an
            # unexpected "--log-level 5" is reported as the string it is.
            if attr in ("log_format", "log_level"):
                value = msgspec.json.encode(value).decode()
            overrides.append(Override(key=key, value=value, source=flag))
    return load_config(args.config, env, overrides, feeds=args.feeds)


# -- reading and overriding


def _read_file(path: Path) -> dict[str, Any]:
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


def _apply_override(raw: dict[str, Any], ov: Override) -> None:
    section, dot, key = ov.key.partition(".")
    if not dot or not key or "." in key:
        raise ConfigError(f"{ov.source}: {ov.key!r} is not SECTION.KEY, e.g. server.port")
    if section == "feeds":
        raise ConfigError(f"{ov.source}: feeds cannot be set by key; use --feed PATH_OR_URL")
    cls = _SECTIONS.get(section)
    if cls is None:
        raise ConfigError(f"{ov.source}: unknown section {section!r}{_known(section, _SECTIONS)}")
    fields = cls.__struct_fields__
    if key not in fields:
        raise ConfigError(f"{ov.source}: unknown key {ov.key!r}{_known(key, fields)}")
    table = raw.setdefault(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{section}: expected a table, got {_show(table)}")
    table[key] = _parse_scalar(ov.value)


def _parse_scalar(text: str) -> Any:
    """A TOML scalar if the text is one (8766, 1.5, true, "x"), else the text itself.

    Falling back to the bare text lets ``--set upstream.base_url=wss://host`` work unquoted;
    anything that is not a scalar (arrays, dates) is kept as text too, so the type check that
    follows reports it as the string the operator typed.
    """
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    if isinstance(value, str | bool | int | float):
        return value
    return text


# -- decoding with messages that name the field

_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_PATH_PART = re.compile(r"\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)|\[(?P<index>\d+)\]")


def _decode(raw: dict[str, Any], sources: Mapping[str, str]) -> Config:
    if "log" in raw and isinstance(raw["log"], dict):
        level = raw["log"].get("level")
        if isinstance(level, str):
            # "INFO" is what people type; the Literal type wants one canonical spelling.
            raw["log"]["level"] = level.lower()
    try:
        return msgspec.convert(raw, Config, strict=True)
    except msgspec.ValidationError as e:
        raise ConfigError(_explain(str(e), raw, sources)) from None


def _explain(message: str, raw: dict[str, Any], sources: Mapping[str, str]) -> str:
    match = _AT.search(message)
    path: list[str | int] = []
    if match:
        for part in _PATH_PART.finditer(match["path"]):
            path.append(part["name"] if part["name"] is not None else int(part["index"]))
        message = message[: match.start()]
    unknown = re.match(r"Object contains unknown field `(?P<field>[^`]*)`", message)
    if unknown:
        field = unknown["field"]
        path.append(field)
        parent = _type_at(path[:-1])
        known = (
            [f.name for f in parent.fields]
            if isinstance(parent, msgspec.inspect.StructType)
            else []
        )
        what = "section" if len(path) == 1 else "key"
        return f"{_dotted(path)}: unknown {what}{_known(field, known)}"
    value = _value_at(raw, path)
    expected = _describe(_type_at(path))
    text = f"{_dotted(path)}: expected {expected}, got {_show(value)}"
    source = _source_of(path, sources)
    return f"{text} (from {source})" if source else text


def _source_of(path: list[str | int], sources: Mapping[str, str]) -> str | None:
    if path and path[0] == "feeds":
        return sources.get("feeds")
    if len(path) >= 2:
        return sources.get(f"{path[0]}.{path[1]}")
    return None


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "config"


def _type_at(path: Sequence[str | int]) -> msgspec.inspect.Type:
    t: msgspec.inspect.Type = msgspec.inspect.type_info(Config)
    for part in path:
        if isinstance(t, msgspec.inspect.StructType) and isinstance(part, str):
            fields = {f.name: f.type for f in t.fields}
            if part not in fields:
                break
            t = fields[part]
        elif isinstance(t, msgspec.inspect.VarTupleType | msgspec.inspect.ListType):
            t = t.item_type
        else:
            break
    return t


def _value_at(raw: Any, path: Sequence[str | int]) -> Any:
    for part in path:
        try:
            raw = raw[part]
        except (KeyError, IndexError, TypeError):
            return None
    return raw


def _describe(t: msgspec.inspect.Type) -> str:
    if isinstance(t, msgspec.inspect.IntType | msgspec.inspect.FloatType):
        name = "int" if isinstance(t, msgspec.inspect.IntType) else "number"
        bounds = [
            f"{op} {_num(v)}"
            for op, v in ((">", t.gt), (">=", t.ge), ("<", t.lt), ("<=", t.le))
            if v is not None
        ]
        return " ".join([name, *bounds])
    if isinstance(t, msgspec.inspect.StrType):
        return "a non-empty string" if t.min_length else "a string"
    if isinstance(t, msgspec.inspect.BoolType):
        return "true or false"
    if isinstance(t, msgspec.inspect.LiteralType):
        return "one of " + ", ".join(_show(v) for v in t.values)
    if isinstance(t, msgspec.inspect.UnionType):
        return " or ".join(
            _describe(u) for u in t.types if not isinstance(u, msgspec.inspect.NoneType)
        )
    if isinstance(t, msgspec.inspect.StructType):
        return "a table"
    if isinstance(t, msgspec.inspect.VarTupleType | msgspec.inspect.ListType):
        return "an array of tables ([[feeds]])"
    return str(t)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _show(value: Any) -> str:
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


def _known(name: str, choices: Iterable[str]) -> str:
    names = list(choices)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f" (known: {', '.join(names)}){hint}"


# -- rules that span fields or need more than a type


def _validate(config: Config, sources: Mapping[str, str]) -> None:
    def fail(key: str, text: str) -> None:
        source = sources.get("feeds" if key.startswith("feeds") else key)
        raise ConfigError(f"{key}: {text}" + (f" (from {source})" if source else ""))

    for section_name in _SECTIONS:
        section = getattr(config, section_name)
        for field in section.__struct_fields__:
            value = getattr(section, field)
            if isinstance(value, float) and not math.isfinite(value):
                fail(f"{section_name}.{field}", f"expected a finite number, got {value}")

    up = config.upstream
    if not up.allow_fast_retry:
        for key, value in (
            ("backoff_initial", up.backoff_initial),
            ("connect_interval", up.connect_interval),
        ):
            if value < MIN_PRODUCTION_INTERVAL:
                fail(
                    f"upstream.{key}",
                    f"must be >= {MIN_PRODUCTION_INTERVAL} (Paxos allows one new connection per "
                    f"second per IP), got {value}; set upstream.allow_fast_retry = true only "
                    "for tests against a local simulator",
                )
    if up.backoff_max < up.backoff_initial:
        fail(
            "upstream.backoff_max",
            f"must be >= upstream.backoff_initial ({up.backoff_initial}), got {up.backoff_max}",
        )
    if config.metrics.port != 0 and config.metrics.port == config.server.port:
        fail("metrics.port", f"must differ from server.port ({config.server.port})")
    problem = _base_url_problem(up.base_url)
    if problem:
        fail("upstream.base_url", problem)
    backfill = config.backfill
    if backfill.rest_url:
        problem = _rest_url_problem(backfill.rest_url)
        if problem:
            fail("backfill.rest_url", problem)
    elif backfill.enabled and not rest_url_for(up.base_url):
        fail(
            "backfill.rest_url",
            f"cannot be derived from upstream.base_url {_show(up.base_url)} (only "
            f'{", ".join(REST_URLS)} are known): set it (e.g. "https://api.paxos.com/v2") '
            "or set backfill.enabled = false",
        )

    if not config.feeds:
        fail("feeds", "at least one feed is required")
    specs: list[FeedSpec] = []
    for i, feed in enumerate(config.feeds):
        try:
            specs.append(_resolve_feed(up.base_url, feed))
        except _FeedProblem as e:
            fail(f"feeds[{i}]" + (f".{e.field}" if e.field else ""), e.text)
    for i, a in enumerate(specs):
        for j in range(i):
            b = specs[j]
            if a.kind == b.kind and (a.market is None or b.market is None or a.market == b.market):
                market = a.market or b.market
                stream = b.stream_for(market) if market else f"every {a.stream_kind}.* stream"
                fail(
                    "feeds",
                    f"feeds[{j}] ({b.name}: {b.url}) and feeds[{i}] ({a.name}: {a.url}) overlap: "
                    f"both would publish {stream}; keep one of them",
                )
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if spec.name in seen:
            fail(
                f"feeds[{i}].name",
                f"duplicate feed name {spec.name!r} (also feeds[{seen[spec.name]}])",
            )
        seen[spec.name] = i


def _base_url_problem(url: str) -> str | None:
    split = urlsplit(url)
    if split.scheme not in ("ws", "wss"):
        return f"scheme must be ws or wss, got {_show(url)}"
    if not split.hostname:
        return f"no host in {_show(url)}"
    if split.path.strip("/") or split.query or split.fragment:
        return f"must be scheme://host[:port] only (feeds add the path), got {_show(url)}"
    return None


def rest_url_for(base_url: str) -> str:
    """Paxos's REST base URL beside the WebSocket ``base_url``; "" for an unknown host."""
    return REST_URLS.get(urlsplit(base_url).hostname or "", "")


def _rest_url_problem(url: str) -> str | None:
    split = urlsplit(url)
    if split.scheme not in ("http", "https"):
        return f"scheme must be https (or http), got {_show(url)}"
    if not split.hostname:
        return f"no host in {_show(url)}"
    if split.query or split.fragment:
        return f"must be scheme://host[:port][/path] only, got {_show(url)}"
    return None


class _FeedProblem(Exception):
    def __init__(self, field: str | None, text: str) -> None:
        super().__init__(field, text)
        self.field, self.text = field, text


def _resolve_feed(base_url: str, feed: FeedConfig) -> FeedSpec:
    """``FeedSpec`` for one ``[[feeds]]`` entry; ``_FeedProblem`` names the entry's field."""
    if (feed.path is None) == (feed.url is None):
        given = "both" if feed.path is not None else "neither"
        raise _FeedProblem(None, f"set exactly one of path or url, got {given}")
    if feed.name is not None and not _FEED_NAME.match(feed.name):
        raise _FeedProblem(
            "name",
            f"use 1-64 letters, digits, '-' or '_' (it becomes a metric label and part of the "
            f"status.<name> stream), got {_show(feed.name)}",
        )
    if feed.path is not None:
        try:
            kind, market = feeds_mod.parse_feed_path(feed.path)
        except feeds_mod.FeedPathError as e:
            raise _FeedProblem("path", str(e)) from None
        path = "/" + "/".join(p for p in feed.path.split("/") if p)
        url = base_url.rstrip("/") + path
        return FeedSpec(name=feed.name or _default_name(path), url=url, kind=kind, market=market)
    assert feed.url is not None
    split = urlsplit(feed.url)
    if split.query or split.fragment:
        raise _FeedProblem("url", f"must not have a query or fragment, got {_show(feed.url)}")
    try:
        spec = feeds_mod.feed_from_url(feed.url)
    except feeds_mod.FeedPathError as e:
        raise _FeedProblem("url", str(e)) from None
    return FeedSpec(
        name=feed.name or _default_name(split.path),
        url=spec.url,
        kind=spec.kind,
        market=spec.market,
    )


def _default_name(path: str) -> str:
    return "-".join(p for p in path.split("/") if p)
