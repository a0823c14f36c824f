"""Benchmark harness of the gateway against two peers (not part of the test suite).

Run it with ``python -m bench.run [--quick]``; see docs/performance.md.
"""
