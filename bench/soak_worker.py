"""The soak's subscriber workers (``bench.soak``): separate processes, so that JSON parsing
must not starve the simulator. Each runs an asyncio loop of checking clients that read slowly,
stop reading, close or vanish and reconnect with resume, then checks heads, books and
duplicates against the truth the driver sends at the end.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from decimal import Decimal
from multiprocessing.connection import Connection as Pipe
from typing import Any

from bench.procs import die_with_parent

__all__ = ["SUBSCRIPTIONS", "worker_main"]

# Concrete streams only: a resume names the streams it continues.
SUBSCRIPTIONS = [
    ["book.BTCUSD", "trades.BTCUSD"],
    ["book.ETHUSD", "price.USDCUSD", "status.marketdata"],
    ["trades.BTCUSD", "trades.ETHUSD", "book.PAXGUSD"],
    ["book.LTCUSD", "trades.LTCUSD", "status.executiondata"],
    ["price.USDCUSD", "trades.PAXGUSD"],
]


def worker_main(
    index: int, count: int, base_url: str, seed: int, slow_share: float, pipe: Pipe
) -> None:
    die_with_parent()
    report = asyncio.run(_worker(index, count, base_url, seed, slow_share, pipe))
    pipe.send(report)


async def _worker(
    index: int, count: int, base: str, seed: int, slow_share: float, pipe: Pipe
) -> dict[str, Any]:
    # Imported here: the spawned child imports this module first, cheaply.
    from bench.checking_subscriber import CheckingSubscriber, as_levels, wait_all_reached
    from bench.downstream_model import Model

    rng = random.Random(f"soak-worker:{seed}:{index}")
    subs = [
        CheckingSubscriber(
            f"w{index}s{i}",
            SUBSCRIPTIONS[(i + index) % len(SUBSCRIPTIONS)],
            model=Model(keep_records=False),  # 30 minutes of records would not fit
        )
        for i in range(count)
    ]
    for sub in rng.sample(subs, int(count * slow_share)):
        # Slow all along: ~2 ms per message is below the feed's pace in bursts (snapshots,
        # resyncs), so these fall behind and catch up, or get conflated, again and again.
        sub.read_delay = 0.002
    stopped: dict[str, float] = {}  # subscriber name -> loop time it reads again
    failed_opens: list[str] = []
    stops = 0
    for start in range(0, count, 50):  # a burst of handshakes, not hundreds at once
        await asyncio.gather(*(s.open(base) for s in subs[start : start + 50]))
    loop = asyncio.get_running_loop()
    finish = loop.run_in_executor(None, pipe.recv)
    closes: dict[str, int] = {}

    async def reopen_ended() -> None:
        ended = [s for s in subs if s.reader is not None and s.reader.done()]
        for s in ended:
            closes[str(s.closed_code)] = closes.get(str(s.closed_code), 0) + 1
            s.closed_code = None
        # A failed reconnect (a handshake cut off on an overloaded machine) is retried on the
        # next tick: its reader is still the finished one. It must not end the worker.
        results = await asyncio.gather(
            *(s.open(base, resume=s.resume_positions() or None) for s in ended),
            return_exceptions=True,
        )
        failed_opens.extend(repr(r) for r in results if isinstance(r, BaseException))

    def restart_stopped(everyone: bool = False) -> None:
        now = loop.time()
        for sub in subs:
            until = stopped.get(sub.name)
            if until is not None and (everyone or now >= until):
                sub.resume_reading()
                del stopped[sub.name]

    while not finish.done():
        await asyncio.wait([finish], timeout=rng.uniform(1.0, 3.0))
        if finish.done():
            break
        restart_stopped()
        await reopen_ended()
        # Stopped subscribers: they stop reading (and answering pings) for 2-15 s, less than
        # the ping timeout; the gateway's buffers for them fill meanwhile.
        for sub in rng.sample(subs, max(1, count // 50)):
            if sub.name not in stopped and sub.ws is not None:
                sub.pause_reading()
                stopped[sub.name] = loop.time() + rng.uniform(2.0, 15.0)
                stops += 1
        churn = [s for s in rng.sample(subs, max(1, count // 20)) if s.name not in stopped]
        half = len(churn) // 2
        await asyncio.gather(*(s.close() for s in churn[:half]), *(s.abort() for s in churn[half:]))
        await asyncio.sleep(rng.uniform(0.0, 0.5))
        results = await asyncio.gather(
            *(s.open(base, resume=s.resume_positions() or None) for s in churn),
            return_exceptions=True,
        )
        failed_opens.extend(repr(r) for r in results if isinstance(r, BaseException))
    await finish
    restart_stopped(everyone=True)
    for sub in subs:
        sub.read_delay = 0.0  # the final check waits for everyone to reach the heads
    await reopen_ended()
    pipe.send("ready")
    heads, truth = await loop.run_in_executor(None, pipe.recv)

    def heads_of(sub: CheckingSubscriber) -> dict[str, int]:
        return {n: heads[n] for n in sub.streams if heads.get(n, 0) > 0}

    late: list[str] = []
    try:
        await wait_all_reached(subs, heads_of, timeout=90)
    except TimeoutError as exc:
        late.append(str(exc))
    mismatches, dups = [], []
    for sub in subs:
        for stream in sub.streams:
            if stream.startswith("book.") and stream in sub.model.bids:
                bids, asks = sub.model.book(stream)
                want = [[(Decimal(p), Decimal(a)) for p, a in side] for side in truth[stream[5:]]]
                got = [as_levels(bids, True), as_levels(asks, False)]
                if got != want:
                    mismatches.append(f"{sub.name} {stream}")
        dups += [f"{sub.name} {match}" for match in sub.model.duplicate_trades]
    answers = sum((s.model.answers for s in subs), Counter[str]())
    snapshots = sum((s.model.snapshot_reasons for s in subs), Counter[str]())
    report = {
        "records": sum(s.model.record_count for s in subs),
        "gaps": sum(len(s.model.problems) for s in subs),
        "gap_samples": [p for s in subs for p in s.model.problems][:5],
        "late": late,
        "mismatches": mismatches,
        "duplicates": dups,
        "reconnects": sum(s.opens - 1 for s in subs),
        "gateway_closes": closes,
        "resumed": answers["resumed"],
        "resume_failed": answers["resume_failed"],
        "resync_snapshots": sum(
            n for r, n in snapshots.items() if r not in ("initial", "subscribe")
        ),
        "conflations": snapshots["conflation"],
        "stops": stops,
        "failed_opens": len(failed_opens),
        "failed_open_samples": failed_opens[:3],
        "slow": sum(1 for s in subs if s.read_delay) or int(count * slow_share),
    }
    await asyncio.gather(*(s.close() for s in subs), return_exceptions=True)
    return report
