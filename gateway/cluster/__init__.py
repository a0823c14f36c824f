"""Cluster (sans-IO): the parts of running past one machine on NATS JetStream that need no socket.

One ingest leader publishes every record it sequences into JetStream; any number of edges read
them back in order and feed their own hub, so every edge serves the same ``(epoch, seq)`` and
the same bytes. What is decided here, as pure functions and small state machines, is the part
that must be identical on every node and testable without a server:

- ``subjects``: the JetStream layout (stream names, one subject per gateway stream, the
  per-book checkpoint subject) and the message id and headers derived from
  ``(epoch, stream, seq)``;
- ``codec``: a record's payload, the msgspec JSON the hub already sends, so an edge delivers
  the leader's bytes;
- ``fence``: per subject, the JetStream sequence of the leader's last write, which every
  publish names (``Nats-Expected-Last-Subject-Sequence``) so that a stale leader is rejected;
- ``lease``: the ingest leadership lease (KV create-if-absent, renew against the last
  revision, lost on a conflict or when its TTL runs out);
- ``ordered``: the edge's ordered apply: duplicates, gaps and epoch changes per stream.

The I/O that drives them is ``gateway.io.nats_bridge`` (nats-py on its own asyncio loop in a
thread, batches handed to and from trio) and ``gateway.io.nats_lease``. The design, the
subjects and the measured figures: docs/cluster.md.

May import: the standard library, msgspec, ``gateway.contract`` and the value modules of
``gateway.ingest`` (``decimals``). Never trio, trio-websocket, prometheus_client or nats:
``tests/unit/test_sans_io_boundary.py`` checks every module here in a fresh interpreter.
"""
