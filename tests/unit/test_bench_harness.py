"""The harness's pipes to its subscriber processes (``bench.harness.Clients``): a command that
timed out does not leave every later measurement failing."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from bench.harness import BenchError, Clients


def test_clients_catch_up_after_an_answer_came_late() -> None:
    ours, theirs = mp.Pipe()
    clients = Clients([ours])
    with pytest.raises(BenchError, match="no answer to 'stats' within 0 s"):
        clients.all(("stats",), timeout=0.0)
    assert theirs.recv() == ("stats",)
    theirs.send(("late", "answer to stats"))
    theirs.send(("answer to ping",))  # sent before it could have read the next command
    # The next command first takes the late answer, then its own.
    assert clients.all(("ping",)) == [("answer to ping",)]
    assert theirs.recv() == ("ping",)
    assert clients.lost is None and clients.late == []
    # An answer that never comes within the grace: that command and every later one say why,
    # at once (no further grace).
    clients.LATE_GRACE = 0.0
    with pytest.raises(BenchError):
        clients.all(("stats",), timeout=0.0)
    for _ in range(2):
        with pytest.raises(BenchError, match="out of step since: no answer to 'stats'"):
            clients.all(("ping",))
    assert clients.lost == "no answer to 'stats' within 0 s"
