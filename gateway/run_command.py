"""The ``run`` subcommand: configuration, logging and the heap set up, then one ``Gateway``.

A configuration problem is exit status 2 with one line naming the field; a port that cannot be
bound is exit status 1 with one line naming the address: operator problems, not tracebacks.
"""

from __future__ import annotations

import argparse
import errno
import functools
import gc
import logging
import os
import sys
from collections.abc import Mapping

import trio

from gateway import config as config_mod
from gateway.app import serve
from gateway.config import Config, ConfigError
from gateway.fanout.access import load_tokens
from gateway.logs import setup_logging

log = logging.getLogger("gateway.app")


def freeze_startup_heap() -> None:
    """Move everything allocated so far (modules, classes, functions, configuration: tens of
    thousands of objects that live as long as the process) out of the cyclic collector's sight.

    Every full collection walks all tracked objects; with these in, one took ~15 ms, a pause
    felt by every subscriber at once. Together with untracked records and frames
    (``outbox.OutFrame``) it keeps the collector's pauses off the fan-out's tail latency. For a
    process that runs one gateway (``run``, ``demo``); tests that start many in one process
    must not freeze what they will drop.
    """
    gc.collect()
    gc.freeze()


def load_auth_tokens(config: Config, env: Mapping[str, str]) -> tuple[bytes, ...]:
    """The subscriber tokens, read before the event loop starts so that a bad token file is a
    configuration error (exit 2), not a traceback."""
    return load_tokens(config.server.auth_token_file, env)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the gateway",
        description="Run the gateway: connect to the Paxos feeds and serve subscribers until "
        "SIGTERM. Settings: --config FILE, then PAXOS_GATEWAY__SECTION__KEY environment "
        "variables, then flags (strongest).",
    )
    config_mod.add_arguments(parser)
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    try:
        config = config_mod.from_args(args, os.environ)
        tokens = load_auth_tokens(config, os.environ)
    except ConfigError as e:
        print(f"paxos-gateway run: configuration error: {e}", file=sys.stderr)
        return 2
    setup_logging(config.log.level, config.log.format)
    freeze_startup_heap()
    try:
        trio.run(functools.partial(serve, config, auth_tokens=tokens))
    except ConfigError as e:  # a setting only the gateway itself can judge
        print(f"paxos-gateway run: configuration error: {e}", file=sys.stderr)
        return 2
    except BaseException as e:
        error = bind_error(e)
        if error is None:
            raise
        where = (
            f"server {config.server.host}:{config.server.port} / "
            f"metrics {config.metrics.host}:{config.metrics.port}"
        )
        log.error(
            "cannot listen (%s): %s", where, error.strerror or error,
            extra={"event": "startup_failed", "reason": str(error)},
        )  # fmt: skip
        return 1
    return 0


def bind_error(exc: BaseException) -> OSError | None:
    """The port-in-use (or not bindable) error inside ``exc``, if that is what it is.

    That is an operator problem, not a bug: it deserves one clear line, not a traceback.
    """
    if isinstance(exc, OSError):
        bindable = (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL)
        return exc if exc.errno in bindable else None
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = bind_error(inner)
            if found is not None:
                return found
    return None
