"""URLs: the upstream base URL, Paxos's REST URL beside it, NATS URLs and each ``[[feeds]]`` entry.

Each ``*_problem`` returns the message for a bad URL (``None`` if it is fine), so that
``validate.py`` can name the field and where the value came from.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gateway.config.wording import show
from gateway.ingest import feeds as feeds_mod
from gateway.ingest.feeds import FeedSpec

if TYPE_CHECKING:
    from gateway.config.sections import FeedConfig

# Paxos's REST API beside each WebSocket host (PROTOCOL.md "Market discovery").
REST_URLS = {
    "ws.paxos.com": "https://api.paxos.com/v2",
    "ws.sandbox.paxos.com": "https://api.sandbox.paxos.com/v2",
}

# Feed names end up in metric labels and in stream names (``status.<name>``), so they are kept
# to characters that need no escaping anywhere and contain no dot.
_FEED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def base_url_problem(url: str) -> str | None:
    split = urlsplit(url)
    if split.scheme not in ("ws", "wss"):
        return f"scheme must be ws or wss, got {show(url)}"
    if not split.hostname:
        return f"no host in {show(url)}"
    if split.path.strip("/") or split.query or split.fragment:
        return f"must be scheme://host[:port] only (feeds add the path), got {show(url)}"
    return None


def rest_url_for(base_url: str) -> str:
    """Paxos's REST base URL beside the WebSocket ``base_url``; "" for an unknown host."""
    return REST_URLS.get(urlsplit(base_url).hostname or "", "")


def rest_url_problem(url: str) -> str | None:
    split = urlsplit(url)
    if split.scheme not in ("http", "https"):
        return f"scheme must be https (or http), got {show(url)}"
    if not split.hostname:
        return f"no host in {show(url)}"
    if split.query or split.fragment:
        return f"must be scheme://host[:port][/path] only, got {show(url)}"
    return None


def nats_url_problem(url: str) -> str | None:
    try:
        split = urlsplit(url)
        split.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as e:
        return f"{e}: {show(url)}"
    if split.scheme not in ("nats", "tls"):
        return f"scheme must be nats or tls, got {show(url)}"
    if not split.hostname:
        return f"no host in {show(url)}"
    if split.path.strip("/") or split.query or split.fragment:
        return f"must be scheme://host[:port] only, got {show(url)}"
    return None


class FeedProblem(Exception):
    """What is wrong with one ``[[feeds]]`` entry; ``field`` is None for the entry as a whole."""

    def __init__(self, field: str | None, text: str) -> None:
        super().__init__(field, text)
        self.field, self.text = field, text


def resolve_feed(base_url: str, feed: FeedConfig) -> FeedSpec:
    """``FeedSpec`` for one ``[[feeds]]`` entry; ``FeedProblem`` names the entry's field."""
    if (feed.path is None) == (feed.url is None):
        given = "both" if feed.path is not None else "neither"
        raise FeedProblem(None, f"set exactly one of path or url, got {given}")
    if feed.name is not None and not _FEED_NAME.match(feed.name):
        raise FeedProblem(
            "name",
            f"use 1-64 letters, digits, '-' or '_' (it becomes a metric label and part of the "
            f"status.<name> stream), got {show(feed.name)}",
        )
    if feed.path is not None:
        try:
            kind, market = feeds_mod.parse_feed_path(feed.path)
        except feeds_mod.FeedPathError as e:
            raise FeedProblem("path", str(e)) from None
        path = "/" + "/".join(p for p in feed.path.split("/") if p)
        url = base_url.rstrip("/") + path
        return FeedSpec(name=feed.name or _default_name(path), url=url, kind=kind, market=market)
    assert feed.url is not None
    split = urlsplit(feed.url)
    if split.query or split.fragment:
        raise FeedProblem("url", f"must not have a query or fragment, got {show(feed.url)}")
    try:
        spec = feeds_mod.feed_from_url(feed.url)
    except feeds_mod.FeedPathError as e:
        raise FeedProblem("url", str(e)) from None
    return FeedSpec(
        name=feed.name or _default_name(split.path),
        url=spec.url,
        kind=spec.kind,
        market=spec.market,
    )


def _default_name(path: str) -> str:
    return "-".join(p for p in path.split("/") if p)
