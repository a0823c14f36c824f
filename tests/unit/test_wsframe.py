"""``fanout.wsframe``: the server frames the hub builds once and every subscriber shares, checked
against wsproto as the oracle at every length boundary of RFC 6455."""

from __future__ import annotations

import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol

from gateway.fanout.wsframe import OP_BINARY, OP_TEXT, build_frame, frame_header, header_length

BOUNDARIES = [0, 1, 124, 125, 126, 127, 65534, 65535, 65536, 65537, 200_000]


# -- frames ------------------------------------------------------------------------------------


def _wsproto_frame(payload: bytes | str) -> bytes:
    return bytes(FrameProtocol(client=False, extensions=[]).send_data(payload, fin=True))


@pytest.mark.parametrize("size", BOUNDARIES)
def test_frames_match_wsproto_at_length_boundaries(size: int) -> None:
    data = bytes(i % 251 for i in range(size))
    assert build_frame(data, OP_BINARY) == _wsproto_frame(data)
    text = ("é" * size)[: max(size // 2, 0)] + "x" * (size - 2 * (size // 2))
    encoded = text.encode()
    assert build_frame(encoded, OP_TEXT) == _wsproto_frame(text)


@given(st.binary(max_size=70_000), st.booleans())
@example(b"x" * 125, True)
@example(b"x" * 126, False)
@example(b"x" * 65535, True)
@example(b"x" * 65536, False)
def test_frames_match_wsproto(payload: bytes, binary: bool) -> None:
    if binary:
        assert build_frame(payload, OP_BINARY) == _wsproto_frame(payload)
    else:
        text = payload.decode("latin-1")  # any code points, multi-byte in UTF-8 above 0x7F
        assert build_frame(text.encode(), OP_TEXT) == _wsproto_frame(text)


@given(st.integers(min_value=0, max_value=2**40))
def test_header_length_field(length: int) -> None:
    header = frame_header(OP_TEXT, length)
    assert header[0] == 0x81
    if length < 126:
        assert header[1:] == bytes((length,))
    elif length < 65536:
        assert header[1] == 126 and struct.unpack("!H", header[2:])[0] == length
    else:
        assert header[1] == 127 and struct.unpack("!Q", header[2:])[0] == length


@pytest.mark.parametrize("size", BOUNDARIES)
def test_header_length_reads_back_the_header(size: int) -> None:
    frame = build_frame(b"x" * size, OP_BINARY)
    assert frame[header_length(frame) :] == b"x" * size
