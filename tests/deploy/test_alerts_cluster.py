"""The chart's cluster alerts (the ``cluster*`` keys of prometheusRule.alerts, rendered only
with cluster.enabled): promtool checks and unit tests (tests/deploy/promtool/
cluster_alerts.test.yaml, each alert firing and silent), a runbook section each, and every
series they query checked against a scrape of real cluster-mode gateways (role all and role
edge on a real nats-server: tests/support/cluster_scrape.py).

The single process's alerts and their checks: tests/deploy/test_alerts.py.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_alerts import (
    ALERTING,
    ALERTS,
    RUNBOOK_URL,
    TESTS,
    _runbook_anchors,
    alert_cases,
    alerts,
    prometheus_rule,
    rules,
    run,
    write_rules,
)
from tests.deploy.test_dashboard import metric_names
from tests.deploy.test_helm import CHART_DIR, NAMESPACE, RELEASE, helm
from tests.support.cluster_scrape import ClusterScrapes, scrape_cluster

PROMTOOL_TESTS = TESTS / "promtool" / "cluster_alerts.test.yaml"
CLUSTER = {"enabled": True, "natsUrls": ["nats://nats:4222"]}
CLUSTER_ALERTING: dict[str, Any] = {**ALERTING, "cluster": CLUSTER}
CLUSTER_ALERTS = {
    "PaxosGatewayClusterNoLeader",
    "PaxosGatewayClusterEdgeLagging",
    "PaxosGatewayClusterNatsDisconnected",
    "PaxosGatewayClusterPublishFailures",
    "PaxosGatewayClusterFencedPublishes",
    "PaxosGatewayClusterEdgeResyncs",
}
CLUSTER_TUNED: dict[str, Any] = {
    "cluster": CLUSTER,
    "prometheusRule": {
        "enabled": True,
        "runbookBaseUrl": RUNBOOK_URL,
        "seriesSelector": 'kubernetes_namespace="md"',
        "alerts": {
            "clusterNoLeader": {"for": "30s", "severity": "page"},
            "clusterEdgeLagging": {"thresholdSeconds": 2.5, "for": "1m"},
            "clusterNatsDisconnected": {"enabled": False},
            "clusterPublishFailures": {"window": "1h", "threshold": 100},
            "clusterFencedPublishes": {"window": "1h"},
            "clusterEdgeResyncs": {"threshold": 3},
        },
    },
}


def _cluster_keys() -> list[str]:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    return [key for key in values["prometheusRule"]["alerts"] if key.startswith("cluster")]


def test_cluster_alerts_only_in_cluster_mode(chart: Any) -> None:
    assert set(alerts(prometheus_rule(chart, ALERTING))) == ALERTS
    assert set(alerts(prometheus_rule(chart, CLUSTER_ALERTING))) == ALERTS | CLUSTER_ALERTS
    assert len(_cluster_keys()) == len(CLUSTER_ALERTS)


def test_only_cluster_alerts_enabled_without_cluster_mode_is_an_empty_list(chart: Any) -> None:
    # The cluster alerts are not rendered without cluster mode: they must not count as
    # enabled, or the group would be rendered with no rules at all (rules: null).
    values = copy.deepcopy(ALERTING)
    values["prometheusRule"]["alerts"] = {
        key: {"enabled": key.startswith("cluster")} for key in _all_keys()
    }
    assert rules(prometheus_rule(chart, values)) == []
    values["cluster"] = CLUSTER
    assert {r["alert"] for r in rules(prometheus_rule(chart, values))} == CLUSTER_ALERTS


def _all_keys() -> list[str]:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    return list(values["prometheusRule"]["alerts"])


def test_tuning_reaches_the_cluster_expressions(chart: Any) -> None:
    tuned = alerts(prometheus_rule(chart, CLUSTER_TUNED))
    assert "PaxosGatewayClusterNatsDisconnected" not in tuned
    for name in CLUSTER_ALERTS - {"PaxosGatewayClusterNatsDisconnected"}:
        assert '{kubernetes_namespace="md"' in tuned[name]["expr"], name
    no_leader = tuned["PaxosGatewayClusterNoLeader"]
    assert (no_leader["for"], no_leader["labels"]["severity"]) == ("30s", "page")
    assert tuned["PaxosGatewayClusterEdgeLagging"]["expr"].endswith("> 2.5")
    assert tuned["PaxosGatewayClusterEdgeLagging"]["for"] == "1m"
    assert "[1h]) > 100" in tuned["PaxosGatewayClusterPublishFailures"]["expr"]
    assert "[1h]) > 0" in tuned["PaxosGatewayClusterFencedPublishes"]["expr"]
    assert tuned["PaxosGatewayClusterEdgeResyncs"]["expr"].endswith("> 3")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"clusterEdgeLagging": {"thresholdSeconds": 0}}, "/thresholdSeconds"),
        ({"clusterNoLeader": {"for": "a minute"}}, "/clusterNoLeader/for"),
        ({"clusterFencedPublishes": {"threshold": -1}}, "/clusterFencedPublishes/threshold"),
    ],
)
def test_schema_rejects_bad_cluster_alert_values(
    chart: Any, values: dict[str, Any], message: str
) -> None:
    merged = {"prometheusRule": {"enabled": True, "runbookBaseUrl": RUNBOOK_URL, "alerts": values}}
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.render(merged, name=RELEASE, namespace=NAMESPACE)
    assert message in str(caught.value)


def test_every_cluster_alert_has_a_runbook_section(chart: Any) -> None:
    anchors = _runbook_anchors()
    for name, alert in alerts(prometheus_rule(chart, CLUSTER_ALERTING)).items():
        annotations = alert["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        url, _, anchor = annotations["runbook_url"].partition("#")
        assert url == RUNBOOK_URL and anchor == name.lower() and anchor in anchors, name


# -- promtool ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        CLUSTER_ALERTING,
        CLUSTER_TUNED,
        {**CLUSTER_ALERTING, "metrics": {"serviceMonitor": {"enabled": False}}},
    ],
    ids=["cluster", "cluster-tuned", "cluster-no-servicemonitor"],
)
def test_promtool_check_cluster_rules(
    chart: Any, promtool: str, values: dict[str, Any], tmp_path: Path
) -> None:
    rule = prometheus_rule(chart, values)
    path = write_rules(rule, tmp_path)
    result = run([promtool, "check", "rules", str(path)], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules(rule))} rules found" in result.stdout


def test_promtool_unit_tests_of_the_cluster_alerts(
    chart: Any, promtool: str, tmp_path: Path
) -> None:
    write_rules(prometheus_rule(chart, CLUSTER_ALERTING), tmp_path)
    shutil.copy(PROMTOOL_TESTS, tmp_path / PROMTOOL_TESTS.name)
    result = run([promtool, "test", "rules", PROMTOOL_TESTS.name], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    # A wrong expectation fails: the cases check something.
    text = PROMTOOL_TESTS.read_text().replace("threshold 10s", "threshold 11s")
    (tmp_path / "wrong.test.yaml").write_text(text)
    result = run([promtool, "test", "rules", "wrong.test.yaml"], tmp_path)
    assert result.returncode != 0
    assert "PaxosGatewayClusterEdgeLagging" in result.stdout + result.stderr


def test_each_cluster_alert_has_a_firing_and_a_silent_case() -> None:
    firing, silent = alert_cases(PROMTOOL_TESTS)
    assert firing == CLUSTER_ALERTS
    assert silent == CLUSTER_ALERTS


# -- the metrics exist on a real cluster-mode gateway --------------------------------------------


@pytest.fixture(scope="module")
def cluster_scrapes(tmp_path_factory: pytest.TempPathFactory) -> ClusterScrapes:
    return scrape_cluster(tmp_path_factory.mktemp("cluster-scrape"))


def test_every_metric_the_cluster_rules_query_is_exposed(
    chart: Any, cluster_scrapes: ClusterScrapes
) -> None:
    exposed = {s.name for s in cluster_scrapes.all_role.samples}
    queried: set[str] = set()
    for alert in rules(prometheus_rule(chart, CLUSTER_ALERTING)):
        if alert["alert"] in CLUSTER_ALERTS:
            names = metric_names(alert["expr"])
            assert names and all(n.startswith("paxos_gateway_cluster_") for n in names), names
            queried |= names
    assert queried - exposed == set()
    assert len(queried) == 5
    # The labels they select on exist too.
    publishes = cluster_scrapes.all_role.find("cluster_publishes_total")
    assert {"failed", "fenced"} <= {s.labels.get("outcome") for s in publishes}


def test_an_edge_exports_no_upstream_connection_for_upstream_down_to_see(
    cluster_scrapes: ClusterScrapes,
) -> None:
    # PaxosGatewayUpstreamDown is upstream_connected == 0: an edge, which holds no upstream
    # connection, must not export the series at 0 (it would fire on every edge).
    assert cluster_scrapes.edge.find("upstream_connected") == []
    assert cluster_scrapes.edge.value("cluster_edge_caught_up") == 1
    # The leader's do exist (the same scrape path sees them).
    assert cluster_scrapes.all_role.find("upstream_connected")


def test_the_info_metric_shows_the_epoch_served(cluster_scrapes: ClusterScrapes) -> None:
    for scraped, own in zip(
        (cluster_scrapes.all_role, cluster_scrapes.edge), cluster_scrapes.own_epochs, strict=True
    ):
        (info,) = scraped.find("info")
        assert info.labels["epoch"] == cluster_scrapes.cluster_epoch
        assert own != cluster_scrapes.cluster_epoch
