"""The chart's cluster mode (issue 14, docs/cluster.md), the workloads: with `cluster.enabled`
an ingest Deployment (a lease leader and warm standbys) and the edges (the subscriber-facing
Deployment with its Service, HPA and PDB), each with its role, holder id, probes, resources,
disruption budget and placement; with it off, the single process exactly as before. Helm's own
engine (helm-python-sdk) renders; helm lint and the strict Kubernetes validation run over
test_helm.py's SCENARIOS, the cluster ones among them. The configuration side (`[cluster]`,
NetworkPolicy, monitoring, refused values): test_helm_cluster_config.py."""

from __future__ import annotations

import copy
import tomllib
from typing import Any

import pytest

from gateway.app import shutdown_bound
from tests.deploy.test_dockerfile import exec_form, final_stage
from tests.deploy.test_helm import (
    CLUSTER_ON,
    FULLNAME,
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    chart,
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
