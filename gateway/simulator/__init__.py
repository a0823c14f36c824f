"""A faithful local Paxos: the public WebSocket feeds and REST market data, driven by one
seeded market model (docs/simulator.md).

It shares no decode/encode code with the gateway on purpose (a bug cannot cancel itself
out): it builds its own wire text and knows the true state at every moment.

Modules: ``markets`` (specs, ticks), ``model`` (sans-IO random walk, ``truth``, the execution tape,
market status, wire text), ``events`` (``LevelUpdate``, ``Execution``, ``PriceTick`` with their wire
text), ``market_book`` (one market's true book and its book-level moves), ``stablecoins`` (the index
price walk, a random source of its own), ``formatting`` (numbers, timestamps, JSON text), ``faults``
(``FaultConfig``, bad frames), ``stream`` (stallable byte stream), ``framing`` (batched data
frames), ``server`` (``Simulator``: serving, and the API below), ``generator`` (the pace: model
steps, stablecoin ticks, pause, backpressure), ``registry`` (which connections get which events),
``accept`` (handshake → route → subscription, refusals, connect-rate delay), ``connection``
(``Connection``: one client's queue, sender and per-message faults), ``rest`` (sans-IO REST
answers), ``ratelimit`` (token bucket per IP), ``rest_server`` (h11 edge of the REST API),
``config`` (``SimulatorConfig``, ``RestConfig``), ``command`` (CLI ``simulate``).

Paths served (``/executiondata[/M]``, ``/marketdata[/M]``, ``/marketdata/stablecoin[/M]``):
book paths send SNAPSHOT(s) first (one per market on ``/marketdata``), then UPDATEs; execution
paths replay the last execution (one per market) then stream new ones; stablecoin paths send
the current price, then one every ``stablecoin_interval``. Pings are answered (unless stalled).

REST, on a port of its own (``sim.rest_url`` = ``http://127.0.0.1:PORT/v2``): ``GET
/markets``, ``/markets/{m}/recent-executions`` (last 2,000, newest first), ``/order-book``,
``/ticker``; numbers padded, errors as Paxos problem documents, 10 requests/s per IP (429 and
``Retry-After``).

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
        sim.executions("BTCUSD")                      # every Execution, in order, outages too
        sim.resume()

API of ``Simulator`` (all synchronous methods act at once, between trio checkpoints):

- ``serve(task_status)``: run until cancelled; ``nursery.start`` gives the URL (``sim.url``).
- ``truth(market) -> (bids, asks)``; ``markets``, ``stablecoins``; ``model`` (``MarketModel``).
- ``executions(market=None)``: the ground truth, every execution generated (connected or not),
  oldest first (``sent_executions`` is the same list); ``sent_prices: list[PriceTick]``,
  ``events_generated`` (UPDATE + execution messages), ``finished`` (``max_events`` reached).
- REST: ``rest_url``, ``rest`` (``RestConfig``, mutable: rate limit, window, order),
  ``rest_responses`` (Counter by status).
- Markets come and go: ``halt(m)`` (listed UNAVAILABLE, frozen), ``delist(m)`` (unlisted,
  frozen, 404), ``list_market(name | MarketSpec)`` (reopen, or list a new one).
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
  ``connect_interval`` (Paxos's one-new-connection-per-second, delayed not refused),
  ``rest_delay``, ``rest_error_probability`` / ``rest_error_status`` (slow REST, 5xx).
"""

from gateway.simulator.config import RestConfig, SimulatorConfig
from gateway.simulator.connection import Connection
from gateway.simulator.events import Execution, LevelUpdate, PriceTick
from gateway.simulator.faults import BAD_FRAME_KINDS, BadFrameKind, FaultConfig
from gateway.simulator.markets import DEFAULT_MARKETS, DEFAULT_STABLECOINS, MarketSpec
from gateway.simulator.model import MarketModel
from gateway.simulator.server import Simulator

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
    "RestConfig",
    "Simulator",
    "SimulatorConfig",
]
