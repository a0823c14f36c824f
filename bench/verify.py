"""What a bench subscriber checks about the bytes it counts: frame boundaries and seq order.

A subscriber used to count records by scanning its raw TCP stream for ``"seq":``. That counts
whatever looks like a record, torn or doubled frames included. ``FrameChecker`` walks the
stream frame by frame instead (RFC 6455 server frames: unmasked, final, text or binary; a close
frame ends the stream) and, for every frame that is a record (its JSON has
``"stream":"<name>","seq":<n>``, as the gateway's records and the peers' relayed copies have),
checks that ``n`` is exactly one more than the last ``seq`` of that stream on this connection.
Responses (``hello``, ``subscribed``) are frames too, but not records, so they are not counted.
The gateway answers a subscribe with each stream's head ``h`` and then sends its initial state
(the last value and the latest status: records with ``seq <= h``, in increasing order, not
contiguous); live records then start at exactly ``h + 1``.

Any violation (a masked, fragmented or reserved-bit frame, a control frame other than close, a
record out of order or missing) is kept in ``violations``; the harness fails the benchmark on
the first one it is shown.

Cost: one header decode and one anchored regular expression search per frame, no copy of the
payload (``re.search`` with ``pos``/``endpos`` on the read buffer). In latency mode a second
search takes the ``exchange_time`` stamp of the same frame.
"""

from __future__ import annotations

import re
from array import array
from typing import Final

RECORD: Final = re.compile(rb'"stream":"([^"]*)","seq":(\d+)')
# The gateway's answer to a subscribe: each stream's head, after which live records follow.
SUBSCRIBED: Final = b'{"type":"subscribed"'
HEAD: Final = re.compile(rb'"stream":"([^"]*)","epoch":"[^"]*","seq":(\d+)')
STAMP: Final = re.compile(rb'"exchange_time":"(\d{19})"')
MAX_VIOLATIONS: Final = 5
_TEXT: Final = 0x81
_BINARY: Final = 0x82
_CLOSE: Final = 0x88


class FrameChecker:
    """One connection's stream of server frames; ``feed`` every chunk received, in order."""

    __slots__ = ("_catchup_seen", "carry", "catchup", "closed", "count", "last", "violations")

    def __init__(self) -> None:
        self.carry = b""  # an incomplete frame from the previous chunk
        self.count = 0  # records seen
        self.last: dict[bytes, int] = {}  # stream -> last seq
        self.catchup: dict[bytes, int] = {}  # stream -> head when subscribed, until live
        self._catchup_seen: dict[bytes, int] = {}
        self.violations: list[str] = []
        self.closed = False

    def _violation(self, text: str) -> None:
        if len(self.violations) < MAX_VIOLATIONS:
            self.violations.append(text)

    def feed(
        self, chunk: bytes | bytearray, now_ns: int = 0, samples: array[int] | None = None
    ) -> int:
        """Check the frames completed by ``chunk``; returns how many records they held. With
        ``samples``, append ``now_ns - exchange_time`` of every record to it."""
        buf = self.carry + chunk if self.carry else chunk
        end = len(buf)
        pos = 0
        records = 0
        last = self.last
        search = RECORD.search
        while end - pos >= 2:
            b0 = buf[pos]
            n = buf[pos + 1]
            head = pos + 2
            if n >= 126:
                if n == 126:
                    if end - head < 2:
                        break
                    n = (buf[head] << 8) | buf[head + 1]
                    head += 2
                elif n == 127:
                    if end - head < 8:
                        break
                    n = int.from_bytes(buf[head : head + 8], "big")
                    head += 8
                else:  # the mask bit: a server must not mask
                    self._violation(f"masked frame at byte {pos}")
                    self.closed = True
                    break
            stop = head + n
            if stop > end:
                break
            pos = stop
            if b0 != _TEXT and b0 != _BINARY:
                if b0 == _CLOSE:
                    self.closed = True
                    break
                self._violation(f"unexpected frame header byte {b0:#04x}")
                continue
            m = search(buf, head, stop)
            if m is None:
                if buf.startswith(SUBSCRIBED, head):
                    self._subscribed(buf, head, stop)
                continue  # a response, not a record
            stream, seq = m.group(1), int(m.group(2))
            previous = last.get(stream)
            records += 1
            if self.catchup:
                at = self.catchup.get(stream)
                if at is not None:
                    if seq <= at:  # initial state, before the live records
                        if seq <= self.catchup_last(stream, seq):
                            self._violation(f"{stream.decode()}: catch-up seq {seq} out of order")
                        continue
                    del self.catchup[stream]
            if previous is not None and seq != previous + 1:
                self._violation(f"{stream.decode()}: seq {seq} after {previous}")
            last[stream] = seq
            if samples is not None:
                s = STAMP.search(buf, head, stop)
                if s is not None:
                    samples.append(now_ns - int(s.group(1)))
        self.carry = bytes(buf[pos:]) if pos < end else b""
        self.count += records
        return records

    def _subscribed(self, buf: bytes | bytearray, start: int, stop: int) -> None:
        for m in HEAD.finditer(buf, start, stop):
            stream, head = m.group(1), int(m.group(2))
            self.last[stream] = head
            self.catchup[stream] = head
            self._catchup_seen[stream] = 0

    def catchup_last(self, stream: bytes, seq: int) -> int:
        """The previous catch-up record's seq of ``stream`` (0: none), now ``seq``."""
        previous = self._catchup_seen.get(stream, 0)
        self._catchup_seen[stream] = seq
        return previous
