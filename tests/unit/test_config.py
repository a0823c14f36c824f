from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gateway.config import (
    DEFAULT_FEED_PATHS,
    Config,
    ConfigError,
    Override,
    add_arguments,
    from_args,
    load_config,
)
from gateway.ingest.feeds import PRODUCTION_URL, FeedSpec


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error(*args: object, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


FAST = ["upstream.allow_fast_retry=true"]


# -- defaults and the documented file


def test_default_config_is_production_with_three_feeds() -> None:
    config = load_config(None, {}, [])
    assert config == Config()
    assert config.upstream.base_url == PRODUCTION_URL
    assert [f.path for f in config.feeds] == list(DEFAULT_FEED_PATHS)
    assert config.feed_specs() == (
        FeedSpec("executiondata", f"{PRODUCTION_URL}/executiondata", "executions", None),
        FeedSpec("marketdata", f"{PRODUCTION_URL}/marketdata", "book", None),
        FeedSpec(
            "marketdata-stablecoin", f"{PRODUCTION_URL}/marketdata/stablecoin", "stablecoin", None
        ),
    )
    assert config.required_feeds() == {"executiondata", "marketdata", "marketdata-stablecoin"}


DOCUMENTED = """
[upstream]
base_url = "wss://ws.sandbox.paxos.com"
backoff_initial = 2           # an int where a float is expected is fine
backoff_max = 30.0
ping_interval = 5.0
ping_timeout = 5.0
connect_timeout = 3.0
connect_interval = 1.5
dedup_capacity = 1000
max_message_bytes = 1048576

[[feeds]]
path = "/marketdata"
name = "book"
required = true

[[feeds]]
url = "wss://ws.paxos.com/executiondata/BTCUSD"
required = false

[server]
host = "0.0.0.0"
port = 8766
max_subscribers = 10
max_subscriptions = 5
max_request_bytes = 4096
buffer_bytes = 65536
slow_policy = "disconnect"
history = 0
ping_interval = 1.0
ping_timeout = 2.0
handshake_timeout = 3.0

[metrics]
host = "127.0.0.1"
port = 0
ready_grace = 0

[shutdown]
drain_timeout = 0.5

[log]
level = "DEBUG"
format = "json"
"""


def test_full_file_decodes_into_typed_sections(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DOCUMENTED), {}, [])
    assert config.upstream.backoff_initial == 2.0
    assert isinstance(config.upstream.backoff_initial, float)
    assert config.upstream.connect_interval == 1.5
    assert config.server.slow_policy == "disconnect"
    assert config.server.history == 0
    assert config.metrics.ready_grace == 0.0
    assert config.shutdown.drain_timeout == 0.5
    assert config.log.level == "debug"
    assert config.log.format == "json"
    assert config.feed_specs() == (
        FeedSpec("book", "wss://ws.sandbox.paxos.com/marketdata", "book", None),
        FeedSpec(
            "executiondata-BTCUSD",
            "wss://ws.paxos.com/executiondata/BTCUSD",
            "executions",
            "BTCUSD",
        ),
    )
    assert config.required_feeds() == {"book"}


def test_file_without_feeds_keeps_the_default_feeds(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[server]\nport = 9000\n"), {}, [])
    assert config.server.port == 9000
    assert [f.path for f in config.feeds] == list(DEFAULT_FEED_PATHS)


def test_feed_paths_are_normalized_and_named_after_the_path() -> None:
    config = load_config(
        None, {}, [], feeds=["marketdata//stablecoin/USDCUSD/", "/marketdata/BTCUSD"]
    )
    specs = config.feed_specs()
    assert specs[0].url == f"{PRODUCTION_URL}/marketdata/stablecoin/USDCUSD"
    assert specs[0].name == "marketdata-stablecoin-USDCUSD"
    assert (specs[0].kind, specs[0].market) == ("stablecoin", "USDCUSD")
    assert specs[1].name == "marketdata-BTCUSD"


def test_base_url_trailing_slash_is_joined_cleanly() -> None:
    config = load_config(
        None,
        {},
        ["upstream.base_url=ws://127.0.0.1:9000/", "backfill.enabled=false"],
        feeds=["/marketdata"],
    )
    assert config.feed_specs()[0].url == "ws://127.0.0.1:9000/marketdata"


# -- file-level errors


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 8765\nhost = \n")
    message = error(path, {}, [])
    assert str(path) in message
    assert "invalid TOML" in message
    assert "line 3" in message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    message = error(tmp_path / "nope.toml", {}, [])
    assert "nope.toml" in message and "cannot read" in message


def test_unknown_key_in_file_is_named_with_a_suggestion(tmp_path: Path) -> None:
    message = error(write(tmp_path, "[server]\nprot = 1\n"), {}, [])
    assert message.startswith("server.prot: unknown key")
    assert "did you mean 'port'" in message


def test_unknown_section_in_file(tmp_path: Path) -> None:
    message = error(write(tmp_path, "[srever]\nport = 1\n"), {}, [])
    assert message.startswith("srever: unknown section")
    assert "did you mean 'server'" in message


def test_unknown_key_in_a_feed_entry(tmp_path: Path) -> None:
    message = error(write(tmp_path, '[[feeds]]\npth = "/marketdata"\n'), {}, [])
    assert message.startswith("feeds[0].pth: unknown key")


def test_feeds_as_a_table_instead_of_an_array(tmp_path: Path) -> None:
    message = error(write(tmp_path, '[feeds]\npath = "/marketdata"\n'), {}, [])
    assert message == "feeds: expected an array of tables ([[feeds]]), got a table"


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    assert error(write(tmp_path, "server = 5\n"), {}, []) == "server: expected a table, got 5"


# -- per-field rules, each message naming the field


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ('server.port="x"', 'server.port: expected int >= 0 <= 65535, got "x"'),
        ("server.port=65536", "server.port: expected int >= 0 <= 65535, got 65536"),
        ("server.port=-1", "server.port: expected int >= 0 <= 65535, got -1"),
        ("metrics.port=1.5", "metrics.port: expected int >= 0 <= 65535, got 1.5"),
        ("server.port=true", "server.port: expected int >= 0 <= 65535, got true"),
        ("upstream.ping_timeout=0", "upstream.ping_timeout: expected number > 0, got 0"),
        ("server.ping_timeout=-1.0", "server.ping_timeout: expected number > 0, got -1.0"),
        ("upstream.connect_timeout=0", "upstream.connect_timeout: expected number > 0, got 0"),
        ("server.handshake_timeout=0", "server.handshake_timeout: expected number > 0, got 0"),
        ("shutdown.drain_timeout=-1", "shutdown.drain_timeout: expected number >= 0, got -1"),
        ("metrics.ready_grace=-0.5", "metrics.ready_grace: expected number >= 0, got -0.5"),
        ("upstream.dedup_capacity=0", "upstream.dedup_capacity: expected int >= 1, got 0"),
        (
            "upstream.coalesce_window=0.5",
            "upstream.coalesce_window: expected number >= 0 <= 0.1, got 0.5",
        ),
        (
            "upstream.coalesce_window=-0.001",
            "upstream.coalesce_window: expected number >= 0 <= 0.1, got -0.001",
        ),
        ("server.max_subscribers=0", "server.max_subscribers: expected int >= 1, got 0"),
        (
            "server.buffer_bytes=10",
            "server.buffer_bytes: expected int >= 1024 <= 9007199254740991, got 10",
        ),
        # Sizes sent in hello stay exact for a JavaScript client (at most 2^53 - 1).
        (
            "server.max_request_bytes=9007199254740992",
            "server.max_request_bytes: expected int >= 256 <= 9007199254740991, "
            "got 9007199254740992",
        ),
        (
            "server.max_subscriptions=0",
            "server.max_subscriptions: expected int >= 1 <= 9007199254740991, got 0",
        ),
        (
            "server.slow_policy=drop",
            'server.slow_policy: expected one of "conflate", "disconnect", got "drop"',
        ),
        ("log.format=xml", 'log.format: expected one of "json", "text", got "xml"'),
        ("upstream.allow_fast_retry=1", "upstream.allow_fast_retry: expected true or false, got 1"),
        ('server.host=""', 'server.host: expected a non-empty string, got ""'),
        ("metrics.ready_grace=inf", "metrics.ready_grace: expected a finite number, got inf"),
        ("upstream.ping_interval=nan", "upstream.ping_interval: expected number > 0, got nan"),
    ],
)
def test_field_rules(override: str, expected: str) -> None:
    key = override.split("=")[0]
    assert error(None, {}, [override]) == f"{expected} (from --set {key})"


def test_field_rule_from_the_file_has_no_source_suffix(tmp_path: Path) -> None:
    message = error(write(tmp_path, '[server]\nport = "8765"\n'), {}, [])
    assert message == 'server.port: expected int >= 0 <= 65535, got "8765"'


def test_ports_at_the_edges_are_accepted() -> None:
    config = load_config(None, {}, ["server.port=0", "metrics.port=65535"])
    assert (config.server.port, config.metrics.port) == (0, 65535)


def test_metrics_port_must_differ_from_server_port() -> None:
    message = error(None, {}, ["server.port=9000", "metrics.port=9000"])
    assert message == "metrics.port: must differ from server.port (9000) (from --set metrics.port)"
    # Two ephemeral ports never collide.
    load_config(None, {}, ["server.port=0", "metrics.port=0"])


def test_backoff_initial_below_one_second_needs_allow_fast_retry() -> None:
    message = error(None, {}, ["upstream.backoff_initial=0.1"])
    assert message.startswith("upstream.backoff_initial: must be >= 1.0")
    assert "allow_fast_retry" in message
    config = load_config(None, {}, [*FAST, "upstream.backoff_initial=0.01"])
    assert config.upstream.backoff_initial == 0.01


def test_connect_interval_below_one_second_needs_allow_fast_retry() -> None:
    message = error(None, {}, ["upstream.connect_interval=0"])
    assert message.startswith("upstream.connect_interval: must be >= 1.0")
    assert (
        load_config(None, {}, [*FAST, "upstream.connect_interval=0"]).upstream.connect_interval == 0
    )


def test_backoff_max_must_not_be_below_backoff_initial() -> None:
    message = error(None, {}, ["upstream.backoff_initial=5", "upstream.backoff_max=2"])
    assert message == (
        "upstream.backoff_max: must be >= upstream.backoff_initial (5.0), got 2.0 "
        "(from --set upstream.backoff_max)"
    )
    load_config(None, {}, ["upstream.backoff_initial=5", "upstream.backoff_max=5"])


@pytest.mark.parametrize(
    ("base_url", "fragment"),
    [
        ("https://ws.paxos.com", "scheme must be ws or wss"),
        ("wss://", "no host"),
        ("wss://ws.paxos.com/marketdata", "must be scheme://host[:port] only"),
        ("wss://ws.paxos.com?x=1", "must be scheme://host[:port] only"),
    ],
)
def test_base_url_rules(base_url: str, fragment: str) -> None:
    message = error(None, {}, [f"upstream.base_url={base_url}"])
    assert message.startswith("upstream.base_url: ")
    assert fragment in message


# -- feeds


def test_at_least_one_feed(tmp_path: Path) -> None:
    assert error(write(tmp_path, "feeds = []\n"), {}, []) == "feeds: at least one feed is required"
    assert error(None, {}, [], feeds=[]) == "feeds: at least one feed is required (from --feed)"


def test_feed_needs_exactly_one_of_path_and_url(tmp_path: Path) -> None:
    both = '[[feeds]]\npath = "/marketdata"\nurl = "wss://ws.paxos.com/marketdata"\n'
    assert error(write(tmp_path, both), {}, []) == (
        "feeds[0]: set exactly one of path or url, got both"
    )
    neither = '[[feeds]]\nname = "x"\n'
    assert error(write(tmp_path, neither), {}, []) == (
        "feeds[0]: set exactly one of path or url, got neither"
    )


@pytest.mark.parametrize("path", ["/tradedata", "/marketdata/btcusd", "/marketdata/BTCUSD/x", "/"])
def test_invalid_feed_path_is_named(path: str) -> None:
    message = error(None, {}, [], feeds=["/executiondata", path])
    assert message.startswith("feeds[1].path: ")
    assert message.endswith("(from --feed)")


def test_invalid_feed_url_is_named() -> None:
    assert error(None, {}, [], feeds=["https://ws.paxos.com/marketdata"]).startswith(
        "feeds[0].url: "
    )
    assert "query" in error(None, {}, [], feeds=["wss://ws.paxos.com/marketdata?x=1"])


def test_feed_name_rules(tmp_path: Path) -> None:
    text = '[[feeds]]\npath = "/marketdata"\nname = "book.all"\n'
    message = error(write(tmp_path, text), {}, [])
    assert message.startswith("feeds[0].name: ")
    assert '"book.all"' in message


def test_duplicate_feed_names(tmp_path: Path) -> None:
    text = (
        '[[feeds]]\npath = "/marketdata"\nname = "x"\n'
        '[[feeds]]\npath = "/executiondata"\nname = "x"\n'
    )
    assert error(write(tmp_path, text), {}, []) == (
        "feeds[1].name: duplicate feed name 'x' (also feeds[0])"
    )


def test_overlapping_feeds_are_rejected_naming_both() -> None:
    message = error(None, {}, [], feeds=["/executiondata", "/marketdata", "/marketdata/BTCUSD"])
    assert message.startswith("feeds: feeds[1] (marketdata: ")
    assert "feeds[2] (marketdata-BTCUSD: " in message
    assert "book.BTCUSD" in message


def test_identical_feeds_overlap_even_from_different_hosts() -> None:
    message = error(
        None, {}, [], feeds=["/marketdata/BTCUSD", "wss://ws.sandbox.paxos.com/marketdata/BTCUSD"]
    )
    assert "overlap" in message and "book.BTCUSD" in message


def test_two_all_market_feeds_of_one_kind_overlap() -> None:
    message = error(None, {}, [], feeds=["/executiondata", "wss://other.example/executiondata"])
    assert "every trades.* stream" in message


def test_different_kinds_and_markets_do_not_overlap() -> None:
    config = load_config(
        None,
        {},
        [],
        feeds=[
            "/marketdata/BTCUSD",
            "/marketdata/ETHUSD",
            "/marketdata/stablecoin",
            "/executiondata/BTCUSD",
            "/executiondata/ETHUSD",
        ],
    )
    assert len(config.feed_specs()) == 5


# -- overrides: environment and command line


def test_env_override_parses_toml_scalars() -> None:
    env = {
        "PAXOS_GATEWAY__SERVER__PORT": "8766",
        "PAXOS_GATEWAY__UPSTREAM__ALLOW_FAST_RETRY": "true",
        "PAXOS_GATEWAY__UPSTREAM__BACKOFF_INITIAL": "0.25",
        "PAXOS_GATEWAY__UPSTREAM__BASE_URL": "ws://127.0.0.1:9001",  # unquoted string
        "PAXOS_GATEWAY__BACKFILL__REST_URL": "http://127.0.0.1:9002/v2",
        "PAXOS_GATEWAY__LOG__FORMAT": '"json"',  # quoted string
        "UNRELATED": "ignored",
    }
    config = load_config(None, env, [])
    assert config.server.port == 8766
    assert config.upstream.allow_fast_retry is True
    assert config.upstream.backoff_initial == 0.25
    assert config.upstream.base_url == "ws://127.0.0.1:9001"
    assert config.rest_url() == "http://127.0.0.1:9002/v2"
    assert config.log.format == "json"


def test_env_bad_value_names_the_variable() -> None:
    message = error(None, {"PAXOS_GATEWAY__SERVER__PORT": "x"}, [])
    assert message == (
        'server.port: expected int >= 0 <= 65535, got "x" '
        "(from environment variable PAXOS_GATEWAY__SERVER__PORT)"
    )


def test_env_unknown_key_names_the_variable() -> None:
    message = error(None, {"PAXOS_GATEWAY__SERVER__PROT": "1"}, [])
    assert message.startswith("environment variable PAXOS_GATEWAY__SERVER__PROT: unknown key")
    assert "did you mean 'port'" in message
    message = error(None, {"PAXOS_GATEWAY__SRV__PORT": "1"}, [])
    assert message.startswith("environment variable PAXOS_GATEWAY__SRV__PORT: unknown section")


def test_env_malformed_variable_name() -> None:
    message = error(None, {"PAXOS_GATEWAY__PORT": "1"}, [])
    assert message.startswith("environment variable PAXOS_GATEWAY__PORT: expected")


def test_env_cannot_set_feeds() -> None:
    message = error(None, {"PAXOS_GATEWAY__FEEDS__PATH": "/marketdata"}, [])
    assert "use --feed" in message


def test_precedence_file_then_env_then_cli(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 1000\nmax_subscribers = 5\nhistory = 7\n")
    env = {"PAXOS_GATEWAY__SERVER__PORT": "2000", "PAXOS_GATEWAY__SERVER__MAX_SUBSCRIBERS": "6"}
    config = load_config(path, env, ["server.port=3000"])
    assert config.server.port == 3000  # CLI beats env beats file
    assert config.server.max_subscribers == 6  # env beats file
    assert config.server.history == 7  # file beats default


def test_later_cli_override_wins() -> None:
    assert load_config(None, {}, ["server.port=1", "server.port=2"]).server.port == 2


def test_set_syntax_errors() -> None:
    assert error(None, {}, ["server.port"]).startswith("--set 'server.port': expected SECTION.KEY")
    assert error(None, {}, ["port=1"]).startswith("--set port: 'port' is not SECTION.KEY")
    assert error(None, {}, ["server.port.x=1"]).startswith("--set server.port.x: ")
    assert error(None, {}, ["feeds.path=/x"]).endswith("use --feed PATH_OR_URL")


def test_set_value_may_contain_equals_and_non_scalars_stay_text() -> None:
    config = load_config(None, {}, ['server.host="a=b"'])
    assert config.server.host == "a=b"
    assert error(None, {}, ["server.port=[1]"]) == (
        'server.port: expected int >= 0 <= 65535, got "[1]" (from --set server.port)'
    )


def test_override_objects_carry_their_own_source() -> None:
    message = error(None, {}, [Override("server.port", "x", "--port")])
    assert message.endswith("(from --port)")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_from_args_shortcuts(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 1000\n")
    args = parse(
        [
            "--config", str(path),
            "--port", "0",
            "--metrics-port", "0",
            "--feed", "/marketdata/BTCUSD",
            "--feed", "wss://ws.sandbox.paxos.com/executiondata",
            "--log-format", "json",
            "--log-level", "WARNING",
            "--set", "server.history=3",
        ]
    )  # fmt: skip
    config = from_args(args, {"PAXOS_GATEWAY__SERVER__PORT": "2000"})
    assert config.server.port == 0
    assert config.metrics.port == 0
    assert config.server.history == 3
    assert config.log == type(config.log)(level="warning", format="json")
    assert [s.name for s in config.feed_specs()] == ["marketdata-BTCUSD", "executiondata"]


def test_from_args_shortcut_errors_name_the_flag() -> None:
    assert error_from_args(["--port", "x"]) == (
        'server.port: expected int >= 0 <= 65535, got "x" (from --port)'
    )
    assert error_from_args(["--log-format", "xml"]).endswith("(from --log-format)")
    assert error_from_args(["--log-level", "5"]).startswith('log.level: expected one of "critical"')
    assert error_from_args(["--feed", "/nope"]).startswith("feeds[0].path: ")


def error_from_args(argv: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        from_args(parse(argv), {})
    return str(info.value)


def test_config_is_immutable() -> None:
    config = load_config(None, {}, [])
    with pytest.raises(AttributeError):
        config.server.port = 1  # type: ignore[misc]


# -- backfill


@pytest.mark.parametrize(
    ("base_url", "rest_url"),
    [
        ("wss://ws.paxos.com", "https://api.paxos.com/v2"),
        ("wss://ws.sandbox.paxos.com", "https://api.sandbox.paxos.com/v2"),
    ],
)
def test_the_rest_url_is_derived_from_paxos_hosts(base_url: str, rest_url: str) -> None:
    config = load_config(None, {}, [f"upstream.base_url={base_url}"])
    assert config.backfill.enabled
    assert config.rest_url() == rest_url


def test_an_unknown_upstream_needs_a_rest_url_or_no_backfill() -> None:
    sets = ["upstream.base_url=ws://127.0.0.1:9000", "upstream.allow_fast_retry=true"]
    with pytest.raises(
        ConfigError, match=r"backfill.rest_url: cannot be derived .*enabled = false"
    ):
        load_config(None, {}, sets)
    assert load_config(None, {}, [*sets, "backfill.enabled=false"]).rest_url() == ""
    config = load_config(None, {}, [*sets, "backfill.rest_url=http://127.0.0.1:9001/v2"])
    assert config.rest_url() == "http://127.0.0.1:9001/v2"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("backfill.rest_url=ftp://x/v2", "backfill.rest_url: scheme must be https"),
        ("backfill.rest_url=https://x/v2?a=1", "backfill.rest_url: must be scheme://host"),
        (
            "backfill.requests_per_second=11",
            "backfill.requests_per_second: expected number > 0 <= 10",
        ),
        ("backfill.burst=0", "backfill.burst: expected int >= 1 <= 10"),
        ("backfill.max_held=0", "backfill.max_held: expected int >= 1"),
        ("backfill.timeout=0", "backfill.timeout: expected number > 0"),
    ],
)
def test_bad_backfill_settings_are_named(setting: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {}, [setting])
    assert str(caught.value).startswith(message), str(caught.value)


# -- [cluster]


def test_without_nats_the_gateway_is_one_process() -> None:
    cluster = load_config(None, {}).cluster
    assert not cluster.enabled
    assert cluster.role == "all"


def test_cluster_from_file_environment_and_role_flag(tmp_path: Path) -> None:
    path = write(tmp_path, '[cluster]\nnats_urls = ["nats://a:4222"]\nlease_ttl = 2.5\n')
    assert load_config(path, {}).cluster.nats_urls == ("nats://a:4222",)
    env = {"PAXOS_GATEWAY__CLUSTER__NATS_URLS": "nats://a:4222, tls://b:4222,"}
    config = load_config(path, env)
    assert config.cluster.nats_urls == ("nats://a:4222", "tls://b:4222")
    assert config.cluster.enabled and config.cluster.lease_ttl == 2.5
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--config", str(path), "--role", "edge"])
    assert from_args(args, {}).cluster.role == "edge"


def test_cluster_errors_name_the_field_and_the_source(tmp_path: Path) -> None:
    assert error(None, {}, ["cluster.role=edge"]) == (
        'cluster.role: "edge" needs NATS: set cluster.nats_urls (e.g. ["nats://nats:4222"]), '
        'or leave the role "all" for a single process (from --set cluster.role)'
    )
    assert error(None, {}, ["cluster.nats_urls=nats://a:4222", "cluster.role=leader"]) == (
        'cluster.role: expected one of "all", "edge", "ingest", got "leader" '
        "(from --set cluster.role)"
    )
    assert error(None, {"PAXOS_GATEWAY__CLUSTER__NATS_URLS": "http://a:4222"}) == (
        'cluster.nats_urls: scheme must be nats or tls, got "http://a:4222" '
        "(from environment variable PAXOS_GATEWAY__CLUSTER__NATS_URLS)"
    )
    assert error(None, {}, ["cluster.nats_urls=nats://a:99999"]).startswith(
        "cluster.nats_urls: Port out of range"
    )
    path = write(tmp_path, "[cluster]\nnats_urls = [4222]\n")
    assert error(path, {}) == "cluster.nats_urls[0]: expected a string, got 4222"
    path = write(tmp_path, "[cluster]\nlease_ttl = 0.1\n")
    assert error(path, {}) == "cluster.lease_ttl: expected number >= 0.5 <= 60, got 0.1"
