"""The chart's alerting rules (templates/prometheusrule.yaml), checked by the real promtool:
`promtool check rules` on every rendering, `promtool test rules` with the input series of
tests/deploy/promtool/alerts.test.yaml (each alert firing and staying silent). The rendered
PrometheusRule validates against the CRD's schema (tests/deploy/k8s_schemas), every alert links to a
section of the runbook (docs/operations.md), and every metric the rules query is one a running
gateway really exposes.

promtool comes from Debian's prometheus package (.ci/run installs it). Without it these tests
skip on a developer machine and fail in CI (CI set).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import trio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.test_dashboard import _scrape_after_traffic, metric_names
from tests.deploy.test_helm import CHART_DIR, FULLNAME, NAMESPACE, RELEASE, helm, one, render

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parents[1]
RULE_SCHEMA = TESTS / "k8s_schemas" / "prometheusrule-monitoring.coreos.com-v1.json"
PROMTOOL_TESTS = TESTS / "promtool" / "alerts.test.yaml"
PROMTOOL_CLUSTER_TESTS = TESTS / "promtool" / "cluster.test.yaml"
RUNBOOK = ROOT / "docs" / "operations.md"
RUNBOOK_URL = "https://runbooks.example/operations.md"

# What tests/deploy/promtool/alerts.test.yaml was written against.
ALERTING: dict[str, Any] = {
    "prometheusRule": {"enabled": True, "runbookBaseUrl": RUNBOOK_URL},
    "metrics": {"serviceMonitor": {"enabled": True}},
}
ALERTS = {
    "PaxosGatewayUpstreamDown",
    "PaxosGatewayUpstreamReconnectStorm",
    "PaxosGatewayUpstreamLagHigh",
    "PaxosGatewayUpstreamSilent",
    "PaxosGatewayNotReady",
    "PaxosGatewayUnavailable",
    "PaxosGatewaySlowSubscriberDisconnects",
    "PaxosGatewayConflations",
    "PaxosGatewaySubscriberBufferNearLimit",
    "PaxosGatewayDecodeErrors",
    "PaxosGatewayBackfillGaps",
}
# Every tunable moved off its default, labels added, the selector given.
TUNED: dict[str, Any] = {
    "prometheusRule": {
        "enabled": True,
        "runbookBaseUrl": "https://wiki.example.com/paxos-gateway/operations/",
        "labels": {"release": "prometheus"},
        "seriesSelector": 'kubernetes_namespace="md", app=~"gw|gateway"',
        "alertLabels": {"team": "market-data", "page": "true"},
        "alerts": {
            "upstreamDown": {"for": "30s", "severity": "page"},
            "reconnectStorm": {"window": "1h", "threshold": 20, "for": "0s"},
            "upstreamLagHigh": {"quantile": 0.9, "window": "10m", "thresholdSeconds": 0.5},
            "upstreamSilent": {"feeds": "marketdata|marketdata-stablecoin", "thresholdSeconds": 30},
            "notReady": {"for": "1m"},
            "unavailable": {"severity": "page"},
            "slowSubscriberDisconnects": {"threshold": 0, "window": "5m"},
            "conflations": {"enabled": False},
            "subscriberBufferNearLimit": {"ratio": 0.9},
            "decodeErrors": {"window": "1h", "for": "1m"},
        },
    },
    "config": {"server": {"buffer_bytes": 1048576}},
}


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool not found (Debian: apt-get install prometheus; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def prometheus_rule(chart: Any, values: dict[str, Any]) -> dict[str, Any]:
    return one(render(chart, values), "PrometheusRule")


def rules(rule: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def alerts(rule: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in rules(rule)}


def write_rules(rule: dict[str, Any], directory: Path) -> Path:
    """The PrometheusRule's spec is a Prometheus rule file (groups: ...)."""
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    return path


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


# -- the object ----------------------------------------------------------------------------------


def test_off_by_default_like_the_servicemonitor(chart: Any) -> None:
    assert "PrometheusRule" not in {m["kind"] for m in render(chart)}


def test_enabling_needs_a_runbook_url(chart: Any) -> None:
    with pytest.raises(helm.HelmValuesError, match="runbookBaseUrl"):
        chart.render({"prometheusRule": {"enabled": True}}, name=RELEASE, namespace=NAMESPACE)


BAD_VALUES = [
    pytest.param({"runbookBaseUrl": "docs/operations.md"}, "/prometheusRule/runbookBaseUrl"),
    pytest.param({"alerts": {"upstreamDown": {"for": "2 minutes"}}}, "/upstreamDown/for"),
    pytest.param({"alerts": {"reconnectStorm": {"window": "0"}}}, "/reconnectStorm/window"),
    pytest.param({"alerts": {"upstreamLagHigh": {"quantile": 99}}}, "/upstreamLagHigh/quantile"),
    pytest.param({"alerts": {"subscriberBufferNearLimit": {"ratio": 0}}}, "/ratio"),
    pytest.param({"alerts": {"decodeErrors": {"threshold": -1}}}, "/decodeErrors/threshold"),
    pytest.param({"alerts": {"backfillGaps": {"threshold": -1}}}, "/backfillGaps/threshold"),
    pytest.param({"alerts": {"nope": {"enabled": True}}}, "'nope'"),
    pytest.param({"seriesSelector": "{job='gw'}"}, "/prometheusRule/seriesSelector"),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES)
def test_schema_rejects_bad_alert_values(chart: Any, values: dict[str, Any], message: str) -> None:
    merged = {"prometheusRule": {"enabled": True, "runbookBaseUrl": RUNBOOK_URL, **values}}
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.render(merged, name=RELEASE, namespace=NAMESPACE)
    assert message in str(caught.value)


@pytest.mark.parametrize("values", [ALERTING, TUNED], ids=["defaults", "tuned"])
def test_validates_against_the_crd_schema(chart: Any, values: dict[str, Any]) -> None:
    schema = json.loads(RULE_SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    rule = prometheus_rule(chart, values)
    validator.validate(rule)
    names = [group["name"] for group in rule["spec"]["groups"]]
    assert len(names) == len(set(names))  # the CRD's list-map key
    broken = copy.deepcopy(rule)
    broken["spec"]["groups"][0]["rules"][0]["for"] = "2 minutes"
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_the_object_and_its_labels(chart: Any) -> None:
    rule = prometheus_rule(chart, TUNED)
    assert rule["metadata"]["name"] == FULLNAME
    assert rule["metadata"]["namespace"] == NAMESPACE
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    for alert in alerts(rule).values():
        assert alert["labels"]["team"] == "market-data"
        assert alert["labels"]["page"] == "true"


def test_every_alert_is_there_and_each_can_be_switched_off(chart: Any) -> None:
    assert set(alerts(prometheus_rule(chart, ALERTING))) == ALERTS
    assert set(alerts(prometheus_rule(chart, TUNED))) == ALERTS - {"PaxosGatewayConflations"}
    everything_off = copy.deepcopy(ALERTING)
    everything_off["prometheusRule"]["alerts"] = {key: {"enabled": False} for key in _alert_keys()}
    # No rule at all would leave an empty group, which Prometheus rejects: not rendered empty.
    assert rules(prometheus_rule(chart, everything_off)) == []


def _alert_keys() -> list[str]:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    return list(values["prometheusRule"]["alerts"])


def test_tuning_reaches_the_expressions(chart: Any) -> None:
    tuned = alerts(prometheus_rule(chart, TUNED))
    selector = 'kubernetes_namespace="md", app=~"gw|gateway"'
    for alert in tuned.values():
        assert "{" + selector in alert["expr"], alert["alert"]
    assert tuned["PaxosGatewayUpstreamDown"]["for"] == "30s"
    assert tuned["PaxosGatewayUpstreamDown"]["labels"]["severity"] == "page"
    assert "[1h])) > 20" in tuned["PaxosGatewayUpstreamReconnectStorm"]["expr"]
    lag = tuned["PaxosGatewayUpstreamLagHigh"]["expr"]
    assert lag.startswith("histogram_quantile(0.9, ") and "[10m]" in lag and lag.endswith("> 0.5")
    assert (
        'feed=~"marketdata|marketdata-stablecoin"} > 30'
        in tuned["PaxosGatewayUpstreamSilent"]["expr"]
    )
    # 0.9 of the configured 1 MiB buffer.
    assert tuned["PaxosGatewaySubscriberBufferNearLimit"]["expr"].endswith("> 943718")
    assert tuned["PaxosGatewayDecodeErrors"]["for"] == "1m"


def test_series_selector_defaults(chart: Any) -> None:
    with_monitor = alerts(prometheus_rule(chart, ALERTING))["PaxosGatewayNotReady"]["expr"]
    metrics_job = f'job="{FULLNAME}-metrics"'
    assert with_monitor == f'paxos_gateway_ready{{namespace="{NAMESPACE}",{metrics_job}}} == 0'
    annotations_only = copy.deepcopy(ALERTING)
    annotations_only["metrics"]["serviceMonitor"]["enabled"] = False
    expr = alerts(prometheus_rule(chart, annotations_only))["PaxosGatewayNotReady"]["expr"]
    assert expr == f'paxos_gateway_ready{{namespace="{NAMESPACE}"}} == 0'
    # The ServiceMonitor's job is the metrics Service's name (the Operator's default jobLabel).
    services = {m["metadata"]["name"] for m in render(chart, ALERTING) if m["kind"] == "Service"}
    assert f"{FULLNAME}-metrics" in services


def test_every_alert_has_summary_description_and_a_runbook_section(chart: Any) -> None:
    anchors = _runbook_anchors()
    for values in (ALERTING, TUNED):
        base = values["prometheusRule"]["runbookBaseUrl"].rstrip("/")
        for name, alert in alerts(prometheus_rule(chart, values)).items():
            annotations = alert["annotations"]
            assert set(annotations) == {"summary", "description", "runbook_url"}, name
            assert annotations["summary"] and annotations["description"], name
            url, _, anchor = annotations["runbook_url"].partition("#")
            assert url == base, name
            assert anchor == name.lower() and anchor in anchors, f"{name}: no runbook section"
            assert alert["labels"]["severity"], name


def _runbook_anchors() -> set[str]:
    """GitHub's anchors of the runbook's headings (lower case, punctuation dropped, spaces ->
    hyphens)."""
    anchors = set()
    for line in RUNBOOK.read_text().splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_the_runbook_has_backfill_gaps() -> None:
    assert {"backfill-gaps", "paxosgatewaybackfillgaps"} <= _runbook_anchors()
    template = (CHART_DIR / "templates" / "prometheusrule.yaml").read_text()
    assert "Backfill gaps" in template


# -- promtool ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        ALERTING,
        TUNED,
        {**ALERTING, "prometheusRule": {**ALERTING["prometheusRule"], "seriesSelector": ""}},
        {**ALERTING, "cluster": {"enabled": True, "natsUrls": ["nats://nats:4222"]}},
        {
            **ALERTING,
            "cluster": {"enabled": True, "natsUrls": ["nats://nats:4222"]},
            "prometheusRule": {**ALERTING["prometheusRule"], "seriesSelector": ""},
        },
    ],
    ids=["defaults", "tuned", "unscoped", "cluster", "cluster-unscoped"],
)
def test_promtool_check_rules(
    chart: Any, promtool: str, values: dict[str, Any], tmp_path: Path
) -> None:
    path = write_rules(prometheus_rule(chart, values), tmp_path)
    result = run([promtool, "check", "rules", str(path)], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules(prometheus_rule(chart, values)))} rules found" in result.stdout


def test_promtool_check_rules_catches_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    # The check is a real one: a bad expression fails it.
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"alert": "Broken", "expr": "rate(paxos_gateway_ready[5m]", "for": "1m"}]}]}))  # fmt: skip
    result = run([promtool, "check", "rules", str(path)], tmp_path)
    assert result.returncode != 0


def test_promtool_unit_tests(chart: Any, promtool: str, tmp_path: Path) -> None:
    write_rules(prometheus_rule(chart, ALERTING), tmp_path)
    shutil.copy(PROMTOOL_TESTS, tmp_path / PROMTOOL_TESTS.name)
    result = run([promtool, "test", "rules", PROMTOOL_TESTS.name], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_in_cluster_mode(chart: Any, promtool: str, tmp_path: Path) -> None:
    # Cluster mode (issue 14): PaxosGatewayUnavailable per role, so ready edges hide no dead
    # ingest (the edges then serve stale data) and the other way round.
    cluster = {**ALERTING, "cluster": {"enabled": True, "natsUrls": ["nats://nats:4222"]}}
    write_rules(prometheus_rule(chart, cluster), tmp_path)
    shutil.copy(PROMTOOL_CLUSTER_TESTS, tmp_path / PROMTOOL_CLUSTER_TESTS.name)
    result = run([promtool, "test", "rules", PROMTOOL_CLUSTER_TESTS.name], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    # The same series against the single process's rule: one ready edge keeps it silent.
    write_rules(prometheus_rule(chart, ALERTING), tmp_path)
    result = run([promtool, "test", "rules", PROMTOOL_CLUSTER_TESTS.name], tmp_path)
    assert result.returncode != 0


def test_promtool_unit_tests_fail_on_a_wrong_expectation(
    chart: Any, promtool: str, tmp_path: Path
) -> None:
    write_rules(prometheus_rule(chart, ALERTING), tmp_path)
    text = PROMTOOL_TESTS.read_text().replace("severity: critical", "severity: warning")
    (tmp_path / "wrong.test.yaml").write_text(text)
    result = run([promtool, "test", "rules", "wrong.test.yaml"], tmp_path)
    assert result.returncode != 0
    assert "PaxosGatewayUpstreamDown" in result.stdout + result.stderr


def alert_cases(suite_path: Path) -> tuple[set[str], set[str]]:
    """The alerts a promtool suite expects to fire somewhere, and to stay silent somewhere."""
    suite = yaml.safe_load(suite_path.read_text())
    firing: set[str] = set()
    silent: set[str] = set()
    for case in suite["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    return firing, silent


def test_each_alert_has_a_firing_and_a_silent_case() -> None:
    firing, silent = alert_cases(PROMTOOL_TESTS)
    assert firing == ALERTS
    assert silent == ALERTS


# -- the metrics exist ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exposed_samples() -> set[str]:
    """Sample names a scrape of a running gateway carries after traffic that moves every
    metric (the dashboard test's exposition)."""
    text = trio.run(_scrape_after_traffic)
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_metric_the_rules_query_is_exposed(chart: Any, exposed_samples: set[str]) -> None:
    queried: set[str] = set()
    for alert in rules(prometheus_rule(chart, ALERTING)):
        names = metric_names(alert["expr"])
        assert names, alert["alert"]
        queried |= names
    assert queried - exposed_samples == set()
    assert len(queried) >= 8
