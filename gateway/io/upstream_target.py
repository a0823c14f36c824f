"""Where an upstream feed connects: its ``ws://``/``wss://`` URL as host, port, resource and
Host header, and the TLS context, which must verify (also used by the REST client).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Target", "target_of", "verified_tls_context"]


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    resource: str
    host_header: str
    tls: bool


def target_of(url: str) -> Target:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"{url!r}: not a ws:// or wss:// URL with a host")
    tls = parts.scheme == "wss"
    port = parts.port if parts.port is not None else (443 if tls else 80)
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    host = parts.hostname
    bracketed = f"[{host}]" if ":" in host else host
    default_port = 443 if tls else 80
    host_header = bracketed if port == default_port else f"{bracketed}:{port}"
    return Target(host, port, resource, host_header, tls)


def verified_tls_context(context: ssl.SSLContext | None = None) -> ssl.SSLContext:
    """The TLS context for wss upstreams; refuses one that would skip verification."""
    ctx = context if context is not None else ssl.create_default_context()
    if ctx.verify_mode != ssl.CERT_REQUIRED or not ctx.check_hostname:
        raise ValueError("upstream TLS must verify the certificate and the host name")
    return ctx
