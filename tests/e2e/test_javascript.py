"""A JavaScript client reads the gateway exactly and resumes (protocol version 2).

Real parts only: the simulator and the gateway in-process on 127.0.0.1, and Node (Debian's
``nodejs``; ``.ci/run`` installs it) parsing the very frames the gateway sent and connecting with
its own WebSocket. Without ``node`` these tests fail in CI (``CI=true``) and are skipped
elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.metrics_traffic import TIMEOUT, running_gateway, wait_ready
from tests.support.wire_capture import RECORD_TYPES, capture

JS = Path(__file__).parent / "js"
NODE_TIMEOUT = 4 * TIMEOUT  # a bound on a hung child, not a measurement


def node() -> list[str]:
    """The command that runs Node with a ``WebSocket`` global (flag needed on Node 20)."""
    path = shutil.which("node")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is missing: .ci/run installs Debian's nodejs")
        pytest.skip("node is not installed (apt-get install nodejs)")
    return _node_command(path)


@cache
def _node_command(path: str) -> list[str]:
    probe = "process.exit(typeof WebSocket === 'function' ? 0 : 1)"
    if subprocess.run([path, "-e", probe], check=False).returncode == 0:
        return [path]
    return [path, "--experimental-websocket"]


async def run_node(*args: str) -> Any:
    with trio.fail_after(NODE_TIMEOUT):
        done = await trio.run_process(
            [*node(), *args], capture_stdout=True, capture_stderr=True, check=False
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return json.loads(done.stdout)


def _big_ints(value: Any) -> list[int]:
    """Every integer beyond 2^53 - 1 in a parsed message (Python's json keeps them exact)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value] if abs(value) > 2**53 - 1 else []
    if isinstance(value, dict):
        return [n for v in value.values() for n in _big_ints(v)]
    if isinstance(value, list):
        return [n for v in value for n in _big_ints(v)]
    return []


async def test_json_parse_in_node_keeps_every_value_exact(tmp_path: Path) -> None:
    async with running_gateway() as r:
        captured = await capture(r)
    frames = captured.json_frames
    messages = captured.json_messages()
    assert {m["type"] for m in messages} >= RECORD_TYPES | {"hello", "resumed", "streams"}
    assert all(_big_ints(m) == [] for m in messages), [m for m in messages if _big_ints(m)][:3]
    # A protocol-1 frame as control: the check below must be able to see a rounded number.
    v1 = '{"type":"hello","version":1,"epoch":1795582622048325593}'
    path = tmp_path / "frames.json"
    path.write_text(json.dumps([*frames, v1]), encoding="utf-8")

    out = await run_node(str(JS / "reserialise.js"), str(path))

    *seen, control = out
    assert json.loads(control["reserialised"])["epoch"] != 1795582622048325593
    assert len(seen) == len(frames)
    timed = 0
    for frame, message, js in zip(frames, messages, seen, strict=True):
        # Everything JavaScript holds, written back, is what the gateway sent, value for value.
        assert json.loads(js["reserialised"]) == message, frame
        for key, got in js["times"].items():
            assert got["type"] == "string" and got["text"] == message[key], (key, frame)
            if key != "epoch":
                assert got["bigint"] == message[key]
                timed += 1
    records = [m for m in messages if m["type"] in RECORD_TYPES]
    exchange = [m for m in records if "exchange_time" in m]
    assert exchange and timed == len(records) + len(exchange)  # every time of every record


async def test_a_javascript_client_resumes_with_the_epoch_it_parsed() -> None:
    async with running_gateway() as r:
        await wait_ready(r.gateway)
        out = await run_node(str(JS / "resume.js"), r.gateway.subscriber_url, "book.BTCUSD")
        epoch = r.gateway.epoch

    assert out["hello_epoch"] == epoch and out["epoch_type"] == "string"
    last = out["last"]
    assert last["epoch"] == epoch
    resumed = out["resumed"]
    answer = resumed["answer"]
    assert answer["type"] == "resumed", answer
    assert (answer["epoch"], answer["from_seq"]) == (epoch, last["seq"] + 1)
    # The stream goes on exactly after the last record held.
    assert resumed["next"]["seq"] == last["seq"] + 1 and resumed["next"]["epoch"] == epoch
    # The protocol-1 way (the epoch as a JavaScript number) is still accepted, and is exactly
    # why version 2 exists: the number is rounded, so the resume fails (unless by luck the
    # epoch was a multiple of 256 and survived).
    legacy = out["legacy"]
    if legacy["number_is_exact"]:
        assert legacy["answer"]["type"] == "resumed", legacy
    else:
        assert legacy["answer"]["type"] == "resume_failed", legacy
        assert legacy["answer"]["reason"] == "epoch_changed"
