"""The chart's cluster mode (issue 14, docs/cluster.md): with `cluster.enabled` an ingest
Deployment (a lease leader and warm standbys) and the edges (the subscriber-facing Deployment
with its Service, HPA and PDB), each with its role, probes, disruption budget and network
policy; with it off, the single process exactly as before. Helm's own engine (helm-python-sdk)
renders; helm lint and the strict Kubernetes validation run over test_helm.py's SCENARIOS,
"cluster-on" and "cluster-everything-on" among them; the config contract is the issue's
`[cluster]` section (gateway/config, docs/cluster.md)."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.app import shutdown_bound
from tests.deploy.test_dockerfile import exec_form, final_stage
from tests.deploy.test_helm import (
    CLUSTER_ON,
    EVERYTHING_ON,
    FULLNAME,
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    chart,
    helm,
    one,
    render,
)

__all__ = ["chart"]  # the module-scoped fixture, shared with test_helm.py

INGEST = f"{FULLNAME}-ingest"
NATS_URLS = CLUSTER_ON["cluster"]["natsUrls"]
# The contract's [cluster] keys and TOML types (nats_urls, role and holder are the chart's).
CLUSTER_TYPES: dict[str, type] = {
    "nats_urls": list,
    "lease_ttl": float,
    "stream_replicas": int,
    "max_age": float,
    "duplicate_window": float,
    "checkpoint_interval": float,
    "resume_wait": float,
    "connect_timeout": float,
}


def pod(manifests: list[dict[str, Any]], name: str) -> dict[str, Any]:
    spec: dict[str, Any] = one(manifests, "Deployment", name)["spec"]["template"]
    return spec


def container_of(manifests: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (gateway,) = pod(manifests, name)["spec"]["containers"]
    assert isinstance(gateway, dict)
    return gateway


def toml_of(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return tomllib.loads(one(manifests, "ConfigMap")["data"]["gateway.toml"])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` over `base`, maps merged key by key (as Helm merges values files)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def with_cluster(**extra: Any) -> dict[str, Any]:
    """CLUSTER_ON with `extra` merged over it."""
    return merged(CLUSTER_ON, extra)


# -- cluster off: the single process, unchanged ----------------------------------------------------


CLUSTER_KNOBS_OFF: dict[str, Any] = {
    "cluster": {
        "enabled": False,
        "ingest": {
            "replicaCount": 5,
            "podAntiAffinity": "hard",
            "resources": {"requests": {"cpu": "2"}},
            "podDisruptionBudget": {"maxUnavailable": 2},
        },
    },
    "config": {"cluster": {"lease_ttl": 9.0, "stream_replicas": 1}},
    "networkPolicy": {"restrictEdgeEgress": False, "nats": {"port": 7422, "cidrs": ["10.0.0.0/8"]}},
}


@pytest.mark.parametrize("scenario", ["defaults", "everything-on", "auth-on"])
def test_cluster_settings_are_inert_while_cluster_is_off(chart: Any, scenario: str) -> None:
    # Every cluster knob moved, cluster still off: byte for byte the same manifests.
    values = merged(SCENARIOS[scenario], CLUSTER_KNOBS_OFF)
    assert chart.render(values, name=RELEASE, namespace=NAMESPACE) == chart.render(
        SCENARIOS[scenario], name=RELEASE, namespace=NAMESPACE
    )


def test_cluster_off_is_the_single_process(chart: Any) -> None:
    manifests = render(chart)
    names = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    assert names == {
        ("ConfigMap", FULLNAME),
        ("Deployment", FULLNAME),
        ("NetworkPolicy", FULLNAME),
        ("PodDisruptionBudget", FULLNAME),
        ("Service", FULLNAME),
        ("Service", f"{FULLNAME}-metrics"),
        ("ServiceAccount", FULLNAME),
    }
    gateway = container_of(manifests, FULLNAME)
    cmd = final_stage().last("CMD")
    assert cmd is not None
    assert gateway["args"] == exec_form(cmd)  # no --role
    assert "env" not in gateway
    assert "cluster" not in toml_of(manifests)
    # Selectors as before cluster mode: no component, so an upgrade keeps the Deployment.
    selector = one(manifests, "Deployment")["spec"]["selector"]["matchLabels"]
    assert selector == {
        "app.kubernetes.io/name": "paxos-gateway",
        "app.kubernetes.io/instance": RELEASE,
    }
    assert one(manifests, "Service")["spec"]["selector"] == selector
    assert all(
        m["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway" for m in manifests
    )
    assert one(manifests, "NetworkPolicy")["spec"]["policyTypes"] == ["Ingress"]


# -- cluster on: two workloads ---------------------------------------------------------------------


def test_cluster_on_renders_an_ingest_and_an_edge_workload(chart: Any) -> None:
    manifests = render(chart, CLUSTER_ON)
    names = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    assert names == {
        ("ConfigMap", FULLNAME),
        ("Deployment", FULLNAME),
        ("Deployment", INGEST),
        ("NetworkPolicy", FULLNAME),
        ("NetworkPolicy", INGEST),
        ("PodDisruptionBudget", FULLNAME),
        ("PodDisruptionBudget", INGEST),
        ("Service", FULLNAME),
        ("Service", f"{FULLNAME}-metrics"),
        ("ServiceAccount", FULLNAME),
    }
    roles = {
        name: pod(manifests, name)["metadata"]["labels"]["app.kubernetes.io/component"]
        for name in (FULLNAME, INGEST)
    }
    assert roles == {FULLNAME: "edge", INGEST: "ingest"}
    assert one(manifests, "Deployment", INGEST)["spec"]["replicas"] == 2  # leader + standby
    assert one(manifests, "Deployment", FULLNAME)["spec"]["replicas"] == 2


@pytest.mark.parametrize(("name", "role"), [(FULLNAME, "edge"), (INGEST, "ingest")])
def test_each_workload_gets_its_role_and_the_pod_name_as_holder(
    chart: Any, name: str, role: str
) -> None:
    values = with_cluster(extraEnv=[{"name": "PAXOS_GATEWAY__LOG__LEVEL", "value": "debug"}])
    gateway = container_of(render(chart, values), name)
    cmd = final_stage().last("CMD")
    assert cmd is not None
    assert gateway["args"] == [*exec_form(cmd), "--role", role]
    holder, extra = gateway["env"]
    assert holder == {
        "name": "PAXOS_GATEWAY__CLUSTER__HOLDER",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
    }
    assert extra == values["extraEnv"][0]


def test_probes_follow_each_roles_readiness(chart: Any) -> None:
    values = with_cluster()
    values["cluster"]["ingest"] = {"probes": {"readiness": {"periodSeconds": 7}}}
    manifests = render(chart, values)
    for name in (FULLNAME, INGEST):
        gateway = container_of(manifests, name)
        paths = {
            p: gateway[p]["httpGet"] for p in ("startupProbe", "livenessProbe", "readinessProbe")
        }
        assert paths == {
            "startupProbe": {"path": "/healthz", "port": "metrics"},
            "livenessProbe": {"path": "/healthz", "port": "metrics"},
            "readinessProbe": {"path": "/readyz", "port": "metrics"},
        }
    # Each role's probe settings are its own.
    assert container_of(manifests, INGEST)["readinessProbe"]["periodSeconds"] == 7
    assert container_of(manifests, FULLNAME)["readinessProbe"]["periodSeconds"] == 5


def test_ingest_serves_no_subscribers(chart: Any) -> None:
    manifests = render(chart, CLUSTER_ON)
    ingest = container_of(manifests, INGEST)
    assert [p["name"] for p in ingest["ports"]] == ["metrics"]
    assert [p["name"] for p in container_of(manifests, FULLNAME)["ports"]] == ["ws", "metrics"]
    # No Service sends it traffic: no preStop sleep, a grace period of the shutdown alone.
    assert "lifecycle" not in ingest
    grace = pod(manifests, INGEST)["spec"]["terminationGracePeriodSeconds"]
    assert isinstance(grace, int)
    assert shutdown_bound(10.0) + 1 <= grace <= shutdown_bound(10.0) + 10
    assert pod(manifests, FULLNAME)["spec"]["terminationGracePeriodSeconds"] == 5 + 11 + 2
    assert ingest["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"memory": "1Gi"},
    }


def test_resources_per_role(chart: Any) -> None:
    values = with_cluster(resources={"requests": {"cpu": "1", "memory": "2Gi"}})
    values["cluster"]["ingest"] = {"resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}}
    manifests = render(chart, values)
    assert container_of(manifests, FULLNAME)["resources"]["requests"] == {
        "cpu": "1",
        "memory": "2Gi",
    }
    assert container_of(manifests, INGEST)["resources"]["requests"] == {
        "cpu": "500m",
        "memory": "512Mi",
    }


def test_selectors_keep_the_roles_apart(chart: Any) -> None:
    manifests = render(chart, with_cluster(autoscaling={"enabled": True}))
    edge_labels = pod(manifests, FULLNAME)["metadata"]["labels"]
    ingest_labels = pod(manifests, INGEST)["metadata"]["labels"]
    edge_only = [
        one(manifests, "Deployment", FULLNAME)["spec"]["selector"]["matchLabels"],
        one(manifests, "Service", FULLNAME)["spec"]["selector"],
        one(manifests, "PodDisruptionBudget", FULLNAME)["spec"]["selector"]["matchLabels"],
        one(manifests, "NetworkPolicy", FULLNAME)["spec"]["podSelector"]["matchLabels"],
    ]
    ingest_only = [
        one(manifests, "Deployment", INGEST)["spec"]["selector"]["matchLabels"],
        one(manifests, "PodDisruptionBudget", INGEST)["spec"]["selector"]["matchLabels"],
        one(manifests, "NetworkPolicy", INGEST)["spec"]["podSelector"]["matchLabels"],
    ]
    for selector in edge_only:
        assert selects(selector, edge_labels) and not selects(selector, ingest_labels)
    for selector in ingest_only:
        assert selects(selector, ingest_labels) and not selects(selector, edge_labels)
    # The ops port's Service (and so the ServiceMonitor) reaches both roles.
    metrics = one(manifests, "Service", f"{FULLNAME}-metrics")["spec"]["selector"]
    assert selects(metrics, edge_labels) and selects(metrics, ingest_labels)
    # The HPA scales the edges; the ingest replica count stays fixed.
    hpa = one(manifests, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert hpa["name"] == FULLNAME
    assert "replicas" not in one(manifests, "Deployment", FULLNAME)["spec"]
    assert one(manifests, "Deployment", INGEST)["spec"]["replicas"] == 2


def test_ingest_pdb_keeps_at_most_one_pod_disrupted(chart: Any) -> None:
    manifests = render(chart, CLUSTER_ON)
    spec = one(manifests, "PodDisruptionBudget", INGEST)["spec"]
    assert spec["maxUnavailable"] == 1
    assert "minAvailable" not in spec
    # An unready standby must not block every node drain.
    assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert one(manifests, "PodDisruptionBudget", FULLNAME)["spec"]["maxUnavailable"] == 1
    values = with_cluster()
    values["cluster"]["ingest"] = {"podDisruptionBudget": {"enabled": False}}
    names = {
        m["metadata"]["name"] for m in render(chart, values) if m["kind"] == "PodDisruptionBudget"
    }
    assert names == {FULLNAME}


def test_ingest_pods_avoid_sharing_a_node(chart: Any) -> None:
    def affinity(ingest: dict[str, Any]) -> Any:
        values = with_cluster()
        values["cluster"]["ingest"] = ingest
        return pod(render(chart, values), INGEST)["spec"].get("affinity")

    selector = one(render(chart, CLUSTER_ON), "Deployment", INGEST)["spec"]["selector"]
    (soft,) = affinity({})["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert soft["weight"] == 100
    assert soft["podAffinityTerm"] == {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": selector,
    }
    (hard,) = affinity({"podAntiAffinity": "hard"})["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert hard == {"topologyKey": "kubernetes.io/hostname", "labelSelector": selector}
    assert affinity({"podAntiAffinity": "none"}) is None
    own = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "topology.kubernetes.io/zone", "labelSelector": selector}
            ]
        },
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["md"]}]}
                ]
            }
        },
    }
    assert affinity({"affinity": own}) == own  # its own podAntiAffinity wins over the preset
    # The edges keep the chart's spread over nodes, with their own selector.
    (spread,) = pod(render(chart, CLUSTER_ON), FULLNAME)["spec"]["topologySpreadConstraints"]
    assert (
        spread["labelSelector"] == one(render(chart, CLUSTER_ON), "Deployment")["spec"]["selector"]
    )
    spread_ingest = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                      "whenUnsatisfiable": "ScheduleAnyway"}]  # fmt: skip
    values = with_cluster()
    values["cluster"]["ingest"] = {"topologySpreadConstraints": spread_ingest}
    (zone,) = pod(render(chart, values), INGEST)["spec"]["topologySpreadConstraints"]
    assert zone == {**spread_ingest[0], "labelSelector": selector}


def test_both_workloads_roll_on_a_config_change(chart: Any) -> None:
    def checksums(values: dict[str, Any]) -> tuple[str, str]:
        manifests = render(chart, values)
        edge, ingest = (
            pod(manifests, name)["metadata"]["annotations"]["checksum/config"]
            for name in (FULLNAME, INGEST)
        )
        return edge, ingest

    base = checksums(CLUSTER_ON)
    assert base[0] == base[1]  # one ConfigMap for both roles
    changed = with_cluster(config={"cluster": {"lease_ttl": 5.0}})
    assert checksums(changed)[0] != base[0]


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
