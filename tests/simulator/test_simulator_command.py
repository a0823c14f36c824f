"""The ``simulate`` subcommand: flags to config, errors, and a real bounded run."""

from __future__ import annotations

import argparse

import pytest

from gateway.simulator import command


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="paxos-gateway")
    command.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["simulate", *argv])


def test_defaults() -> None:
    args = parse()
    assert args.func is command.run
    config = command.config_from_args(args)
    config.check()
    assert (config.host, config.port, config.seed, config.levels) == ("127.0.0.1", 0, 0, 200)
    assert config.rate == 100.0 and config.max_events is None
    assert config.faults.drop_probability == 0.0 and config.faults.connect_interval == 0.0


def test_flags_reach_the_config() -> None:
    args = parse(
        "--port", "0", "--seed", "42", "--rate", "0", "--levels", "30",
        "--markets", "btcusd, ETHUSD", "--max-events", "500", "--number-style", "mixed",
        "--timestamp-digits", "3", "--drop-probability", "0.01", "--drop-graceful",
        "--stall-probability", "0.001", "--bad-frame-probability", "0.1",
        "--bad-frame-kinds", "malformed,truncated", "--extra-field-probability", "0.2",
        "--unknown-market", "http_503", "--final-snapshot", "string",
        "--snapshot-split", "50", "--connect-interval", "1", "--no-backpressure",
    )  # fmt: skip
    config = command.config_from_args(args)
    config.check()
    assert config.seed == 42 and config.rate == 0.0 and config.levels == 30
    assert tuple(config.markets) == ("BTCUSD", "ETHUSD")
    assert config.max_events == 500 and config.number_style == "mixed"
    assert config.timestamp_digits == 3 and not config.backpressure
    f = config.faults
    assert (f.drop_probability, f.drop_graceful, f.stall_probability) == (0.01, True, 0.001)
    assert f.bad_frame_kinds == ("malformed", "truncated") and f.bad_frame_probability == 0.1
    assert f.extra_field_probability == 0.2 and f.unknown_market == "http_503"
    assert (f.final_snapshot, f.snapshot_split, f.connect_interval) == ("string", 50, 1.0)


@pytest.mark.parametrize(
    "argv",
    [
        ("--drop-probability", "1.5"),
        ("--bad-frame-kinds", "nonsense"),
        ("--final-snapshot", "maybe"),
        ("--markets", ","),
        ("--timestamp-digits", "12"),
    ],
)
def test_bad_flags_exit_2(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2


def test_bad_config_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert command.run(parse("--markets", "DOGEUSD")) == 2
    assert "DOGEUSD" in capsys.readouterr().err
    assert command.run(parse("--levels", "0")) == 2


def test_bounded_run_prints_the_url_and_exits(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("--rate", "0", "--max-events", "2000", "--linger", "0", "--levels", "20")
    assert command.run(args) == 0
    out = capsys.readouterr().out
    assert "ws://127.0.0.1:" in out
    assert "/marketdata/stablecoin" in out
    assert "events generated" in out
