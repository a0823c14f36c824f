"""The Grafana dashboard shipped with the chart queries only metrics the gateway exposes, and
graphs every metric the gateway exposes.

The exposition is the real one: ``/metrics`` of a running gateway (in-process, against the
simulator) scraped over a socket after ``tests.test_metrics.drive_traffic`` has made every
metric move (subscribers, resumes, conflations, slow disconnects, malformed frames, a crossed
book, an outage with refused reconnects). So a metric that the gateway declares but never
registers, or registers under another name, fails here; a hand-made registry could not tell.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from gateway.io.metrics import PREFIX
from tests.support.cluster_scrape import scrape_cluster
from tests.support.metrics_traffic import EXPECTED_TYPES, drive_traffic, running_gateway

DASHBOARD = (
    Path(__file__).resolve().parents[2]
    / "helm"
    / "paxos-gateway"
    / "dashboards"
    / "paxos-gateway.json"
)

CLUSTER = f"{PREFIX}_cluster_"

# PromQL words that look like metric names but are not.
KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}  # fmt: skip
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
# An identifier that is not part of a number, a $variable or a function call.
_IDENT = re.compile(r"(?<![\w$.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$", re.S)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    expr = _STRINGS.sub('""', expr)
    expr = _MATCHERS.sub("", expr)
    expr = _RANGES.sub("", expr)
    expr = _GROUPING.sub("", expr)
    return {name for name in _IDENT.findall(expr) if name.lower() not in KEYWORDS}


def test_metric_names_parser() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (feed, le) (rate(a_bucket{job=~"$job", x="b c"}'
        "[$__rate_interval]))) / on (feed) group_left sum without (kind) (b_total offset 5m)"
        " > bool 1e3 and c"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text)
        assert match, f"variable {variable['name']}: only label_values(...) is understood"
        yield f"variable {variable['name']!r}", match.group(1)


async def _scrape_after_traffic() -> str:
    async with running_gateway() as running:
        observed = await drive_traffic(running)
    return observed.end.text


@pytest.fixture(scope="module")
def exposition() -> dict[str, set[str]]:
    """Family name -> the sample names a scrape of a running gateway carries."""
    text = trio.run(_scrape_after_traffic)
    families: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = {sample.name for sample in family.samples}
        assert families[family.name], f"{family.name} has no samples after the traffic"
    return families


def test_the_scrape_has_every_metric_of_the_issue(exposition: dict[str, set[str]]) -> None:
    missing = {PREFIX + "_" + name for name in EXPECTED_TYPES} - set(exposition)
    assert not missing, sorted(missing)


@pytest.fixture(scope="module")
def cluster_exposition(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Family name -> sample names, of the cluster series (``paxos_gateway_cluster_*``) a
    real cluster-mode gateway of role ``all`` exposes (tests/support/cluster_scrape.py)."""
    scraped = scrape_cluster(tmp_path_factory.mktemp("cluster-scrape")).all_role
    return {
        family.name: {sample.name for sample in family.samples}
        for family in text_string_to_metric_families(scraped.text)
        if family.name.startswith(CLUSTER)
    }


def test_every_queried_metric_is_exposed(
    exposition: dict[str, set[str]], cluster_exposition: dict[str, set[str]]
) -> None:
    # The cluster series against the cluster-mode gateway, the rest against the single one.
    exposed = set().union(*exposition.values())
    cluster_exposed = set().union(*cluster_exposition.values())
    seen = cluster = 0
    for where, expr in queries(load_dashboard()):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        seen += 1
        cluster += any(name.startswith(CLUSTER) for name in names)
        missing = {n for n in names if not n.startswith(CLUSTER)} - exposed
        missing |= {n for n in names if n.startswith(CLUSTER)} - cluster_exposed
        assert not missing, f"{where} queries {sorted(missing)}, not exposed by the gateway"
    assert seen > 10
    assert cluster >= 10


def test_every_cluster_metric_is_on_the_dashboard(
    cluster_exposition: dict[str, set[str]],
) -> None:
    queried = set().union(*(metric_names(expr) for _, expr in queries(load_dashboard())))
    missing = {
        family
        for family, samples in cluster_exposition.items()
        if not family.endswith("_created") and not samples & queried
    }
    assert not missing, f"cluster metrics not graphed on the dashboard: {sorted(missing)}"
    assert len(cluster_exposition) >= 15


def test_the_cluster_row_and_the_role_variable() -> None:
    dashboard = load_dashboard()
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert "Cluster (NATS JetStream)" in rows
    role = {v["name"]: v for v in dashboard["templating"]["list"]}["role"]
    # The label the chart's ServiceMonitor puts on every series in cluster mode; "All" is .*,
    # which also matches series without it (a single process).
    assert "app_kubernetes_io_component)" in role["query"]["query"]
    assert role["includeAll"] and role["allValue"] == ".*"


def test_every_exposed_metric_is_on_the_dashboard(exposition: dict[str, set[str]]) -> None:
    queried = set().union(*(metric_names(expr) for _, expr in queries(load_dashboard())))
    missing = {
        family
        for family, samples in exposition.items()
        # prometheus_client exposes a counter's or histogram's creation time as a gauge
        # family of its own (<name>_created); nothing to graph.
        if family.startswith(PREFIX) and not family.endswith("_created") and not samples & queried
    }
    assert not missing, f"metrics not graphed on the dashboard: {sorted(missing)}"


def test_dashboard_shape() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "paxos-gateway"
    assert dashboard.get("id") is None  # provisioned: Grafana assigns the id
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            # Every selector is scoped by the dashboard's job/instance variables.
            assert "$job" in target["expr"] and "$instance" in target["expr"], panel["title"]
            assert 'app_kubernetes_io_component=~"$role"' in target["expr"], panel["title"]
