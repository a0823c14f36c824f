"""Settings that pass validation but are very likely wrong: logged at start and counted.

A fatal problem is a ``ConfigError`` instead (``validate.py``): the process stops before it
serves, with exit status 2.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.config.sections import Config
from gateway.config.validate import MIN_PRODUCTION_INTERVAL
from gateway.fanout.access import is_loopback


def config_problems(config: Config) -> list[str]:
    """Settings that pass validation but are very likely wrong, one sentence each.

    Today one: the test-only fast retries of ``upstream.allow_fast_retry`` against an upstream
    that is not on this machine (Paxos answers more than one new connection per second per IP
    with 429). Subscriber auth off on a non-loopback address is the other counted problem; it is
    reported by ``auth_warning``.
    """
    up = config.upstream
    fastest = min(up.backoff_initial, up.connect_interval)
    if not up.allow_fast_retry or fastest >= MIN_PRODUCTION_INTERVAL:
        return []
    remote = sorted(
        {
            host
            for spec in config.feed_specs()
            if (host := urlsplit(spec.url).hostname or "") and not is_loopback(host)
        }
    )
    if not remote:
        return []
    return [
        f"upstream.allow_fast_retry is on (backoff_initial {up.backoff_initial} s, "
        f"connect_interval {up.connect_interval} s) and feeds connect to {', '.join(remote)}, "
        "not to this machine: Paxos allows one new connection per second per IP; the setting "
        "is meant for tests against a local simulator"
    ]
