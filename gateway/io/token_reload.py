"""Reloading the subscriber tokens while running: on a change of the token file, or on SIGHUP.

Rotating a token used to mean a restart, and a restart drops every subscriber. Tokens are only
checked at the handshake, so swapping them touches no connected subscriber: a subscriber that
connected with a token that is then removed stays connected (close it by other means if that
matters); new connections need a token of the new set.

* **File change**: the file's identity and contents stamp (``st_ino``, ``st_size``,
  ``st_mtime_ns``, of the path with symlinks followed) is checked every ``POLL_INTERVAL``
  (5 s): one ``stat`` call, nothing to install. A Kubernetes Secret mounted as a directory is
  updated by the kubelet by swapping a symlink (``..data``) within about a minute, which
  changes the inode; an editor's save changes the mtime. A stat that fails (the file briefly
  absent mid-swap) is no change: the next poll sees the new file.
* **SIGHUP**: reloads at once (``kill -HUP``), whether or not the stamp changed.

A reload reads the file and ``PAXOS_GATEWAY_AUTH_TOKENS`` (as at start) with the same checks
(``access.load_tokens``). If they fail (an unreadable file, a malformed token, a file left with
no token) the gateway keeps the tokens it has: a half-written Secret must never turn
authentication off or lock everyone out. Each reload logs one line (``"event":
"auth_tokens_reloaded"`` or ``"auth_tokens_reload_failed"``, with ``source`` and the number of
tokens, never a token) and counts in ``auth_reloads_total{source="file_change"|"sighup",
result="ok"|"error"}``.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping
from typing import Final, Literal

import trio
from prometheus_client import CollectorRegistry, Counter

from gateway.config import ConfigError
from gateway.fanout.access import TokenAuth, load_tokens
from gateway.io.metrics import PREFIX

__all__ = ["POLL_INTERVAL", "ReloadSource", "TokenReloader"]

log = logging.getLogger("gateway.auth")

POLL_INTERVAL: Final = 5.0
ReloadSource = Literal["file_change", "sighup"]
_Stamp = tuple[int, int, int] | None


class TokenReloader:
    """Keeps ``auth`` in step with ``token_file`` (and the environment's tokens)."""

    def __init__(
        self,
        auth: TokenAuth,
        token_file: str,
        env: Mapping[str, str],
        registry: CollectorRegistry,
        *,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.auth = auth
        self.token_file = token_file
        self.env = env
        self.poll_interval = poll_interval
        self.reloads = Counter(
            f"{PREFIX}_auth_reloads",
            "Reloads of the subscriber tokens, by what started them and whether they were "
            "taken (error: the old tokens are kept).",
            ["source", "result"],
            registry=registry,
        )
        for source in ("file_change", "sighup"):
            for result in ("ok", "error"):
                self.reloads.labels(source, result)
        self._stamp = self._read_stamp()

    def _read_stamp(self) -> _Stamp:
        if not self.token_file:
            return None
        try:
            st = os.stat(self.token_file)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def reload(self, source: ReloadSource) -> bool:
        """Read the tokens again and swap them in; False (old tokens kept) if they are bad."""
        self._stamp = self._read_stamp()
        try:
            tokens = load_tokens(self.token_file, self.env)
        except ConfigError as e:
            # The message names the file and line, never the token (access._check_token).
            self.reloads.labels(source, "error").inc()
            log.warning(
                "subscriber tokens not reloaded, keeping the %d in use: %s",
                self.auth.count, e,
                extra={"event": "auth_tokens_reload_failed", "source": source,
                       "error": str(e), "tokens": self.auth.count},
            )  # fmt: skip
            return False
        before = self.auth.count
        self.auth.replace(tokens)
        self.reloads.labels(source, "ok").inc()
        log.info(
            "subscriber tokens reloaded (%s): %d tokens, were %d", source, len(tokens), before,
            extra={"event": "auth_tokens_reloaded", "source": source, "tokens": len(tokens),
                   "previous_tokens": before},
        )  # fmt: skip
        return True

    def poll(self) -> bool:
        """One look at the file: reload if its stamp changed (and it is there)."""
        stamp = self._read_stamp()
        if stamp is None or stamp == self._stamp:
            return False
        self.reload("file_change")
        return True

    async def watch_file(self) -> None:
        if not self.token_file:
            return  # tokens from the environment only: nothing can change them
        while True:
            await trio.sleep(self.poll_interval)
            self.poll()

    async def watch_sighup(self, *, task_status: trio.TaskStatus[None]) -> None:
        with trio.open_signal_receiver(signal.SIGHUP) as signals:
            task_status.started()
            async for _ in signals:
                if not self.token_file:
                    log.info(
                        "SIGHUP: no server.auth_token_file, nothing to reload",
                        extra={"event": "auth_tokens_reload_skipped", "source": "sighup"},
                    )
                    continue
                self.reload("sighup")
