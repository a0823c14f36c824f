"""Commands for people at a terminal, built on the gateway but not part of it.

Modules: ``demo`` (``paxos-gateway demo``: the simulator and a gateway in one process, with
the URLs to poke at), ``tail`` (``paxos-gateway tail URL STREAM...``: a small subscriber that
prints records and checks sequence numbers, exiting non-zero on a gap).

May import: anything in the gateway, trio and trio-websocket included. Nothing in the gateway
imports from here (``gateway.cli`` loads the commands by name).
"""
