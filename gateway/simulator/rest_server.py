"""The REST API's trio edge: HTTP/1.1 over h11, the rate limit and the REST faults.

One task per TCP connection (in the simulator's nursery, through ``trio.serve_listeners``)
reads requests with h11, keeps the connection alive between them as httpx expects, and
answers each with ``rest.respond``. In order, per request:

1. the rate limit takes a token from the client IP's bucket, at arrival (``ratelimit``);
2. ``faults.rest_delay`` passes (the trio clock: a ``MockClock`` test need not wait);
3. a refused request gets its 429, an unlucky one ``faults.rest_error_status``, the rest
   the model's answer *as of now*, after the delay, like a slow server's.

Whatever a client sends, the answer is an HTTP status, never a crash: malformed HTTP gets
h11's 4xx (400, 431 for a head over 16 KiB) and the connection closes; a body over 64 KiB
gets 413; an idle connection closes after 30 s of silence.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable

import h11
import trio

from gateway.simulator import rest
from gateway.simulator.config import RestConfig
from gateway.simulator.faults import FaultConfig
from gateway.simulator.model import MarketModel
from gateway.simulator.ratelimit import RateLimiter

log = logging.getLogger("gateway.simulator")

_MAX_HEAD = 16 * 1024
_MAX_BODY = 64 * 1024
_IDLE_TIMEOUT = 30.0
_RECEIVE = 8192  # below _MAX_HEAD: a head over the limit is never whole in one read
_SERVER = "paxos-gateway-simulator"
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 1024 * 1024


class _BodyTooLarge(Exception):
    pass


class RestServer:
    """Serves ``model`` over HTTP; ``settings`` and ``faults`` are read per request."""

    def __init__(
        self,
        model: MarketModel,
        settings: RestConfig,
        faults: FaultConfig,
        clock_ns: Callable[[], int],
        seed: int,
    ) -> None:
        self.model = model
        self.settings = settings
        self.faults = faults
        self.responses: Counter[int] = Counter()
        """Responses sent, by status (200, 404, 429, 503, ...)."""
        self._clock_ns = clock_ns
        self._limiter = RateLimiter()
        self._rng = random.Random(f"paxos-sim-rest:{seed}")

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one connection until the client closes it, goes idle or errs."""
        client = _client_address(stream)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        try:
            while True:
                try:
                    request = await _read_request(conn, stream)
                except h11.RemoteProtocolError as exc:
                    status = exc.error_status_hint
                    await self._send(conn, stream, rest.problem(status, str(exc), ""))
                    await _linger(stream)
                    return
                except _BodyTooLarge:
                    detail = f"request body over {_MAX_BODY} bytes"
                    await self._send(conn, stream, rest.problem(413, detail, ""))
                    await _linger(stream)
                    return
                if request is None:
                    return
                response = await self._answer(client, request)
                await self._send(conn, stream, response, body=request.method != b"HEAD")
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return  # "Connection: close" from either side, or HTTP/1.0
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away mid-answer: its problem, not the server's
        finally:
            await trio.aclose_forcefully(stream)

    async def _answer(self, client: str, request: h11.Request) -> rest.Response:
        target = request.target.decode("ascii", "replace")
        method = request.method.decode("ascii", "replace")
        wait = self._limiter.admit(client, trio.current_time(), self.settings)
        faults = self.faults
        if faults.rest_delay > 0:
            await trio.sleep(faults.rest_delay)
        if wait is not None:
            return rest.too_many_requests(target, wait)
        if faults.rest_error_probability and self._rng.random() < faults.rest_error_probability:
            status = faults.rest_error_status
            return rest.problem(status, "simulated server error", target)
        return rest.respond(
            self.model, method, target, now_ns=self._clock_ns(), settings=self.settings
        )

    async def _send(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        response: rest.Response,
        *,
        body: bool = True,
    ) -> None:
        """Write ``response``; without ``body`` (a HEAD request) only its head, whose
        Content-Length still says what a GET would have got."""
        self.responses[response.status] += 1
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Server", _SERVER),
            *response.headers,
        ]
        if conn.their_state is h11.ERROR or response.status in (413, 431):
            headers.append(("Connection", "close"))
        try:
            reason = rest.phrase(response.status).encode()
            data = (
                conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
                or b""
            )
            if body:
                data += conn.send(h11.Data(data=response.body)) or b""
            data += conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            # e.g. a request so broken that h11 cannot even frame a response to it
            log.info("simulator: REST: no response possible, closing the connection")
            return
        await stream.send_all(data)


async def _read_request(conn: h11.Connection, stream: trio.SocketStream) -> h11.Request | None:
    """The next whole request (its body read and dropped), or None when the client is done."""
    request: h11.Request | None = None
    body = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = b""
            with trio.move_on_after(_IDLE_TIMEOUT):
                data = await stream.receive_some(_RECEIVE)
            if not data and request is None and conn.their_state is h11.IDLE:
                return None  # closed or idle between requests: a normal end
            conn.receive_data(data)  # b"" mid-request: h11 raises RemoteProtocolError
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += len(event.data)
            if body > _MAX_BODY:
                raise _BodyTooLarge
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            return request
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def _linger(stream: trio.SocketStream) -> None:
    """Read and drop what the client still sends before closing: closing a socket with
    unread data resets it, and the reset can destroy the 4xx answer in the client's buffer
    before it is read (the "lingering close" of HTTP servers). Bounded in bytes and time.

    ``gateway/io/ops_http.py`` has its twin; the simulator imports nothing of the gateway
    (docs/architecture.md), so it keeps its own."""
    with trio.move_on_after(_LINGER_SECONDS):
        await stream.send_eof()
        received = 0
        while received < _LINGER_BYTES:
            data = await stream.receive_some(_RECEIVE)
            if not data:
                return
            received += len(data)


def _client_address(stream: trio.SocketStream) -> str:
    try:
        peer = stream.socket.getpeername()
    except OSError:
        return "?"
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)
