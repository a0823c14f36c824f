"""Where and how to connect: the subscriber URL and the handshake headers (sans-IO)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from gateway.client.codec import ClientEncoding

__all__ = ["auth_headers", "stream_url"]


def stream_url(url: str, encoding: ClientEncoding = "json") -> str:
    """The URL to open: a bare ``ws://host:port`` means ``/v1/stream``; a msgpack encoding
    goes in the query (``?encoding=msgpack``), unless the URL already picks one."""
    split = urlsplit(url)
    path = split.path if split.path not in ("", "/") else "/v1/stream"
    query = split.query
    if encoding != "json" and "encoding=" not in query:
        query = f"{query}&encoding={encoding}" if query else f"encoding={encoding}"
    return urlunsplit((split.scheme, split.netloc, path, query, ""))


def auth_headers(token: str | None) -> list[tuple[str, str]]:
    """The bearer token goes in a header, never in the URL (the gateway refuses URL tokens:
    URLs end up in logs)."""
    if token is None:
        return []
    if not token or any(c.isspace() for c in token):
        raise ValueError("a bearer token is one non-empty word without whitespace")
    return [("Authorization", f"Bearer {token}")]
