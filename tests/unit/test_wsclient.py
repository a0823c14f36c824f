"""The upstream's sans-IO WebSocket client (``gateway.ingest.wsclient``), against wsproto as the
reference: wsproto's server side builds the frames and handshakes, wsproto's client side says
what a conforming client makes of them, and hypothesis cuts the byte stream anywhere."""

from __future__ import annotations

import itertools
import struct

import pytest
import wsproto
import wsproto.events as ev
from hypothesis import given
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode

from gateway.ingest.ws_handshake import Handshake, HandshakeError, Rejected, accept_token
from gateway.ingest.wsclient import (
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_PROTOCOL_ERROR,
    ClientProtocol,
    Closing,
    client_frame,
)

LIMIT = 1 << 20


def server_frames(*messages: str | bytes) -> bytes:
    proto = FrameProtocol(client=False, extensions=[])
    return b"".join(proto.send_data(m, fin=True) for m in messages)


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    """A raw unmasked server frame, including the ones wsproto refuses to build."""
    b0 = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    if n < 126:
        return bytes((b0, n)) + payload
    if n < 65536:
        return bytes((b0, 126)) + struct.pack(">H", n) + payload
    return bytes((b0, 127)) + struct.pack(">Q", n) + payload


def unmask(data: bytes) -> tuple[int, bytes]:
    """Opcode and payload of one masked client frame (what the server would read)."""
    assert data[1] & 0x80, "client frames must be masked"
    n = data[1] & 0x7F
    key, body = data[2:6], data[6 : 6 + n]
    assert len(data) == 6 + n
    return data[0] & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(body))


# -- frames ---------------------------------------------------------------------------------------


def test_short_and_long_text_and_binary_messages() -> None:
    messages: list[str | bytes] = ["a", "é" * 70, "x" * 200, b"\x00\xff", "y" * 70_000]
    proto = ClientProtocol(LIMIT)
    got = proto.receive(server_frames(*messages))
    assert got == [m.encode() if isinstance(m, str) else m for m in messages]
    assert proto.closing is None and not proto.outgoing


@given(
    messages=st.lists(
        st.one_of(st.text(max_size=300), st.binary(max_size=300)), min_size=1, max_size=20
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_any_split_of_the_stream_gives_the_same_messages(
    messages: list[str | bytes], cuts: list[int]
) -> None:
    data = server_frames(*messages)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    proto = ClientProtocol(LIMIT)
    got: list[bytes] = []
    for a, b in itertools.pairwise(points):
        got += proto.receive(data[a:b])
    assert got == [m.encode() if isinstance(m, str) else m for m in messages]
    assert proto.closing is None


@given(st.binary(max_size=400), st.integers(min_value=1, max_value=64))
def test_garbage_never_raises_and_agrees_with_wsproto_on_failing(data: bytes, step: int) -> None:
    proto = ClientProtocol(LIMIT)
    for i in range(0, len(data), step):
        proto.receive(data[i : i + step])
    # wsproto, as a client, on the same bytes: a protocol violation shows as a close event
    # with a failure code, or as an exception.
    reference = FrameProtocol(client=True, extensions=[])
    reference.receive_bytes(data)
    failed = False
    try:
        for frame_ in reference.received_frames():
            if frame_.opcode is Opcode.CLOSE:
                break
    except Exception:
        failed = True
    # wsproto also judges the start of a frame's payload before the rest arrives; this parser
    # judges whole frames, so the two must agree once no frame is left half-received.
    if failed and (proto.pending == 0 or proto.closing is not None):
        assert proto.closing is not None and not proto.closing.by_peer


def test_fragmented_message_with_a_ping_in_between() -> None:
    data = (
        frame(0x1, b"hel", fin=False)
        + frame(0x9, b"are you there")
        + frame(0x0, b"lo ", fin=False)
        + frame(0x0, "wörld".encode())
    )
    proto = ClientProtocol(LIMIT)
    assert proto.receive(data) == ["hello wörld".encode()]
    assert unmask(bytes(proto.outgoing)) == (0xA, b"are you there")


def test_pongs_are_collected_for_the_pinger() -> None:
    proto = ClientProtocol(LIMIT)
    assert proto.receive(frame(0xA, b"12345678") + frame(0x1, b"{}")) == [b"{}"]
    assert proto.pongs == [b"12345678"]


def test_close_from_the_server_is_answered_with_its_code() -> None:
    proto = ClientProtocol(LIMIT)
    got = proto.receive(frame(0x1, b"last") + frame(0x8, struct.pack(">H", 1001) + b"bye"))
    assert got == [b"last"]
    assert proto.closing == Closing(1001, "bye", by_peer=True)
    assert unmask(bytes(proto.outgoing)) == (0x8, struct.pack(">H", 1001))
    assert proto.receive(frame(0x1, b"after close")) == []  # nothing is read after it


def test_empty_close_frame_means_no_status() -> None:
    proto = ClientProtocol(LIMIT)
    proto.receive(frame(0x8, b""))
    assert proto.closing == Closing(1005, "", by_peer=True)
    assert unmask(bytes(proto.outgoing)) == (0x8, b"")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (bytes((0x81, 0x85)) + b"\x00" * 4 + b"hello", CLOSE_PROTOCOL_ERROR),  # masked
        (frame(0x1, b"x", rsv=0x40), CLOSE_PROTOCOL_ERROR),  # RSV1 without an extension
        (frame(0x3, b"x"), CLOSE_PROTOCOL_ERROR),  # reserved data opcode
        (frame(0xB, b"x"), CLOSE_PROTOCOL_ERROR),  # reserved control opcode
        (frame(0x9, b"x", fin=False), CLOSE_PROTOCOL_ERROR),  # fragmented ping
        (frame(0x9, b"x" * 126), CLOSE_PROTOCOL_ERROR),  # oversized ping
        (frame(0x0, b"x"), CLOSE_PROTOCOL_ERROR),  # continuation of nothing
        (frame(0x1, b"a", fin=False) + frame(0x1, b"b"), CLOSE_PROTOCOL_ERROR),  # interleaved
        (frame(0x8, b"\x03"), CLOSE_PROTOCOL_ERROR),  # one-byte close payload
        (frame(0x8, struct.pack(">H", 1006)), CLOSE_PROTOCOL_ERROR),  # reserved close code
        (frame(0x8, struct.pack(">H", 1000) + b"\xff"), 1007),  # close reason not UTF-8
        (frame(0x1, b"\xc3\x28"), 1007),  # text not UTF-8
        (frame(0x1, b"a", fin=False) + frame(0x0, b"\xff"), 1007),  # fragmented, not UTF-8
        (bytes((0x82, 127)) + struct.pack(">Q", 1 << 63), CLOSE_PROTOCOL_ERROR),  # length MSB
    ],
)
def test_protocol_violations_close_with_the_right_code(data: bytes, code: int) -> None:
    proto = ClientProtocol(LIMIT)
    assert proto.receive(data + frame(0x1, b"never read")) == []
    assert proto.closing is not None
    assert proto.closing.code == code and not proto.closing.by_peer
    opcode, payload = unmask(bytes(proto.outgoing))
    assert opcode == 0x8 and struct.unpack(">H", payload[:2])[0] == code


def test_too_big_is_decided_from_the_header_before_the_payload_arrives() -> None:
    proto = ClientProtocol(4096)
    header = bytes((0x81, 127)) + struct.pack(">Q", 10**9)
    assert proto.receive(header) == []  # a gigabyte announced, a few bytes received
    assert proto.closing is not None and proto.closing.code == CLOSE_MESSAGE_TOO_BIG
    # The same for a message whose fragments add up beyond the limit.
    proto = ClientProtocol(4096)
    proto.receive(frame(0x1, b"x" * 3000, fin=False) + frame(0x0, b"x" * 3000)[:4])
    assert proto.closing is not None and proto.closing.code == CLOSE_MESSAGE_TOO_BIG
    # A 16-bit length too: 60,000 bytes announced against a 4,096-byte limit.
    proto = ClientProtocol(4096)
    assert proto.receive(bytes((0x81, 126)) + struct.pack(">H", 60_000) + b"x" * 10) == []
    assert proto.closing is not None and proto.closing.code == CLOSE_MESSAGE_TOO_BIG
    # At the limit exactly: fine.
    proto = ClientProtocol(4096)
    assert proto.receive(frame(0x2, b"x" * 4096)) == [b"x" * 4096]


def test_a_big_message_in_small_reads_is_assembled_in_linear_time() -> None:
    data = server_frames("z" * 2_000_000)
    proto = ClientProtocol(4_000_000)
    got: list[bytes] = []
    for i in range(0, len(data), 1000):
        got += proto.receive(data[i : i + 1000])
    assert got == [b"z" * 2_000_000]


def test_client_frames_are_masked_and_read_back_by_wsproto() -> None:
    server = FrameProtocol(client=False, extensions=[])
    server.receive_bytes(client_frame(0x9, b"ping!") + client_frame(0x8, b"\x03\xe8bye"))
    frames = list(server.received_frames())
    assert [(f.opcode, f.payload) for f in frames] == [
        (Opcode.PING, b"ping!"),
        (Opcode.CLOSE, (1000, "bye")),
    ]
    with pytest.raises(ValueError):
        client_frame(0x9, b"x" * 126)


# -- the opening handshake --------------------------------------------------------------------


def wsproto_server(request: bytes) -> wsproto.WSConnection:
    server = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    server.receive_data(request)
    events = list(server.events())
    assert isinstance(events[0], ev.Request)
    assert events[0].target == "/marketdata/BTCUSD?x=1"
    assert events[0].host == "example.com:8443"
    return server


@given(st.integers(min_value=1, max_value=50))
def test_handshake_accepted_with_frames_right_behind_it(step: int) -> None:
    hs = Handshake("example.com:8443", "/marketdata/BTCUSD?x=1")
    server = wsproto_server(hs.request)
    answer = server.send(ev.AcceptConnection()) + server_frames("snapshot", "update")
    done = False
    for i in range(0, len(answer), step):
        done = hs.receive(answer[i : i + step])
        if done:
            rest = answer[i + step :]
            break
    assert done and hs.rejected is None
    proto = ClientProtocol(LIMIT)
    assert proto.receive(hs.leftover + rest) == [b"snapshot", b"update"]


def test_handshake_rejected_with_status_and_body() -> None:
    hs = Handshake("example.com:8443", "/marketdata/BTCUSD?x=1")
    server = wsproto_server(hs.request)
    answer = server.send(
        ev.RejectConnection(status_code=404, headers=[(b"content-length", b"9")], has_body=True)
    ) + server.send(ev.RejectData(data=b"Not Found"))
    assert hs.receive(answer)
    assert hs.rejected == Rejected(404, b"Not Found")


def test_handshake_rejected_with_a_body_until_eof() -> None:
    hs = Handshake("h", "/")
    assert not hs.receive(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\nbusy")
    assert hs.receive(b"")
    assert hs.rejected == Rejected(503, b"busy")


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: d3Jvbmc=\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n",
        b"not http at all\r\n\r\n",
    ],
)
def test_handshake_errors(answer: bytes) -> None:
    hs = Handshake("h", "/")
    with pytest.raises(HandshakeError):
        hs.receive(answer)


def test_handshake_refuses_an_extension_it_never_offered() -> None:
    hs = Handshake("h", "/")
    token = accept_token(hs.key)
    answer = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + token + b"\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
    )
    with pytest.raises(HandshakeError, match="extension"):
        hs.receive(answer)


def test_eof_during_the_handshake_is_an_error() -> None:
    hs = Handshake("h", "/")
    assert not hs.receive(b"HTTP/1.1 101 Switching")
    with pytest.raises(HandshakeError):
        hs.receive(b"")
