"""gateway.fanout.access without sockets: rate-limit buckets on injected time, token loading and
checking, the log budget and the start-up warning."""

from __future__ import annotations

import hmac
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ConfigError, load_config
from gateway.fanout.access import (
    TOKENS_ENV,
    ConnectionRateLimiter,
    LogBudget,
    TokenAuth,
    auth_warning,
    bearer_token,
    client_key,
    load_tokens,
)

TOKEN = "s3cret-token-0123456789abcdef"
OTHER = "another-token-ABCDEFGHIJKLMNOP"


def auth_header(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"x"), (b"authorization", value.encode())]


# -- rate limit -----------------------------------------------------------------------------


def test_burst_then_refill_at_the_rate() -> None:
    limiter = ConnectionRateLimiter(rate=2.0, burst=3)
    assert [limiter.check("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.check("a", 0.0) == pytest.approx(0.5)  # one token takes 1/rate s
    assert limiter.check("b", 0.0) == 0.0  # other addresses have their own bucket
    assert limiter.check("a", 0.25) == pytest.approx(0.25)
    assert limiter.check("a", 0.5) == 0.0  # refilled one token
    assert limiter.check("a", 0.5) > 0
    # Long idle: full again, but never more than the burst.
    assert [limiter.check("a", 100.0) for _ in range(4)][-1] > 0


def test_refused_attempts_do_not_drain_further() -> None:
    limiter = ConnectionRateLimiter(rate=1.0, burst=1)
    assert limiter.check("a", 0.0) == 0.0
    for _ in range(100):
        assert limiter.check("a", 0.0) == pytest.approx(1.0)
    assert limiter.check("a", 1.0) == 0.0


def test_idle_addresses_are_forgotten() -> None:
    limiter = ConnectionRateLimiter(rate=1.0, burst=5)
    for i in range(100):
        limiter.check(f"10.0.0.{i}", float(i) * 0.01)
    assert len(limiter) == 100
    limiter.check("10.1.1.1", 10.0)  # everyone else is full again after burst/rate = 5 s
    assert len(limiter) == 1


@given(st.lists(st.tuples(st.integers(0, 10_000), st.floats(0, 0.01)), max_size=300))
def test_table_never_exceeds_its_cap(steps: list[tuple[int, float]]) -> None:
    limiter = ConnectionRateLimiter(rate=1.0, burst=10, max_entries=16)
    now = 0.0
    for address, dt in steps:
        now += dt
        limiter.check(str(address), now)
        assert len(limiter) <= 16


def test_client_key() -> None:
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    # One IPv6 host usually owns a /64: rotating addresses inside it does not help.
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert client_key("2001:db8:0:1::1") != client_key("2001:db8::1")
    assert client_key("not-an-ip") == "not-an-ip"


# -- tokens ---------------------------------------------------------------------------------


def test_token_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# gateway tokens\n\n  {TOKEN}  \n# retired: x\n{TOKEN}\n")
    assert load_tokens(str(path), {}) == (TOKEN.encode(),)
    both = load_tokens(str(path), {TOKENS_ENV: f" {OTHER} ,,{TOKEN}"})
    assert both == (TOKEN.encode(), OTHER.encode())
    assert load_tokens("", {TOKENS_ENV: OTHER}) == (OTHER.encode(),)
    assert load_tokens("", {}) == ()


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        (None, {}, "cannot read"),
        ("# only comments\n\n", {}, "has no token"),
        ("short-secret\n", {}, "line 1: a token must be 16 to"),
        (f"{TOKEN}\nbad token with spaces\n", {}, "line 2: a token may only contain"),
        ("", {TOKENS_ENV: " , "}, "set but has no token"),
        ("", {TOKENS_ENV: f"{TOKEN},tiny-secret"}, "token 2: a token must be"),
    ],
)
def test_bad_tokens_are_config_errors_that_do_not_show_the_token(
    tmp_path: Path, content: str | None, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "tokens"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        load_tokens(str(path) if content != "" else "", env)
    text = str(caught.value)
    for secret in ("short-secret", "bad token", "tiny-secret", TOKEN):
        assert secret not in text


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        (auth_header(f"Bearer {TOKEN}"), TOKEN.encode()),
        (auth_header(f"bearer {TOKEN}"), TOKEN.encode()),
        (auth_header(f"BEARER   {TOKEN} "), TOKEN.encode()),
        ([(b"Authorization", f"Bearer {TOKEN}".encode())], TOKEN.encode()),
        ([], None),
        (auth_header(f"Basic {TOKEN}"), None),
        (auth_header("Bearer"), None),
        (auth_header("Bearer "), None),
        (auth_header(f"Bearer {TOKEN} extra"), None),
        (auth_header(f"Bearer{TOKEN}"), None),
        (auth_header(f"Bearer {TOKEN}") + auth_header(f"Bearer {TOKEN}"), None),  # repeated
    ],
)
def test_bearer_token_parsing(headers: list[tuple[bytes, bytes]], token: bytes | None) -> None:
    assert bearer_token(headers) == token


def test_check_compares_with_every_token_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)  # access looks it up at each call
    tokens = [TOKEN.encode(), OTHER.encode(), b"third-token-zzzzzzzzzzzz"]
    auth = TokenAuth(tokens)
    for headers, expected in [
        (auth_header(f"Bearer {TOKEN}"), True),  # matches the first: no early exit
        (auth_header(f"Bearer {OTHER}"), True),
        (auth_header("Bearer wrong-token-0000000000000"), False),
        (auth_header(f"Basic {TOKEN}"), False),  # malformed: same work as a wrong token
        ([], False),  # missing: same work too
    ]:
        calls.clear()
        assert auth.check(headers) is expected
        assert len(calls) == len(tokens)
        # Fixed-length digests, never the raw tokens: the timing says nothing of their lengths.
        assert {(len(a), len(b)) for a, b in calls} == {(32, 32)}


def test_no_tokens_means_auth_off() -> None:
    auth = TokenAuth(())
    assert not auth.enabled
    assert auth.check([])
    assert TokenAuth([TOKEN.encode()]).enabled


# -- log budget and the start-up warning ----------------------------------------------------


def test_log_budget() -> None:
    budget = LogBudget(lines=3, window=10.0)
    assert [budget.allow(0.0) for _ in range(5)] == [0, 0, 0, None, None]
    assert budget.allow(9.9) is None
    assert budget.allow(10.0) == 3  # the next line says how many were left out
    assert budget.allow(10.1) == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_no_warning_on_loopback(host: str) -> None:
    assert auth_warning(host, 8765, auth_enabled=False) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "gateway.internal"])
def test_warning_beyond_loopback_without_auth(host: str) -> None:
    warning = auth_warning(host, 8765, auth_enabled=False)
    assert warning is not None
    assert "authentication is OFF" in warning
    assert f"{host}:8765" in warning
    assert "server.auth_token_file" in warning and TOKENS_ENV in warning
    assert auth_warning(host, 8765, auth_enabled=True) is None


# -- configuration --------------------------------------------------------------------------


def test_config_keys_and_defaults() -> None:
    server = load_config(None, {}).server
    assert server.connections_per_ip_per_second == 20.0
    assert server.connection_burst_per_ip == 50
    assert server.auth_token_file == ""
    server = load_config(
        None,
        {"PAXOS_GATEWAY__SERVER__AUTH_TOKEN_FILE": "/run/tokens"},
        ["server.connections_per_ip_per_second=0.5", "server.connection_burst_per_ip=2"],
    ).server
    assert (server.connections_per_ip_per_second, server.connection_burst_per_ip) == (0.5, 2)
    assert server.auth_token_file == "/run/tokens"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("server.connections_per_ip_per_second=0", "expected number > 0, got 0"),
        ("server.connections_per_ip_per_second=inf", "expected a finite number"),
        ("server.connection_burst_per_ip=0", "expected int >= 1, got 0"),
        ("server.auth_token_file=1", "expected a string, got 1"),
    ],
)
def test_config_validation(setting: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(None, {}, [setting])
    assert str(caught.value).startswith(setting.split("=")[0])


def test_token_auth_replace_swaps_the_whole_set() -> None:
    auth = TokenAuth([b"first-token-0123456789"])
    header = [(b"authorization", b"Bearer first-token-0123456789")]
    assert auth.check(header) and auth.count == 1
    auth.replace([b"second-token-0123456789", b"third-token-0123456789"])
    assert not auth.check(header) and auth.count == 2
    assert auth.check([(b"authorization", b"Bearer third-token-0123456789")])
