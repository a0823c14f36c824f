"""Sans-IO retry policy, shared by the two sides of the gateway that reconnect: the upstream
feed task (``io.upstream``, to Paxos) and the subscriber client (``client.driver``, to a
gateway).

``backoff`` (``Backoff``: exponential delays with full jitter, floored and capped, and the rules
for when a streak of failures resets). Durations and the random source come in as arguments:
no clock, no event loop.

It is a package of its own because both users need it and neither may depend on the other's
side: under ``io`` it dragged the client library toward the server's I/O package, and under
``client`` the server would import the client library. It is not ``ingest`` either: it does not
turn bytes into records.

May import: the standard library only. ``tests/unit/test_sans_io_boundary.py`` holds it.
"""
