"""Decoding the raw document into ``Config``, with messages that name the field.

msgspec reports ``Expected `int` <= 65535 - at `$.server.port```; the operator of a
crash-looping pod needs ``server.port: expected int >= 0 <= 65535, got "x" (from --port)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from gateway.config.errors import ConfigError
from gateway.config.sections import Config
from gateway.config.wording import known, show

_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_PATH_PART = re.compile(r"\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)|\[(?P<index>\d+)\]")


def decode(raw: dict[str, Any], sources: Mapping[str, str]) -> Config:
    _normalize(raw)
    try:
        return msgspec.convert(raw, Config, strict=True)
    except msgspec.ValidationError as e:
        raise ConfigError(_explain(str(e), raw, sources)) from None


def _normalize(raw: dict[str, Any]) -> None:
    """The spellings people use that the types do not take as they are."""
    log = raw.get("log")
    if isinstance(log, dict) and isinstance(log.get("level"), str):
        # "INFO" is what people type; the Literal type wants one canonical spelling.
        log["level"] = log["level"].lower()
    cluster = raw.get("cluster")
    if isinstance(cluster, dict) and isinstance(cluster.get("nats_urls"), str):
        # An environment variable holds one string: "nats://a:4222,nats://b:4222".
        cluster["nats_urls"] = [u.strip() for u in cluster["nats_urls"].split(",") if u.strip()]


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
        names = (
            [f.name for f in parent.fields]
            if isinstance(parent, msgspec.inspect.StructType)
            else []
        )
        what = "section" if len(path) == 1 else "key"
        return f"{_dotted(path)}: unknown {what}{known(field, names)}"
    value = _value_at(raw, path)
    expected = _describe(_type_at(path))
    text = f"{_dotted(path)}: expected {expected}, got {show(value)}"
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
        return "one of " + ", ".join(show(v) for v in t.values)
    if isinstance(t, msgspec.inspect.UnionType):
        return " or ".join(
            _describe(u) for u in t.types if not isinstance(u, msgspec.inspect.NoneType)
        )
    if isinstance(t, msgspec.inspect.StructType):
        return "a table"
    if isinstance(t, msgspec.inspect.VarTupleType | msgspec.inspect.ListType):
        item = t.item_type
        if isinstance(item, msgspec.inspect.StructType):
            return "an array of tables ([[feeds]])"
        if isinstance(item, msgspec.inspect.StrType):
            return "an array of strings"
        return f"an array of ({_describe(item)})"
    return str(t)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)
