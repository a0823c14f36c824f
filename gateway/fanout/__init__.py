"""Fan-out (sans-IO): sequenced records in, framed bytes per subscriber out.

The ``Hub`` keeps every stream's history and last values, the subscriptions (exact names and
patterns), each subscriber's bounded buffer of pre-built frames, and the policies around them:
late-join snapshots, resume from ``(epoch, seq)``, conflation or disconnect of a slow
subscriber. Each record is encoded and framed once per encoding in use (``OutFrame``) and the
same bytes are shared by every subscriber's buffer; the I/O side (``io.delivery``,
``io.server``) only drains those buffers onto sockets.

Modules: ``hub`` (``Hub``: the stream registry, ``publish`` (the hot path, one tuned loop) and
the subscriber lifecycle), ``outbox`` (``OutFrame``, ``Subscriber``: encode-once frames and the
bounded buffers the I/O side drains), ``streams`` (``Stream``: history ring, last values, the
normalizer's book and its snapshots), ``conversation`` (``Conversation``: one connection's
requests in, responses out; its subscriptions), ``catchup`` (late join and resume),
``conflation`` (``Conflation``: the slow-subscriber policy), ``stats`` (``HubStats``: plain
counters, exported at scrape time by ``io.metrics.HubStatsCollector``), ``wsframe`` (RFC 6455
opcodes and unmasked server frames: the gateway's one home for framing), ``mirror`` (the
Paxos-format encoding for the mirror paths, so existing Paxos clients only change their URL),
``access`` (``ConnectionRateLimiter`` and ``TokenAuth``: who may connect and how often, time
passed in), ``routes`` (``route``: what a connection's URL asks for, or the HTTP refusal).

The data's way: ``io.upstream`` → ``ingest.batch.ingest_batch`` → ``Hub.publish(records)``
(synchronous, same tick as the read) → ``Subscriber.queue`` (``outbox``) → ``io.delivery``
writes it before ``publish`` returns (``Hub.after_publish``); requests go the other way,
``io.server`` → ``Hub.receive`` → the subscriber's ``Conversation`` → replies queued like
records (written by the flusher task, one tick later).

May import: the standard library, msgspec, ``gateway.contract`` and the pure value modules of
``gateway.ingest`` (``book``, ``decimals``, ``timestamps``, ``feeds``); ``access`` also raises
``gateway.config.ConfigError`` for a bad token file. Never trio, trio-websocket
or prometheus_client: ``tests/unit/test_sans_io_boundary.py`` enforces it.
"""
