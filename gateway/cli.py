"""The ``paxos-gateway`` console script: one subcommand per module that owns the code.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func`` to a callable taking the parsed arguments and returning the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gateway import __version__

SUBCOMMAND_MODULES = (
    "gateway.run_command",  # run
    "gateway.tools.demo",  # demo
    "gateway.simulator.command",  # simulate
    "gateway.tools.tail",  # tail
    "gateway.recording.record",  # record
    "gateway.recording.replay",  # replay
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paxos-gateway",
        description="Normalizing fan-out gateway for the Paxos public WebSocket feeds.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        code: int = func(args)
    except KeyboardInterrupt:
        # Ctrl-C outside a command's own signal handling: no traceback, the usual status.
        return 130
    return code
