from __future__ import annotations

import pytest
import trio
import trio.testing

from gateway.io.connect_gate import ConnectGate


async def _grant_times(gate: ConnectGate, callers: int) -> list[float]:
    times: list[float] = []

    async def caller() -> None:
        await gate.wait()
        times.append(trio.current_time())

    with trio.fail_after(callers * gate.interval + 5):
        async with trio.open_nursery() as nursery:
            for _ in range(callers):
                nursery.start_soon(caller)
    return sorted(times)


async def test_first_connection_is_immediate(autojump_clock: trio.testing.MockClock) -> None:
    gate = ConnectGate(1.0)
    start = trio.current_time()
    await gate.wait()
    assert trio.current_time() == start
    assert gate.granted == 1


async def test_concurrent_callers_are_spaced_by_the_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = ConnectGate(1.0)
    start = trio.current_time()
    times = await _grant_times(gate, 5)
    assert [t - start for t in times] == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])
    assert gate.granted == 5


async def test_an_old_grant_does_not_delay_a_later_caller(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = ConnectGate(1.0)
    await gate.wait()
    await trio.sleep(5)
    before = trio.current_time()
    await gate.wait()
    assert trio.current_time() == before


async def test_a_caller_right_after_a_grant_waits_the_rest_of_the_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = ConnectGate(1.0)
    await gate.wait()
    first = trio.current_time()
    await trio.sleep(0.3)
    assert gate.delay() == pytest.approx(0.7)
    await gate.wait()
    assert trio.current_time() - first == pytest.approx(1.0)


async def test_cancelled_last_waiter_gives_its_slot_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = ConnectGate(1.0)
    await gate.wait()  # slot at t0; the next free slot is t0 + 1
    t0 = trio.current_time()
    with trio.move_on_after(0.5):
        await gate.wait()  # reserves t0 + 1, cancelled before it
    # The reserved-but-unused slot is free again: the next caller gets t0 + 1, not t0 + 2.
    await gate.wait()
    assert trio.current_time() - t0 == pytest.approx(1.0)


async def test_cancelled_waiter_with_later_reservations_keeps_the_spacing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = ConnectGate(1.0)
    t0 = trio.current_time()
    times: list[float] = []

    async def caller() -> None:
        await gate.wait()
        times.append(trio.current_time() - t0)

    cancel_me = trio.CancelScope()

    async def cancelled_caller() -> None:
        with cancel_me:
            await gate.wait()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller)  # slot t0
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(caller)  # slot t0 + 1
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(cancelled_caller)  # slot t0 + 2
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(caller)  # slot t0 + 3
            await trio.testing.wait_all_tasks_blocked()
            cancel_me.cancel()
    assert cancel_me.cancelled_caught
    # Slot t0 + 2 went unused, but t0 + 3 was already promised: nothing moves closer.
    assert times == pytest.approx([0.0, 1.0, 3.0])


async def test_zero_interval_never_waits(autojump_clock: trio.testing.MockClock) -> None:
    gate = ConnectGate(0.0)
    start = trio.current_time()
    for _ in range(10):
        await gate.wait()
    assert trio.current_time() == start


def test_rejects_negative_interval() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        ConnectGate(-1.0)
