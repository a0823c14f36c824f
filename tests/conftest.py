"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from trio.testing import MockClock

from bench.nats_server import NatsServer, single_node, three_node_cluster


@pytest.fixture
def slow_autojump() -> MockClock:
    # jumps only after 50 ms of real idleness, so loopback I/O always completes first
    return MockClock(autojump_threshold=0.05)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real single-node nats-server with JetStream (bench/nats_server.py)."""
    with single_node(tmp_path / "nats") as server:
        yield server


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[list[NatsServer]]:
    """Three routed JetStream nodes on 127.0.0.1."""
    with three_node_cluster(tmp_path / "nats") as servers:
        yield servers
