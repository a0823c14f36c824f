"""How far behind the upstream feed the gateway is, from the records of one connection (sans-IO).

The lag of a record is its receive time (the wall clock when its socket read arrived) less the
exchange time Paxos stamped on it. Only executions (``Trade``) and stablecoin prices (``Price``)
carry an exchange time; books do not, so a book feed yields no samples.

Replays are not lag. Paxos opens every executions connection by replaying each market's last
execution, which may be hours old: a record executed before the connection was established says
nothing about how far behind the feed is. Paxos trims timestamps (whole seconds at worst), so a
live trade may look up to ``TRIMMED_TIMESTAMP_SLACK_NS`` older than it is; records within that
slack of the connection's start still count.

``io.upstream_conn`` makes one ``LagSampler`` per connection, feeds it the records of each read
with the read's wall-clock time, and observes the samples in
``paxos_gateway_upstream_lag_seconds{feed}``. No clock here: times come in as arguments.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from gateway.contract.records import Price, Record, Trade

__all__ = ["TRIMMED_TIMESTAMP_SLACK_NS", "LagSampler"]

# Paxos trims timestamps to whole seconds at worst: a live record may look this much older.
TRIMMED_TIMESTAMP_SLACK_NS: Final = 1_000_000_000
# The records whose exchange time measures the feed's lag (built once, not per record).
_TIMED_RECORDS: Final = (Trade, Price)


class LagSampler:
    """One connection's lag samples: records and their receive time in, seconds out."""

    __slots__ = ("replay_before_ns",)

    def __init__(self, established_ns: int) -> None:
        """``established_ns``: wall clock (ns) when the connection's handshake completed."""
        # A record executed before this instant is a replay.
        self.replay_before_ns = established_ns - TRIMMED_TIMESTAMP_SLACK_NS

    def samples(self, records: Iterable[Record], received_ns: int) -> list[float]:
        """The lag in seconds of each live timed record among ``records`` (in their order),
        all received at wall clock ``received_ns``. May be negative when the exchange's clock
        runs ahead of this host's: reported as measured, not hidden."""
        replay_before_ns = self.replay_before_ns
        lags = []
        for record in records:
            if isinstance(record, _TIMED_RECORDS):
                exchange_ns = int(record.exchange_time)
                if exchange_ns >= replay_before_ns:
                    lags.append((received_ns - exchange_ns) / 1e9)
        return lags
