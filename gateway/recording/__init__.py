"""Recordings of raw upstream frames: capture real Paxos once, replay it as a reproducible test.

Modules: ``format`` (the JSON-lines file format: ``RecordingWriter``, the streaming
``RecordingReader``, ``RecordedFrame`` and connection ``Event`` entries; sans-IO),
``record`` (the ``paxos-gateway record`` command: the gateway's own upstream connections,
``io.upstream.run_feed``, with a writer in place of the normalizer), ``replay`` (the
``paxos-gateway replay`` command: ``ReplayServer`` serves a recording at each feed's path, as if
it were Paxos, so the real upstream task reads it back).

The data's way: Paxos → ``record`` → file (``format``) → ``replay`` → a gateway's
``io.upstream`` as usual.

May import: ``gateway.config``, ``gateway.logs``, ``gateway.contract``, ``gateway.ingest`` and
``gateway.io`` (trio and trio-websocket included); nothing from ``gateway.simulator`` (replay
is independent of the simulator, which builds its own Paxos text). ``format`` itself stays
sans-IO.
"""
