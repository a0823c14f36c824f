"""Hostile subscriber requests with the error code each must get: parsed one by one in
``tests/unit/test_protocol.py`` and sent over a real socket in ``tests/component/test_server.py``.
"""

from __future__ import annotations

# The limits the cases are written against (the server under test is configured with them).
MAX_BYTES = 1024
MAX_STREAMS = 8

# (request, expected error code)
HOSTILE: list[tuple[str | bytes, str]] = [
    ("", "malformed"),
    ("   ", "malformed"),
    ("{", "malformed"),
    ("{'op': 'ping'}", "malformed"),
    ('{"op":"ping",}', "malformed"),
    ("NaN", "malformed"),
    ('{"op":"ping","id":1e999}', "malformed"),
    (b"\xff\xfe{}", "malformed"),
    (b'{"op":"ping","id":"\xc3\x28"}', "malformed"),
    ('{"op":"ping","id":' + "[" * 400 + "]" * 400 + "}", "invalid_request"),
    ('{"op":"ping"} trailing', "malformed"),
    ("x" * (MAX_BYTES + 1), "too_large"),
    ('{"op":"ping","id":"' + "a" * MAX_BYTES + '"}', "too_large"),
    ("[]", "invalid_request"),
    ('"subscribe"', "invalid_request"),
    ("42", "invalid_request"),
    ("null", "invalid_request"),
    ("{}", "invalid_request"),
    ('{"op":null}', "invalid_request"),
    ('{"op":7}', "invalid_request"),
    ('{"op":["subscribe"]}', "invalid_request"),
    ('{"op":"SUBSCRIBE","streams":["book.BTCUSD"]}', "unknown_op"),
    ('{"op":"publish","streams":["book.BTCUSD"]}', "unknown_op"),
    ('{"op":"__proto__"}', "unknown_op"),
    ('{"op":"subscribe"}', "invalid_request"),
    ('{"op":"subscribe","streams":[]}', "invalid_request"),
    ('{"op":"subscribe","streams":"book.BTCUSD"}', "invalid_request"),
    ('{"op":"subscribe","streams":[1,2]}', "invalid_request"),
    ('{"op":"subscribe","streams":[null]}', "invalid_request"),
    ('{"op":"subscribe","streams":[""]}', "invalid_request"),
    ('{"op":"subscribe","streams":["book.BTCUSD"],"extra":1}', "invalid_request"),
    ('{"op":"subscribe","streams":["book.BTCUSD"],"id":{"a":1}}', "invalid_request"),
    ('{"op":"subscribe","streams":["book.BTCUSD"],"id":true}', "invalid_request"),
    ('{"op":"subscribe","streams":["book.BTCUSD"],"id":9007199254740993}', "invalid_request"),
    ('{"op":"ping","id":"' + "x" * 65 + '"}', "invalid_request"),
    ('{"op":"subscribe","streams":["book.BTCUSD"],"resume":[]}', "invalid_request"),
    (
        '{"op":"subscribe","streams":["book.BTCUSD"],"resume":{"book.BTCUSD":{"seq":1}}}',
        "bad_resume",
    ),
    (
        '{"op":"subscribe","streams":["book.BTCUSD"],"resume":{"book.BTCUSD":'
        '{"epoch":1,"seq":-1}}}',
        "bad_resume",
    ),
    (
        '{"op":"subscribe","streams":["book.BTCUSD"],"resume":{"book.BTCUSD":'
        '{"epoch":"1e18","seq":1}}}',
        "bad_resume",
    ),
    (
        '{"op":"subscribe","streams":["book.BTCUSD"],"resume":{"book.BTCUSD":'
        '{"epoch":1.7e18,"seq":1}}}',
        "bad_resume",
    ),
    (
        '{"op":"subscribe","streams":["book.BTCUSD"],"resume":{"book.BTCUSD":'
        '{"epoch":"-5","seq":1}}}',
        "bad_resume",
    ),
    ('{"op":"subscribe","streams":["BTCUSD"]}', "bad_stream"),
    ('{"op":"subscribe","streams":["orders.BTCUSD"]}', "bad_stream"),
    ('{"op":"subscribe","streams":["book.btcusd"]}', "bad_stream"),
    ('{"op":"subscribe","streams":["book.BTC*"]}', "bad_stream"),
    ('{"op":"subscribe","streams":["book."]}', "bad_stream"),
    ('{"op":"subscribe","streams":["book.BTC.USD"]}', "bad_stream"),
    ('{"op":"subscribe","streams":["book.B\\u0000TC"]}', "bad_stream"),
    ('{"op":"subscribe","streams":["status.a.b"]}', "bad_stream"),
    ('{"op":"subscribe","streams":["**"]}', "bad_stream"),
    ('{"op":"subscribe","streams":["book.' + "A" * 130 + '"]}', "invalid_request"),
    ('{"op":"unsubscribe","streams":["book..BTCUSD"]}', "bad_stream"),
    (
        '{"op":"subscribe","streams":[' + ",".join(f'"book.M{i:02d}"' for i in range(9)) + "]}",
        "too_many_subscriptions",
    ),
    (
        '{"op":"subscribe","streams":["book.BTCUSD"],"resume":{"book.ETHUSD":{"epoch":1,"seq":1}}}',
        "bad_resume",
    ),
    (
        '{"op":"subscribe","streams":["book.*"],"resume":{"book.*":{"epoch":1,"seq":1}}}',
        "bad_resume",
    ),
    (
        '{"op":"subscribe","streams":["book.*"],"resume":{"nonsense":{"epoch":1,"seq":1}}}',
        "bad_resume",
    ),
]
