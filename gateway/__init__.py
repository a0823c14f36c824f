"""paxos-gateway: a normalizing fan-out gateway for the Paxos public WebSocket feeds."""

__version__ = "0.1.0"
