"""``paxos-gateway simulate`` and the REST API: the flags, and the URL it prints."""

from __future__ import annotations

import argparse
import re

import pytest

from gateway.simulator import command


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="paxos-gateway")
    command.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["simulate", *argv])


def test_rest_defaults_are_paxos_limits() -> None:
    config = command.config_from_args(parse())
    config.check()
    assert config.rest_port == 0
    assert (config.rest.rate_limit, config.rest.burst, config.rest.recent_executions) == (
        10.0,
        10,
        2000,
    )
    assert config.faults.rest_delay == 0.0 and config.faults.rest_error_probability == 0.0


def test_rest_flags_reach_the_config() -> None:
    args = parse(
        "--rest-port", "0", "--rest-rate-limit", "2.5", "--rest-burst", "3000",
        "--rest-delay", "1.5", "--rest-error-probability", "0.25", "--rest-error-status", "502",
    )  # fmt: skip
    config = command.config_from_args(args)
    config.check()
    assert (config.rest.rate_limit, config.rest.burst) == (2.5, 3000)
    f = config.faults
    assert (f.rest_delay, f.rest_error_probability, f.rest_error_status) == (1.5, 0.25, 502)


def test_bad_rest_settings_return_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert command.run(parse("--rest-error-status", "404")) == 2
    assert "rest_error_status" in capsys.readouterr().err
    assert command.run(parse("--rest-burst", "0")) == 2


def test_bounded_run_prints_the_rest_url(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("--rate", "0", "--max-events", "500", "--linger", "0", "--levels", "20")
    assert command.run(args) == 0
    out = capsys.readouterr().out
    match = re.search(r"REST API on (http://127\.0\.0\.1:\d+/v2)", out)
    assert match, out
    assert f"{match.group(1)}/markets/{{market}}/recent-executions" in out
