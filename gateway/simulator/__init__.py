"""A faithful local Paxos: the public WebSocket feeds, driven by a seeded market model.

It shares no decode/encode code with the gateway on purpose (a bug cannot cancel itself
out): it builds its own wire text and knows the true state at every moment.

Modules: ``markets`` (specs, ticks), ``model`` (sans-IO random walk, ``truth``, wire text),
``formatting`` (numbers, timestamps, JSON text), ``faults`` (``FaultConfig``, bad frames),
``stream`` (stallable byte stream), ``framing`` (batched data frames), ``server``
(``Simulator``), ``command`` (CLI ``simulate``).

Paths served (``/executiondata[/M]``, ``/marketdata[/M]``, ``/marketdata/stablecoin[/M]``):
book paths send SNAPSHOT(s) first (one per market on ``/marketdata``), then UPDATEs; execution
paths replay the last execution (one per market) then stream new ones; stablecoin paths send
the current price, then one every ``stablecoin_interval``. Pings are answered (unless stalled).

Usage::

    sim = Simulator(SimulatorConfig(seed=1, markets=["BTCUSD", "ETHUSD"], levels=200,
                                    rate=2000.0, max_events=50_000,
                                    faults=FaultConfig(snapshot_split=50)))
    async with trio.open_nursery() as nursery:
        url = await nursery.start(sim.serve)          # "ws://127.0.0.1:PORT"
        await sim.wait_for_connections(1, "/marketdata")
        await sim.wait_for_events(sim.events_generated + 1000)
        sim.pause(); await sim.wait_idle()            # quiescent: clients have everything
        bids, asks = sim.truth("BTCUSD")              # [(price, amount)] Decimals, best first
        sim.sent_executions                           # every Execution, in order (match_number...)
        sim.resume()

API of ``Simulator`` (all synchronous methods act at once, between trio checkpoints):

- ``serve(task_status)``: run until cancelled; ``nursery.start`` gives the URL (``sim.url``).
- ``truth(market) -> (bids, asks)``; ``markets``, ``stablecoins``; ``model`` (``MarketModel``).
- ``sent_executions: list[Execution]``, ``sent_prices: list[PriceTick]``, ``events_generated``
  (UPDATE + execution messages), ``finished`` (trio.Event: ``max_events`` reached).
- ``pause()``, ``resume()``, ``paused``; ``await wait_for_events(total)``,
  ``await wait_for_connections(n, path=None)``, ``await wait_idle()``.
- ``connections: list[Connection]`` (``id, path, feed, market, messages_sent, bad_frames_sent,
  queued, stalled, streaming, drop_reason``; ``drop(graceful=False)``, ``stall()``, ``unstall()``).
- Faults on command: ``drop_all(path=None, graceful=False)``, ``stall(path=None)``,
  ``unstall(path=None)`` (each returns how many connections), ``inject_crossed(market)``
  (a crossing UPDATE that is not in the truth), ``refuse_upgrades(status | None)``.
- Faults at random or by option: ``sim.faults`` (``FaultConfig``, mutable while running):
  drop/stall/bad-frame/extra-field probabilities per message, ``unknown_market``
  (``{"error":"Not Found"}`` or HTTP 404/503), ``final_snapshot`` style, ``snapshot_split``,
  ``connect_interval`` (Paxos's one-new-connection-per-second, delayed not refused).
"""

from gateway.simulator.config import SimulatorConfig
from gateway.simulator.faults import BAD_FRAME_KINDS, BadFrameKind, FaultConfig
from gateway.simulator.markets import DEFAULT_MARKETS, DEFAULT_STABLECOINS, MarketSpec
from gateway.simulator.model import Execution, LevelUpdate, MarketModel, PriceTick
from gateway.simulator.server import Connection, Simulator

__all__ = [
    "BAD_FRAME_KINDS",
    "DEFAULT_MARKETS",
    "DEFAULT_STABLECOINS",
    "BadFrameKind",
    "Connection",
    "Execution",
    "FaultConfig",
    "LevelUpdate",
    "MarketModel",
    "MarketSpec",
    "PriceTick",
    "Simulator",
    "SimulatorConfig",
]
