"""A subscriber client for the gateway: connect, subscribe, resume, detect gaps, keep books.

The core (``ClientSession`` in ``session``, each stream's position and book a ``TrackedStream``
in ``tracked_stream``) is sans-IO: frames in, events out. Adapters run it:

* asyncio (``websockets``, the ``client`` extra): ``gateway.client.asyncio_client.connect``
* trio (``trio-websocket``): ``gateway.client.trio_client.open_client``

Importing this package loads neither trio nor ``websockets`` nor any of the gateway's server
side; only the adapter module a service picks pulls in its event loop's library.
"""

from gateway.client.codec import ClientEncoding
from gateway.client.connection import auth_headers, stream_url
from gateway.client.driver import (
    Client,
    ClientError,
    ClientOptions,
    ConnectError,
    Transport,
    TransportClosed,
)
from gateway.client.events import (
    BookChanged,
    Closed,
    Connected,
    Disconnected,
    Duplicate,
    EpochMismatch,
    Event,
    Gap,
    PongReceived,
    ProtocolProblem,
    Reconnecting,
    RecordReceived,
    RequestRefused,
    Resumed,
    ResumeFailed,
    Snapshot,
    StatusChanged,
    StreamsListed,
    SubscriptionChanged,
)
from gateway.client.session import ClientSession
from gateway.client.tracked_stream import SessionStats
from gateway.ingest.book import OrderBook

__all__ = [
    "BookChanged",
    "Client",
    "ClientEncoding",
    "ClientError",
    "ClientOptions",
    "ClientSession",
    "Closed",
    "ConnectError",
    "Connected",
    "Disconnected",
    "Duplicate",
    "EpochMismatch",
    "Event",
    "Gap",
    "OrderBook",
    "PongReceived",
    "ProtocolProblem",
    "Reconnecting",
    "RecordReceived",
    "RequestRefused",
    "ResumeFailed",
    "Resumed",
    "SessionStats",
    "Snapshot",
    "StatusChanged",
    "StreamsListed",
    "SubscriptionChanged",
    "Transport",
    "TransportClosed",
    "auth_headers",
    "stream_url",
]
