"""The published contract: the msgspec types that subscribers see, and the schemas made from them.

Everything a subscriber can rely on is declared here once, as types: constraints, tags and
field names live on the ``msgspec.Struct`` classes, and validation, encoding and the JSON
Schema / AsyncAPI documents in ``schemas/`` all come from that one declaration (a test fails
when the generated files are stale).

Modules: ``records`` (the normalized, sequenced records: ``Trade``, ``BookSnapshot``,
``BookUpdate``, ``Price``, ``Status``), ``protocol`` (subscriber protocol v2: requests,
responses, stream names and patterns, error and close codes), ``request_parser``
(``parse_request``: one request frame → a typed request or the error to answer), ``schemagen``
(``python -m gateway.contract.schemagen [--check]`` writes ``schemas/``).

The data's way: ``ingest`` builds ``records``; ``fanout`` sequences nothing, it encodes them and
speaks ``protocol`` with each subscriber; ``io`` only carries the bytes.

May import: the standard library and msgspec, nothing else of the gateway (``gateway.__version__``
aside). Sans-IO: ``tests/unit/test_sans_io_boundary.py`` fails if importing any module here loads
trio, trio-websocket or prometheus_client.
"""
