from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import __version__
from gateway.cli import main

# A subprocess that hangs would hang the suite: every run is bounded.
PROCESS_TIMEOUT = 30


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PAXOS_GATEWAY__")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        env=full_env,
        check=False,
    )


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"paxos-gateway {__version__}"


def test_no_command_prints_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: paxos-gateway" in capsys.readouterr().err


def test_unknown_flag_exits_2_with_a_clear_message() -> None:
    result = run_cli("--bogus")
    assert result.returncode == 2
    assert "unrecognized arguments: --bogus" in result.stderr


def test_unknown_command_exits_2() -> None:
    result = run_cli("frobnicate")
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr


def test_run_flag_without_value_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--port"])
    assert info.value.code == 2
    assert "--port: expected one argument" in capsys.readouterr().err


def test_subcommands_are_registered(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "demo", "simulate"):
        assert command in out


def test_run_with_a_bad_value_exits_2_naming_the_field() -> None:
    result = run_cli("run", "--set", "server.port=x")
    assert result.returncode == 2
    assert 'server.port: expected int >= 0 <= 65535, got "x" (from --set server.port)' in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_run_with_a_bad_shortcut_names_the_flag() -> None:
    result = run_cli("run", "--metrics-port", "99999")
    assert result.returncode == 2
    assert "metrics.port: expected int >= 0 <= 65535, got 99999 (from --metrics-port)" in (
        result.stderr
    )


def test_run_with_a_bad_environment_variable_names_it() -> None:
    result = run_cli("run", env={"PAXOS_GATEWAY__SERVER__SLOW_POLICY": "drop"})
    assert result.returncode == 2
    assert "server.slow_policy" in result.stderr
    assert "PAXOS_GATEWAY__SERVER__SLOW_POLICY" in result.stderr


def test_run_with_a_broken_config_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[server]\nport = 8765\n[[feeds]]\npath = "/marketdata"\nname = \n')
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 2
    assert "invalid TOML" in result.stderr
    assert "line 5" in result.stderr


def test_run_with_an_overlapping_feed_list_names_both(tmp_path: Path) -> None:
    result = run_cli("run", "--feed", "/marketdata", "--feed", "/marketdata/BTCUSD")
    assert result.returncode == 2
    assert "feeds[0] (marketdata:" in result.stderr
    assert "feeds[1] (marketdata-BTCUSD:" in result.stderr


def test_run_with_a_missing_config_file(tmp_path: Path) -> None:
    result = run_cli("run", "--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 2
    assert "absent.toml: cannot read" in result.stderr


def test_demo_rejects_a_bad_port(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "--port", "http"])
    assert info.value.code == 2
    assert "expected a port 0-65535, got 'http'" in capsys.readouterr().err


def test_run_on_a_port_in_use_exits_1_without_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "run", "--port", str(port), "--metrics-port", "0",
            "--feed", "ws://127.0.0.1:1/marketdata",
        )  # fmt: skip
    assert result.returncode == 1
    assert "cannot listen" in result.stderr
    assert f"127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
