"""Who may connect, and how often (sans-IO: time comes in as an argument, no sockets).

* ``ConnectionRateLimiter``: a token bucket per client address (IPv4 address, or IPv6 /64:
  one host usually owns a whole /64), ``rate`` new connections per second with bursts of
  ``burst``. Memory is bounded: an address idle long enough to have a full bucket again is
  forgotten (a forgotten address and a full bucket behave the same), and past ``max_entries``
  the least recently seen address is forgotten too (it gets a fresh bucket: a bounded leniency
  under a flood of distinct addresses, never unbounded memory).
* ``TokenAuth``: bearer tokens from ``server.auth_token_file`` (one per line, blank lines and
  ``#`` comments ignored) and the environment variable ``PAXOS_GATEWAY_AUTH_TOKENS``
  (comma-separated); both sources are combined. When any token is configured, every subscriber
  must send ``Authorization: Bearer <token>``. Tokens in the URL (``?access_token=``) are not
  accepted: URLs end up in access logs, proxies and browser histories.
  A presented token is compared with every configured token, each time, by
  ``hmac.compare_digest`` over SHA-256 digests: the time taken says neither which token matched
  nor how long any of them is.
* ``LogBudget``: at most a few log lines per window, so a flood of rejected connections cannot
  flood the log.
* ``auth_warning``: the start-up warning for a gateway reachable beyond loopback without auth.

Tokens are read at start and again when the token file changes or on SIGHUP
(``io/token_reload.py``): ``TokenAuth.replace`` swaps the set, which only the next handshakes
see; connected subscribers are not touched.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

from gateway.config import ConfigError

__all__ = [
    "TOKENS_ENV",
    "ConnectionRateLimiter",
    "LogBudget",
    "TokenAuth",
    "auth_warning",
    "bearer_token",
    "client_key",
    "is_loopback",
    "load_tokens",
]

TOKENS_ENV: Final = "PAXOS_GATEWAY_AUTH_TOKENS"
MIN_TOKEN_LENGTH: Final = 16
MAX_TOKEN_LENGTH: Final = 4096
# RFC 6750 b64token: what may follow "Bearer " in an Authorization header.
_B64TOKEN: Final = re.compile(rb"^[A-Za-z0-9\-._~+/]+=*$")


# -- rate limit ----------------------------------------------------------------------------


def client_key(address: str) -> str:
    """The rate-limit key of a peer address: the IPv4 address (IPv4-mapped IPv6 included), the
    /64 of an IPv6 address, or the text itself if it is no IP address (a Unix socket)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class ConnectionRateLimiter:
    """Token buckets per client key; ``check(key, now)`` takes one token if there is one."""

    def __init__(self, rate: float, burst: int, *, max_entries: int = 65536) -> None:
        if not (rate > 0 and math.isfinite(rate)) or burst < 1 or max_entries < 1:
            raise ValueError("rate must be > 0, burst and max_entries >= 1")
        self.rate = rate
        self.burst = burst
        self.max_entries = max_entries
        # key -> (tokens, time of the last update); least recently seen first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._refill_time = burst / rate  # from empty to full

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, key: str, now: float) -> float:
        """0.0 if a connection from ``key`` is allowed now (and counted), else the seconds
        until one will be."""
        self._evict(now)
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_entries:
            self._buckets.popitem(last=False)
        return wait

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        # Oldest first: stop at the first one that may still be short of tokens. Bounded work
        # per call is not needed for correctness; each entry is evicted at most once.
        while buckets:
            key, (_, last) = next(iter(buckets.items()))
            if now - last < self._refill_time:
                break
            del buckets[key]


# -- bearer tokens -------------------------------------------------------------------------


def _check_token(token: str, where: str) -> bytes:
    # Messages never include the token: they end up in logs.
    raw = token.encode("utf-8", "replace")
    if not _B64TOKEN.match(raw):
        raise ConfigError(
            f"{where}: a token may only contain letters, digits and -._~+/ (then '=' padding)"
        )
    if not MIN_TOKEN_LENGTH <= len(raw) <= MAX_TOKEN_LENGTH:
        raise ConfigError(
            f"{where}: a token must be {MIN_TOKEN_LENGTH} to {MAX_TOKEN_LENGTH} characters long "
            f"(got {len(raw)}); generate one with: openssl rand -base64 32"
        )
    return raw


def load_tokens(token_file: str, env: Mapping[str, str]) -> tuple[bytes, ...]:
    """The configured tokens (file, then environment), de-duplicated; ``ConfigError`` names the
    file and line or the variable, never the token."""
    tokens: list[bytes] = []
    if token_file:
        path = Path(token_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(
                f"server.auth_token_file: cannot read {path}: {e.strerror or e}"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(f"server.auth_token_file: {path} is not UTF-8") from None
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                tokens.append(_check_token(line, f"server.auth_token_file {path} line {number}"))
        if not tokens:
            raise ConfigError(
                f"server.auth_token_file: {path} has no token (one per line; # comments)"
            )
    value = env.get(TOKENS_ENV)
    if value is not None:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not parts:
            raise ConfigError(f"environment variable {TOKENS_ENV}: set but has no token")
        for i, part in enumerate(parts, 1):
            tokens.append(_check_token(part, f"environment variable {TOKENS_ENV} token {i}"))
    return tuple(dict.fromkeys(tokens))


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The token of the one ``Authorization: Bearer <token>`` header (names and the scheme
    case-insensitive), or None if it is missing, repeated or malformed."""
    found: bytes | None = None
    seen = 0
    for name, value in headers:
        if name.lower() == b"authorization":
            seen += 1
            found = value
    if seen != 1 or found is None:
        return None
    scheme, _, token = found.strip().partition(b" ")
    token = token.strip(b" \t")
    if scheme.lower() != b"bearer" or len(token) > MAX_TOKEN_LENGTH or not _B64TOKEN.match(token):
        return None
    return token


class TokenAuth:
    """The configured tokens; no tokens means authentication is off."""

    def __init__(self, tokens: Iterable[bytes]) -> None:
        # Digests: compare_digest on equal-length inputs, whatever the token lengths.
        self._digests = tuple(hashlib.sha256(t).digest() for t in tokens)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    @property
    def count(self) -> int:
        return len(self._digests)

    def replace(self, tokens: Iterable[bytes]) -> None:
        """Swap the token set (a reload). One assignment: a handshake being checked sees the
        old set or the new one, never a mix."""
        self._digests = tuple(hashlib.sha256(t).digest() for t in tokens)

    def check(self, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        """True if authentication is off or the request carries a configured token."""
        if not self._digests:
            return True
        token = bearer_token(headers)
        # A missing or malformed header still costs the same comparisons as a wrong token.
        presented = hashlib.sha256(token if token is not None else b"").digest()
        matched = False
        for digest in self._digests:
            # No early exit: every configured token is compared, every time.
            matched |= hmac.compare_digest(presented, digest)
        return matched and token is not None


# -- log lines -----------------------------------------------------------------------------


class LogBudget:
    """At most ``lines`` log lines per ``window`` seconds (a fixed window)."""

    def __init__(self, lines: int = 10, window: float = 10.0) -> None:
        self.lines = lines
        self.window = window
        self._start = -math.inf
        self._used = 0
        self.suppressed = 0  # lines refused since the last one allowed

    def allow(self, now: float) -> int | None:
        """None: do not log. Else log, mentioning the returned count of lines suppressed."""
        if now - self._start >= self.window:
            self._start, self._used = now, 0
        if self._used >= self.lines:
            self.suppressed += 1
            return None
        self._used += 1
        suppressed, self.suppressed = self.suppressed, 0
        return suppressed


# -- start-up ------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """True if binding ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def auth_warning(host: str, port: int, auth_enabled: bool) -> str | None:
    """The warning to log at start when subscribers can connect from other machines without a
    token, else None."""
    if auth_enabled or is_loopback(host):
        return None
    return (
        f"subscriber authentication is OFF and the server listens on {host}:{port}: anyone who "
        f"can reach that address can subscribe. Set server.auth_token_file or {TOKENS_ENV} to "
        "require bearer tokens, or bind server.host to 127.0.0.1"
    )
