"""Ingest (sans-IO): upstream bytes in, normalized and sequenced records out.

One ``FeedNormalizer`` per configured feed turns the frames of one Paxos WebSocket into
``contract.records``: exact decimals, integer-nanosecond times, books kept in sync across
reconnects, executions deduplicated, gap-free ``seq`` per stream. Nothing here owns a socket or
a clock: the upstream task (``io.upstream``) passes bytes and the time in, and publishes what
comes back, one batch per socket read.

Modules, in the data's order: ``ws_handshake`` (the WebSocket client's opening handshake, h11 for
the HTTP part), ``wsclient`` (the WebSocket client protocol's frames: ``ClientProtocol``),
``paxos_messages`` (the Paxos feed messages as msgspec types and their decoders, values left as the
strings Paxos sent), ``decimals`` and ``timestamps`` (exact numbers and times), ``book`` (one
market's ``OrderBook``), ``dedup`` (``RecentIds``: replayed executions), ``sequence``
(``Sequencer``: per-stream numbers), ``feeds`` (``FeedSpec``: which path a feed reads and which
streams it produces), ``stats`` (``FeedStats``: plain counters, exported at scrape time by
``io.metrics.FeedStatsCollector``), ``book_sync`` (``MarketSync``: one market's book-sync state
machine, awaiting snapshot → assembling → synced, crossed, dropped), ``book_frames``
(``BookFrames``: one feed's SNAPSHOT and UPDATE messages, through its books' state machines, into
book records), ``normalizer`` (``FeedNormalizer``: all of the above, one feed), ``batch``
(``ingest_batch``: the messages of one read normalized and published once, a plain function so that
no checkpoint can come between them), ``lag`` (``LagSampler``: how far behind the feed is, from the
exchange times of one connection's live records). The REST backfill and markets come and go
(docs/upstream.md): ``paxos_rest`` (Paxos REST answers as typed values), ``backfill``
(``TradeTape``: live and REST executions merged into the complete tape, ``BackfillStats``),
``markets`` (``MarketDirectory``: the REST market list → halts, delistings, returns),
``tape_records`` (``TapeRecords``: what the tape releases and what the market list changes, as the
normalizer's records).

Usage::

    normalizer = FeedNormalizer(feed_from_url("wss://ws.paxos.com/marketdata"), epoch)
    publish_records(normalizer, hub, normalizer.connected(now_ns))
    messages = client.receive(data)                # wsclient.ClientProtocol
    batch = ingest_batch(normalizer, hub, messages, now_ns)   # synchronous: one publish
    if batch.verdict.action != "continue": ...     # resync or upstream error: reconnect

May import: the standard library, msgspec, h11, sortedcontainers, ``gateway.contract`` and
``gateway.fanout.wsframe`` (the RFC 6455 opcodes, defined once).
Never trio, trio-websocket, prometheus_client, nats or httpx:
``tests/unit/test_sans_io_boundary.py`` imports every module here in a fresh interpreter and
fails if one of them is loaded.
"""
