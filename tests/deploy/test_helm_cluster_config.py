"""The chart's cluster mode (issue 14), the configuration side: the `[cluster]` section of
gateway.toml and the rendered workloads through the gateway's own command line and config
loader, NATS URLs from a Secret, the NetworkPolicies (edges reach only DNS and NATS), the role on
every scraped series, and the values the schema or the templates refuse. The workloads
themselves: test_helm_cluster.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_helm import (
    CLUSTER_ON,
    EVERYTHING_ON,
    FULLNAME,
    NAMESPACE,
    RELEASE,
    chart,
    helm,
    one,
    render,
)
from tests.deploy.test_helm_cluster import (
    CLUSTER_TYPES,
    INGEST,
    NATS_URLS,
    container_of,
    merged,
    pod,
    toml_of,
    with_cluster,
)

__all__ = ["chart"]  # the module-scoped fixture, shared with test_helm.py


# -- the [cluster] section of gateway.toml ---------------------------------------------------------


def test_cluster_section_follows_the_contract(chart: Any) -> None:
    cluster = toml_of(render(chart, CLUSTER_ON))["cluster"]
    assert set(cluster) == set(CLUSTER_TYPES)  # role and holder: per workload and pod
    for key, kind in CLUSTER_TYPES.items():
        assert type(cluster[key]) is kind, key
    assert cluster["nats_urls"] == NATS_URLS
    assert cluster["stream_replicas"] == 3  # JetStream R3, on a 3-node NATS cluster
    assert cluster["lease_ttl"] == 3.0
    values = with_cluster(
        config={"cluster": {"stream_replicas": 1, "lease_ttl": 2, "max_age": None}}
    )
    tuned = toml_of(render(chart, values))["cluster"]
    assert tuned["stream_replicas"] == 1
    assert tuned["lease_ttl"] == 2.0 and type(tuned["lease_ttl"]) is float
    assert "max_age" not in tuned  # null: the gateway's default


@pytest.mark.parametrize(("name", "role"), [(FULLNAME, "edge"), (INGEST, "ingest")])
def test_the_gateway_runs_each_rendered_workload_in_its_role(
    chart: Any, name: str, role: str, tmp_path: Path
) -> None:
    # The container's args and env through the gateway's own command line and config loader,
    # the ConfigMap's gateway.toml where the args name it.
    from gateway.cli import build_parser
    from gateway.config import from_args

    manifests = render(chart, CLUSTER_ON)
    gateway = container_of(manifests, name)
    path = tmp_path / "gateway.toml"
    path.write_text(one(manifests, "ConfigMap")["data"]["gateway.toml"])
    args = [str(path) if a.endswith("/gateway.toml") else a for a in gateway["args"]]
    pod_name = f"{name}-7d9c8b6f5-x2x4q"  # what the downward API gives the container
    env = {e["name"]: pod_name for e in gateway["env"] if "fieldRef" in e.get("valueFrom", {})}
    config = from_args(build_parser().parse_args(args), env)
    assert config.cluster.enabled
    assert config.cluster.role == role
    assert config.cluster.holder == pod_name
    assert config.cluster.nats_urls == tuple(NATS_URLS)
    assert config.cluster.stream_replicas == 3
    assert config.server.host == "0.0.0.0" and config.metrics.host == "0.0.0.0"


def test_nats_urls_from_a_secret(chart: Any, tmp_path: Path) -> None:
    # Credentials in the URLs stay out of the ConfigMap: both roles read them from the Secret.
    from gateway.cli import build_parser
    from gateway.config import from_args

    values = merged(CLUSTER_ON, {"cluster": {"natsUrls": [], "natsUrlsSecret": {"name": "nats"}}})
    manifests = render(chart, values)
    assert "nats_urls" not in toml_of(manifests)["cluster"]
    for name in (FULLNAME, INGEST):
        env = {e["name"]: e for e in container_of(manifests, name)["env"]}
        assert env["PAXOS_GATEWAY__CLUSTER__NATS_URLS"]["valueFrom"] == {
            "secretKeyRef": {"name": "nats", "key": "urls"}
        }
    # What the gateway makes of it: the Secret's comma-separated value as the URL list.
    path = tmp_path / "gateway.toml"
    path.write_text(one(manifests, "ConfigMap")["data"]["gateway.toml"])
    args = build_parser().parse_args(["run", "--config", str(path), "--role", "edge"])
    secret = "nats://gw:s3cret@nats-0.nats:4222, nats://gw:s3cret@nats-1.nats:4222"
    config = from_args(args, {"PAXOS_GATEWAY__CLUSTER__NATS_URLS": secret})
    assert config.cluster.nats_urls == (
        "nats://gw:s3cret@nats-0.nats:4222",
        "nats://gw:s3cret@nats-1.nats:4222",
    )
    # The egress rule cannot read the Secret: NATS's port, or networkPolicy.nats.port.
    edge = one(manifests, "NetworkPolicy", FULLNAME)["spec"]
    assert set(rules_by_port(edge, "egress")) == {(53, 53), (4222,)}


# -- network policy, monitoring --------------------------------------------------------------------


def rules_by_port(policy: dict[str, Any], direction: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(p["port"] for p in rule["ports"]): rule for rule in policy.get(direction, [])}


def test_edges_reach_only_dns_and_nats(chart: Any) -> None:
    values = with_cluster()
    values["networkPolicy"] = {
        "nats": {
            "port": 4223,
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "nats"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "nats"}},
            "cidrs": ["10.20.0.0/16"],
        }
    }
    manifests = render(chart, values)
    edge = one(manifests, "NetworkPolicy", FULLNAME)["spec"]
    assert edge["policyTypes"] == ["Ingress", "Egress"]
    assert set(rules_by_port(edge, "ingress")) == {("ws",), ("metrics",)}
    egress = rules_by_port(edge, "egress")
    assert set(egress) == {(53, 53), (4223,)}  # no Paxos: edges hold no upstream connection
    assert {p["protocol"] for p in egress[(53, 53)]["ports"]} == {"UDP", "TCP"}
    assert egress[(4223,)]["to"] == [
        {
            "namespaceSelector": values["networkPolicy"]["nats"]["namespaceSelector"],
            "podSelector": values["networkPolicy"]["nats"]["podSelector"],
        },
        {"ipBlock": {"cidr": "10.20.0.0/16"}},
    ]
    # Ingest: the ops port only, and no egress rules (it must reach Paxos, NATS and DNS).
    ingest = one(manifests, "NetworkPolicy", INGEST)["spec"]
    assert ingest["policyTypes"] == ["Ingress"]
    assert set(rules_by_port(ingest, "ingress")) == {("metrics",)}
    assert (
        rules_by_port(ingest, "ingress")[("metrics",)]
        == rules_by_port(edge, "ingress")[("metrics",)]
    )


def test_nats_egress_defaults_and_switch(chart: Any) -> None:
    edge = one(render(chart, CLUSTER_ON), "NetworkPolicy", FULLNAME)["spec"]
    nats = rules_by_port(edge, "egress")[(4222,)]
    assert "to" not in nats  # no selector given: any destination on the NATS port
    # No port given: the ports of the URLs, NATS's 4222 where a URL names none.
    urls = ["nats://a.nats:4223", "tls://b.nats", "nats://[fd00::1]:4224", "nats://c:4223"]
    values = with_cluster(cluster={"natsUrls": urls})
    edge = one(render(chart, values), "NetworkPolicy", FULLNAME)["spec"]
    assert set(rules_by_port(edge, "egress")) == {(53, 53), (4223, 4222, 4224)}
    # {} is a selector (every namespace), not "unset".
    values = with_cluster(networkPolicy={"nats": {"namespaceSelector": {}}})
    edge = one(render(chart, values), "NetworkPolicy", FULLNAME)["spec"]
    assert rules_by_port(edge, "egress")[(4222,)]["to"] == [{"namespaceSelector": {}}]
    values = with_cluster(networkPolicy={"restrictEdgeEgress": False})
    edge = one(render(chart, values), "NetworkPolicy", FULLNAME)["spec"]
    assert edge["policyTypes"] == ["Ingress"] and "egress" not in edge


def test_both_roles_are_scraped_with_their_role(chart: Any) -> None:
    values = with_cluster(metrics={"serviceMonitor": {"enabled": True}})
    manifests = render(chart, values)
    monitor = one(manifests, "ServiceMonitor")["spec"]
    assert monitor["podTargetLabels"] == ["app.kubernetes.io/component"]
    assert "podTargetLabels" not in one(render(chart, EVERYTHING_ON), "ServiceMonitor")["spec"]
    # Without a ServiceMonitor, the scrape annotations are on both roles' pods.
    annotated = render(chart, CLUSTER_ON)
    for name in (FULLNAME, INGEST):
        annotations = pod(annotated, name)["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == "9108"


# -- bad values ------------------------------------------------------------------------------------


BAD_CLUSTER_VALUES = [
    pytest.param({"cluster": {"natsUrls": ["http://nats:4222"]}}, "/cluster/natsUrls/0", id="url"),
    pytest.param({"cluster": {"enabled": "yes"}}, "/cluster/enabled", id="enabled-type"),
    pytest.param(
        {"cluster": {"ingest": {"replicaCount": 0}}},
        "/cluster/ingest/replicaCount",
        id="no-ingest",
    ),
    pytest.param(
        {"cluster": {"ingest": {"podAntiAffinity": "maybe"}}},
        "/cluster/ingest/podAntiAffinity",
        id="anti-affinity",
    ),
    pytest.param(
        {"cluster": {"ingest": {"podDisruptionBudget": {"maxUnavailable": 0}}}},
        "/cluster/ingest/podDisruptionBudget/maxUnavailable",
        id="pdb-zero",
    ),
    pytest.param(
        {"cluster": {"ingest": {"probes": {"readiness": {"periodSeconds": 0}}}}},
        "/cluster/ingest/probes/readiness/periodSeconds",
        id="probe",
    ),
    pytest.param(
        {"cluster": {"ingest": {"replicas": 2}}}, "additional properties 'replicas'", id="typo"
    ),
    pytest.param(
        {"config": {"cluster": {"lease_ttl": 0.1}}}, "/config/cluster/lease_ttl", id="lease-ttl"
    ),
    pytest.param(
        {"config": {"cluster": {"stream_replicas": 7}}},
        "/config/cluster/stream_replicas",
        id="replicas-max",
    ),
    pytest.param(
        {"config": {"cluster": {"stream_replicas": 2.5}}},
        "/config/cluster/stream_replicas",
        id="replicas-int",
    ),
    pytest.param(
        {"config": {"cluster": {"role": "ingest"}}},
        "additional properties 'role'",
        id="role-is-the-charts",
    ),
    pytest.param(
        {"config": {"cluster": {"nats_urls": ["nats://x:4222"]}}},
        "additional properties 'nats_urls'",
        id="urls-in-cluster-values",
    ),
    pytest.param(
        {"networkPolicy": {"nats": {"port": 0}}}, "/networkPolicy/nats/port", id="nats-port"
    ),
    pytest.param(
        {"networkPolicy": {"nats": {"cidrs": ["nats.example.com"]}}},
        "/networkPolicy/nats/cidrs/0",
        id="nats-cidr",
    ),
]


@pytest.mark.parametrize(("values", "message"), BAD_CLUSTER_VALUES)
def test_schema_rejects_bad_cluster_values(
    chart: Any, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(caught.value)


CLUSTER_TEMPLATE_FAILURES = [
    pytest.param(
        {"cluster": {"enabled": True}},
        "cluster.enabled: cluster.natsUrls is empty; name the NATS servers",
        id="enabled-without-urls",
    ),
    pytest.param(
        {"cluster": {"natsUrls": ["nats://nats:4222"]}},
        "cluster.natsUrls (or natsUrlsSecret) is set but cluster.enabled is false",
        id="urls-without-enabled",
    ),
    pytest.param(
        {"cluster": {"natsUrlsSecret": {"name": "nats"}}},
        "cluster.natsUrls (or natsUrlsSecret) is set but cluster.enabled is false",
        id="secret-without-enabled",
    ),
    pytest.param(
        merged(CLUSTER_ON, {"cluster": {"natsUrlsSecret": {"name": "nats"}}}),
        "cluster.natsUrls and cluster.natsUrlsSecret.name are both set",
        id="urls-twice",
    ),
    pytest.param(
        with_cluster(extraEnv=[{"name": "PAXOS_GATEWAY__CLUSTER__ROLE", "value": "all"}]),
        "extraEnv: PAXOS_GATEWAY__CLUSTER__ROLE is the chart's",
        id="role-by-env",
    ),
    pytest.param(
        {"extraEnv": [{"name": "paxos_gateway__cluster__nats_urls", "value": "nats://x"}]},
        "extraEnv: paxos_gateway__cluster__nats_urls is the chart's",
        id="urls-by-env",
    ),
]


@pytest.mark.parametrize(("values", "message"), CLUSTER_TEMPLATE_FAILURES)
def test_templates_reject_an_incomplete_cluster(
    chart: Any, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
