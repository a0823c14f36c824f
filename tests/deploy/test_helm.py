"""The Helm chart, rendered and linted by Helm's own engine (helm-python-sdk bundles Helm's Go
SDK; no helm binary, no cluster), every manifest validated strictly against the Kubernetes
schemas (kubernetes-validate --strict) and the ServiceMonitor against a schema of the CRD kept
in tests/deploy/k8s_schemas/."""

from __future__ import annotations

import copy
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway.app import shutdown_bound
from tests.deploy.test_dockerfile import exec_form, final_stage

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "paxos-gateway"
SERVICEMONITOR_SCHEMA = (
    Path(__file__).resolve().parent / "k8s_schemas" / "servicemonitor-monitoring.coreos.com-v1.json"
)
PROMETHEUSRULE_SCHEMA = (
    Path(__file__).resolve().parent / "k8s_schemas" / "prometheusrule-monitoring.coreos.com-v1.json"
)
CRD_SCHEMAS = {"ServiceMonitor": SERVICEMONITOR_SCHEMA, "PrometheusRule": PROMETHEUSRULE_SCHEMA}
RELEASE, NAMESPACE = "gw", "marketdata"
FULLNAME = f"{RELEASE}-paxos-gateway"


def _load_helm() -> Any:
    try:
        import helm_python as helm

        helm.helm_sdk_version()  # loads the bundled native library
    except Exception as exc:  # ImportError, OSError from ctypes, HelmLibraryError
        pytest.skip(
            f"helm-python-sdk cannot run here ({type(exc).__name__}: {exc})",
            allow_module_level=True,
        )
    return helm


helm = _load_helm()
kubernetes_validate = pytest.importorskip("kubernetes_validate")
from kubernetes_validate.utils import latest_version  # noqa: E402

# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.30.0", latest_version())

EVERYTHING_ON: dict[str, Any] = {
    "autoscaling": {
        "enabled": True,
        "minReplicas": 3,
        "maxReplicas": 12,
        "targetCPUUtilizationPercentage": 60,
        "targetMemoryUtilizationPercentage": 80,
    },
    "metrics": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    },
    "prometheusRule": {
        "enabled": True,
        "labels": {"release": "prometheus"},
        "runbookBaseUrl": "https://github.com/example/paxos-gateway/blob/main/docs/operations.md",
    },
    "networkPolicy": {
        "enabled": True,
        "subscriberNamespaceSelectors": [
            {"matchLabels": {"kubernetes.io/metadata.name": "trading"}},
            {"matchExpressions": [{"key": "team", "operator": "In", "values": ["quant", "risk"]}]},
        ],
        "metricsNamespaceSelectors": [
            {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        ],
    },
    "dashboard": {
        "enabled": True,
        "namespace": "monitoring",
        "annotations": {"grafana_folder": "Market data"},
    },
    "podDisruptionBudget": {"minAvailable": 2},
    "lifecycle": {"preStopSleepSeconds": 5},
    "image": {"digest": "sha256:" + "ab" * 32, "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "registry"}],
    "serviceAccount": {"annotations": {"example.com/role": "gateway"}},
    "podAnnotations": {"example.com/team": "market-data"},
    "podLabels": {"tier": "edge"},
    "commonLabels": {"cost-center": "md"},
    "extraEnv": [
        {"name": "PAXOS_GATEWAY__SERVER__MAX_SUBSCRIBERS", "value": "500"},
        {
            "name": "PAXOS_GATEWAY__UPSTREAM__BASE_URL",
            "valueFrom": {"secretKeyRef": {"name": "gateway-upstream", "key": "base_url"}},
        },
    ],
    "envFrom": [
        {"configMapRef": {"name": "gateway-overrides"}},
        {"secretRef": {"name": "gateway-secrets", "optional": True}, "prefix": "EXTRA_"},
    ],
    "extraVolumes": [
        {"name": "ca-bundle", "configMap": {"name": "corporate-ca"}},
        {"name": "scratch", "emptyDir": {"sizeLimit": "16Mi"}},
    ],
    "extraVolumeMounts": [
        {"name": "ca-bundle", "mountPath": "/etc/ssl/corporate", "readOnly": True},
        {"name": "scratch", "mountPath": "/var/scratch"},
    ],
    "priorityClassName": "high",
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "md", "effect": "NoSchedule"}
    ],
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "paxos-gateway"}},
        }
    ],
    "service": {"type": "LoadBalancer", "annotations": {"example.com/lb": "internal"}},
}

AUTH_ON: dict[str, Any] = {
    "auth": {"existingSecret": "gateway-tokens", "key": "subscriber-tokens"},
    "config": {"server": {"connections_per_ip_per_second": 5, "connection_burst_per_ip": 10}},
}

# Cluster mode (issue 14; tests/deploy/test_helm_cluster.py): an ingest and an edge workload.
CLUSTER_ON: dict[str, Any] = {
    "cluster": {
        "enabled": True,
        "natsUrls": ["nats://nats.nats.svc.cluster.local:4222", "tls://nats-1.example.com:4222"],
    },
}
CLUSTER_EVERYTHING_ON: dict[str, Any] = {
    **copy.deepcopy(EVERYTHING_ON),
    "cluster": {
        **copy.deepcopy(CLUSTER_ON["cluster"]),
        "ingest": {
            "replicaCount": 3,
            "podAntiAffinity": "hard",
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway",
                }
            ],
            "podDisruptionBudget": {"maxUnavailable": "50%"},
        },
    },
    "config": {"cluster": {"stream_replicas": 5, "lease_ttl": 1.5, "resume_wait": 0}},
    "networkPolicy": {
        **copy.deepcopy(EVERYTHING_ON["networkPolicy"]),
        "nats": {
            "port": 4222,
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "nats"}},
            "podSelector": {
                "matchExpressions": [
                    {"key": "app.kubernetes.io/name", "operator": "In", "values": ["nats"]}
                ]
            },
            "cidrs": ["10.20.0.0/16", "fd00::/8"],
        },
    },
}

SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "everything-on": EVERYTHING_ON,
    "auth-on": AUTH_ON,
    "cluster-on": CLUSTER_ON,
    "cluster-everything-on": CLUSTER_EVERYTHING_ON,
    "cluster-urls-secret": {"cluster": {"enabled": True, "natsUrlsSecret": {"name": "nats"}}},
}


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def render(chart: Any, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    rendered: dict[str, str] = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)
    manifests: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return manifests


def one(manifests: list[dict[str, Any]], kind: str, name: str = FULLNAME) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, got {len(found)}"
    return found[0]


def kinds(manifests: list[dict[str, Any]]) -> set[str]:
    return {m["kind"] for m in manifests}


def container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    (gateway,) = pod["containers"]
    assert isinstance(gateway, dict)
    return gateway


def gateway_toml(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return tomllib.loads(one(manifests, "ConfigMap")["data"]["gateway.toml"])


def pod_annotations(manifests: list[dict[str, Any]]) -> dict[str, str]:
    annotations: dict[str, str] = one(manifests, "Deployment")["spec"]["template"]["metadata"][
        "annotations"
    ]
    return annotations


# -- rendering, lint, schema validation ----------------------------------------------------------


def test_sdk_is_helm_4(chart: Any) -> None:
    assert helm.helm_sdk_version().startswith("v4.")
    assert chart.name == "paxos-gateway"


def test_default_render_has_the_core_objects(chart: Any) -> None:
    assert kinds(render(chart)) == {
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    }


def test_everything_on_renders_every_optional_object(chart: Any) -> None:
    manifests = render(chart, EVERYTHING_ON)
    assert kinds(manifests) == {
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "PrometheusRule",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    }
    assert len([m for m in manifests if m["kind"] == "ConfigMap"]) == 2


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_is_clean(scenario: str) -> None:
    report = helm.lint(CHART_DIR, SCENARIOS[scenario], strict=True, kube_version="v1.30.0")
    assert report["errors"] == []
    # Severity 1 is informational; 2 warning, 3 error.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_lint_reports_bad_values() -> None:
    report = helm.lint(CHART_DIR, {"replicas": 3}, strict=True, kube_version="v1.30.0")
    assert any("additional properties 'replicas'" in e for e in report["errors"])


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_manifest_validates_strictly(chart: Any, scenario: str, kube_version: str) -> None:
    manifests = render(chart, SCENARIOS[scenario])
    for manifest in manifests:
        if manifest["kind"] in CRD_SCHEMAS:
            # A CRD: kubernetes-validate has no schema for it; the CRD's own, kept as data.
            schema = json.loads(CRD_SCHEMAS[manifest["kind"]].read_text())
            jsonschema.Draft202012Validator(schema).validate(manifest)
            continue
        # Raises ValidationError (or SchemaNotFoundError for an unknown kind/apiVersion).
        kubernetes_validate.validate(manifest, kube_version, strict=True)


def test_servicemonitor_validates_against_the_crd_schema(chart: Any) -> None:
    schema = json.loads(SERVICEMONITOR_SCHEMA.read_text())
    monitor = one(render(chart, EVERYTHING_ON), "ServiceMonitor")
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(monitor)
    broken = copy.deepcopy(monitor)
    broken["spec"]["endpoints"][0]["interval"] = "30 seconds"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(broken)


BAD_VALUES = [
    pytest.param({"config": {"server": {"port": "8765"}}}, "/config/server/port", id="port-type"),
    pytest.param({"config": {"metrics": {"port": 70000}}}, "/config/metrics/port", id="port-range"),
    pytest.param(
        {"config": {"server": {"slow_policy": "drop"}}},
        "/config/server/slow_policy",
        id="slow-policy",
    ),
    pytest.param({"replicaCount": -1}, "/replicaCount", id="negative-replicas"),
    pytest.param({"replicas": 3}, "additional properties 'replicas'", id="unknown-top-level"),
    pytest.param(
        {"config": {"server": {"max_subscriber": 5}}},
        "additional properties 'max_subscriber'",
        id="unknown-config-key",
    ),
    pytest.param({"config": {"feeds": []}}, "/config/feeds", id="no-feeds"),
    pytest.param(
        {"config": {"feeds": [{"path": "/orderbook"}]}}, "/config/feeds/0/path", id="feed-path"
    ),
    pytest.param({"config": {"log": {"format": "xml"}}}, "/config/log/format", id="log-format"),
    pytest.param(
        {"config": {"backfill": {"requests_per_second": 20}}},
        "/config/backfill/requests_per_second",
        id="backfill-over-paxos-limit",
    ),
    pytest.param(
        {"config": {"backfill": {"rest_url": "ftp://x"}}},
        "/config/backfill/rest_url",
        id="backfill-rest-url",
    ),
    pytest.param(
        {"networkPolicy": {"subscriberNamespaceSelectors": [{}]}},
        "/networkPolicy/subscriberNamespaceSelectors/0",
        id="netpol-empty-selector",
    ),
    pytest.param(
        {"networkPolicy": {"metricsNamespaceSelectors": [{"namespace": "monitoring"}]}},
        "/networkPolicy/metricsNamespaceSelectors/0",
        id="netpol-selector-shape",
    ),
    pytest.param(
        {"securityContext": {"runAsNonRoot": False}}, "/securityContext/runAsNonRoot", id="root"
    ),
    pytest.param({"envFrom": [{"name": "x"}]}, "/envFrom/0", id="envfrom-shape"),
    pytest.param(
        {"extraVolumes": [{"name": "config", "emptyDir": {}}]},
        "/extraVolumes/0/name",
        id="extra-volume-reserved-name",
    ),
    pytest.param(
        {"extraVolumeMounts": [{"name": "x"}]}, "/extraVolumeMounts/0", id="mount-without-path"
    ),
    pytest.param(
        {"extraEnv": [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {}}}]},
        "/extraEnv/0",
        id="env-value-and-valuefrom",
    ),
    pytest.param(
        {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone"}]},
        "/topologySpreadConstraints/0",
        id="spread-incomplete",
    ),
    pytest.param(
        {"lifecycle": {"preStopSleepSeconds": -1}}, "/lifecycle/preStopSleepSeconds", id="prestop"
    ),
    pytest.param(
        {"config": {"upstream": {"coalesce_window": 0.5}}},
        "/config/upstream/coalesce_window",
        id="coalesce-window",
    ),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES)
def test_schema_rejects_bad_values(chart: Any, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(caught.value)


TEMPLATE_FAILURES = [
    pytest.param(
        {"extraVolumeMounts": [{"name": "x", "mountPath": "/etc/paxos-gateway/"}]},
        "extraVolumeMounts: /etc/paxos-gateway/ is where the chart mounts its own volume",
        id="mount-over-config",
    ),
    pytest.param(
        {"extraVolumeMounts": [{"name": "x", "mountPath": "/tmp"}]},
        "extraVolumeMounts: /tmp is where the chart mounts",
        id="mount-over-tmp",
    ),
    pytest.param(
        {"extraEnv": [{"name": "PAXOS_GATEWAY__SHUTDOWN__DRAIN_TIMEOUT", "value": "300"}]},
        "extraEnv: set PAXOS_GATEWAY__SHUTDOWN__DRAIN_TIMEOUT through config",
        id="drain-by-env",
    ),
    pytest.param(
        {"extraEnv": [{"name": "paxos_gateway__server__port", "value": "1"}]},
        "extraEnv: set paxos_gateway__server__port through config",
        id="port-by-env",
    ),
]


@pytest.mark.parametrize(("values", "message"), TEMPLATE_FAILURES)
def test_templates_reject_what_would_break_the_pod(
    chart: Any, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_hpa_bounds_are_checked(chart: Any) -> None:
    values = {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}
    with pytest.raises(helm.HelmRenderError, match="minReplicas must not exceed"):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


# -- the gateway configuration -----------------------------------------------------------------


ROUND_TRIP = {
    "config": {
        "upstream": {"base_url": "wss://ws.sandbox.paxos.com", "backoff_max": 12.5},
        "feeds": [
            {"url": "wss://ws.sandbox.paxos.com/marketdata/BTCUSD", "name": "btc"},
            {"path": "/marketdata/stablecoin", "required": False},
        ],
        "server": {"port": 9000, "history": None, "max_subscribers": 5},
        "metrics": {"port": 9200, "ready_grace": 5},
        "shutdown": {"drain_timeout": 25.5},
        "log": {"level": "debug", "format": "text"},
    }
}


def test_config_toml_has_the_sections_and_types_the_gateway_expects(chart: Any) -> None:
    config = gateway_toml(render(chart))
    assert set(config) == {"upstream", "backfill", "feeds", "server", "metrics", "shutdown", "log"}
    assert config["backfill"]["enabled"] is True
    assert config["backfill"]["rest_url"] == ""  # derived from upstream.base_url
    assert type(config["backfill"]["max_held"]) is int
    assert config["log"]["format"] == "json"
    assert config["server"]["host"] == "0.0.0.0"
    assert config["server"]["slow_policy"] == "conflate"
    assert [f["path"] for f in config["feeds"]] == [
        "/executiondata",
        "/marketdata",
        "/marketdata/stablecoin",
    ]
    assert all(f["required"] is True for f in config["feeds"])
    # Helm decodes every number as float64; the TOML must still say 8765, not 8765.0.
    for section, key in [
        ("server", "port"),
        ("metrics", "port"),
        ("server", "buffer_bytes"),
        ("upstream", "max_message_bytes"),
        ("upstream", "dedup_capacity"),
    ]:
        assert type(config[section][key]) is int, (section, key)
    for section, key in [("shutdown", "drain_timeout"), ("upstream", "backoff_initial")]:
        assert type(config[section][key]) is float, (section, key)


def test_config_toml_round_trips_the_values(chart: Any) -> None:
    manifests = render(chart, ROUND_TRIP)
    config = gateway_toml(manifests)
    assert config["upstream"]["base_url"] == "wss://ws.sandbox.paxos.com"
    assert config["upstream"]["backoff_max"] == 12.5
    assert config["feeds"] == [
        {"url": "wss://ws.sandbox.paxos.com/marketdata/BTCUSD", "name": "btc"},
        {"path": "/marketdata/stablecoin", "required": False},
    ]
    assert "history" not in config["server"]  # null: the gateway's default applies
    assert config["server"]["max_subscribers"] == 5
    assert config["metrics"]["ready_grace"] == 5.0
    assert type(config["metrics"]["ready_grace"]) is float
    assert config["log"] == {"level": "debug", "format": "text"}
    # The ports follow the config everywhere.
    ports = {p["name"]: p["containerPort"] for p in container(manifests)["ports"]}
    assert ports == {"ws": 9000, "metrics": 9200}
    assert pod_annotations(manifests)["prometheus.io/port"] == "9200"


@pytest.mark.parametrize("values", [{}, EVERYTHING_ON, ROUND_TRIP], ids=["defaults", "on", "rt"])
def test_the_gateway_accepts_the_rendered_config(
    chart: Any, values: dict[str, Any], tmp_path: Path
) -> None:
    from gateway.config import load_config

    path = tmp_path / "gateway.toml"
    path.write_text(one(render(chart, values), "ConfigMap")["data"]["gateway.toml"])
    config = load_config(path, env={})
    assert config.log.format == values.get("config", {}).get("log", {}).get("format", "json")
    assert config.server.host == "0.0.0.0"  # reachable from outside the pod


def test_checksum_annotation_follows_the_config(chart: Any) -> None:
    def checksum(values: dict[str, Any]) -> str:
        return pod_annotations(render(chart, values))["checksum/config"]

    base = checksum({})
    assert len(base) == 64
    assert checksum({"config": {"server": {"max_subscribers": 7}}}) != base
    assert checksum({"config": {"feeds": [{"path": "/executiondata/BTCUSD"}]}}) != base
    assert checksum({"replicaCount": 5, "podLabels": {"a": "b"}}) == base


def test_config_is_mounted_where_the_image_looks(chart: Any) -> None:
    manifests = render(chart)
    gateway = container(manifests)
    cmd = final_stage().last("CMD")
    assert cmd is not None
    assert gateway["args"] == exec_form(cmd)
    assert "command" not in gateway  # the image's ENTRYPOINT, the console script
    config_path = Path(gateway["args"][-1])
    mounts = {m["name"]: m for m in gateway["volumeMounts"]}
    assert mounts["config"]["mountPath"] == str(config_path.parent)
    assert mounts["config"]["readOnly"] is True
    assert config_path.name in one(manifests, "ConfigMap")["data"]


def test_auth_tokens_come_from_the_secret(chart: Any, tmp_path: Path) -> None:
    from gateway.config import load_config
    from gateway.fanout.access import load_tokens

    assert "auth" not in {v["name"] for v in one(render(chart), "Deployment")["spec"]["template"][
        "spec"]["volumes"]}  # fmt: skip
    assert "auth_token_file" not in gateway_toml(render(chart))["server"]
    manifests = render(chart, AUTH_ON)
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    volume = {v["name"]: v for v in pod["volumes"]}["auth"]
    assert volume["secret"]["secretName"] == "gateway-tokens"
    assert volume["secret"]["items"] == [{"key": "subscriber-tokens", "path": "tokens"}]
    mount = {m["name"]: m for m in container(manifests)["volumeMounts"]}["auth"]
    assert mount["readOnly"] is True
    server = gateway_toml(manifests)["server"]
    token_file = Path(server["auth_token_file"])
    assert token_file == Path(mount["mountPath"]) / "tokens"
    # Not inside the ConfigMap's directory: no volume nested in another.
    config_dir = Path({m["name"]: m for m in container(manifests)["volumeMounts"]}["config"][
        "mountPath"])  # fmt: skip
    assert config_dir not in token_file.parents
    assert server["connections_per_ip_per_second"] == 5.0
    assert type(server["connection_burst_per_ip"]) is int
    # The gateway accepts the rendered config, and reads tokens from the file it names.
    path = tmp_path / "gateway.toml"
    path.write_text(one(manifests, "ConfigMap")["data"]["gateway.toml"])
    config = load_config(path, env={})
    assert config.server.auth_token_file == str(token_file)
    secret = tmp_path / "tokens"
    secret.write_text("# rotated 2024-05\nabcdefghijklmnop0123456789\n")
    assert load_tokens(str(secret), {}) == (b"abcdefghijklmnop0123456789",)


# -- pod spec ------------------------------------------------------------------------------------


def test_image_defaults_to_the_app_version(chart: Any) -> None:
    assert container(render(chart))["image"] == f"paxos-gateway:{chart.metadata['appVersion']}"
    tagged = container(render(chart, {"image": {"tag": "0.2.0-rc1"}}))["image"]
    assert tagged == "paxos-gateway:0.2.0-rc1"


def test_probes(chart: Any) -> None:
    gateway = container(render(chart))
    expected = {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe, path in expected.items():
        assert gateway[probe]["httpGet"] == {"path": path, "port": "metrics"}
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports == {"ws": 8765, "metrics": 9108}


def test_security_context(chart: Any) -> None:
    manifests = render(chart)
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    ctx = container(manifests)["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"] for m in container(manifests)["volumeMounts"]}
    assert "/tmp" in mounts  # the only writable path


@pytest.mark.parametrize(
    ("values", "drain", "pre_stop"),
    [
        ({}, 10.0, 5),
        ({"config": {"shutdown": {"drain_timeout": 45.5}}}, 45.5, 5),
        ({"lifecycle": {"preStopSleepSeconds": 0}}, 10.0, 0),
        (
            {
                "config": {"shutdown": {"drain_timeout": 30}},
                "lifecycle": {"preStopSleepSeconds": 8},
            },
            30,
            8,
        ),
    ],
)
def test_termination_grace_covers_the_drain(
    chart: Any, values: dict[str, Any], drain: float, pre_stop: int
) -> None:
    manifests = render(chart, values)
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert gateway_toml(manifests)["shutdown"]["drain_timeout"] == drain
    grace = pod["terminationGracePeriodSeconds"]
    assert isinstance(grace, int)
    # After SIGTERM the gateway shuts down within app.shutdown_bound(drain_timeout) (the drain,
    # the final close, the upstream close in parallel); the grace period (which starts before
    # the preStop hook) must cover all of it and the exit.
    bound = pre_stop + shutdown_bound(drain)
    assert grace >= bound + 1
    assert grace <= bound + 10  # and not so long that a stuck pod blocks a rollout for minutes
    lifecycle = container(manifests).get("lifecycle")
    if pre_stop:
        assert lifecycle == {"preStop": {"sleep": {"seconds": pre_stop}}}
    else:
        assert lifecycle is None


def test_default_grace_period_is_prestop_shutdown_bound_and_margin(chart: Any) -> None:
    pod = one(render(chart), "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 5 + (10 + 1) + 2
    assert container(render(chart))["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}


def test_replicas_spread_over_nodes_by_default(chart: Any) -> None:
    manifests = render(chart)
    pod = one(manifests, "Deployment")["spec"]["template"]
    (constraint,) = pod["spec"]["topologySpreadConstraints"]
    assert constraint["topologyKey"] == "kubernetes.io/hostname"
    assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"  # a single node still runs both
    assert constraint["matchLabelKeys"] == ["pod-template-hash"]
    selector = constraint["labelSelector"]["matchLabels"]
    assert selector == one(manifests, "Deployment")["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    # A list replaces the default and keeps its own selector; [] turns spreading off.
    zone = EVERYTHING_ON["topologySpreadConstraints"]
    on = one(render(chart, EVERYTHING_ON), "Deployment")["spec"]["template"]["spec"]
    assert on["topologySpreadConstraints"] == zone
    off = one(render(chart, {"topologySpreadConstraints": []}), "Deployment")
    assert "topologySpreadConstraints" not in off["spec"]["template"]["spec"]


def test_extra_env_envfrom_volumes_and_mounts(chart: Any) -> None:
    manifests = render(chart, EVERYTHING_ON)
    gateway = container(manifests)
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert gateway["env"] == EVERYTHING_ON["extraEnv"]
    assert gateway["envFrom"] == EVERYTHING_ON["envFrom"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert {"config", "tmp", "ca-bundle", "scratch"} <= set(volumes)
    assert volumes["ca-bundle"] == EVERYTHING_ON["extraVolumes"][0]
    mounts = {m["name"]: m for m in gateway["volumeMounts"]}
    assert {"config", "tmp", "ca-bundle", "scratch"} <= set(mounts)
    assert mounts["ca-bundle"] == EVERYTHING_ON["extraVolumeMounts"][0]
    # Every mount names a volume of the pod.
    assert set(mounts) <= set(volumes)
    defaults = container(render(chart))
    assert "env" not in defaults and "envFrom" not in defaults


def test_resources_are_set(chart: Any) -> None:
    resources = container(render(chart))["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]


# -- service, scaling, disruption ---------------------------------------------------------------


def test_selectors_match_the_pods(chart: Any) -> None:
    manifests = render(chart, EVERYTHING_ON)
    pod_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    selectors = [
        one(manifests, "Deployment")["spec"]["selector"]["matchLabels"],
        one(manifests, "Service")["spec"]["selector"],
        one(manifests, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        one(manifests, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= pod_labels.items()


def test_service_ports(chart: Any) -> None:
    manifests = render(chart)
    service = one(manifests, "Service")
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert ports == {"ws": (8765, "ws")}
    metrics = one(manifests, "Service", f"{FULLNAME}-metrics")
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in metrics["spec"]["ports"]}
    assert ports == {"metrics": (9108, "metrics")}
    assert metrics["spec"]["selector"] == service["spec"]["selector"]


def test_the_ops_port_is_never_exposed_outside_the_cluster(chart: Any) -> None:
    # A LoadBalancer or NodePort for subscribers carries the subscriber port only; the ops
    # port (/metrics, /readyz) stays on a ClusterIP Service.
    for service_type in ("LoadBalancer", "NodePort"):
        manifests = render(chart, {"service": {"type": service_type}})
        services = {m["metadata"]["name"]: m["spec"] for m in manifests if m["kind"] == "Service"}
        assert services[FULLNAME]["type"] == service_type
        assert [p["name"] for p in services[FULLNAME]["ports"]] == ["ws"]
        assert services[f"{FULLNAME}-metrics"]["type"] == "ClusterIP"


def test_pdb_defaults_and_override(chart: Any) -> None:
    assert one(render(chart), "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    spec = one(render(chart, EVERYTHING_ON), "PodDisruptionBudget")["spec"]
    assert spec["minAvailable"] == 2
    assert "maxUnavailable" not in spec


def test_hpa_owns_the_replica_count(chart: Any) -> None:
    assert one(render(chart), "Deployment")["spec"]["replicas"] == 2
    manifests = render(chart, EVERYTHING_ON)
    assert "replicas" not in one(manifests, "Deployment")["spec"]
    hpa = one(manifests, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": FULLNAME,
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    targets = {m["resource"]["name"]: m["resource"]["target"] for m in hpa["metrics"]}
    assert targets["cpu"]["averageUtilization"] == 60
    assert targets["memory"]["averageUtilization"] == 80


# -- monitoring ----------------------------------------------------------------------------------


def test_scrape_annotations_unless_a_servicemonitor(chart: Any) -> None:
    annotations = pod_annotations(render(chart))
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9108"
    assert annotations["prometheus.io/path"] == "/metrics"
    with_monitor = pod_annotations(render(chart, EVERYTHING_ON))
    assert not any(k.startswith("prometheus.io/") for k in with_monitor)
    switched_off = pod_annotations(render(chart, {"metrics": {"scrapeAnnotations": False}}))
    assert not any(k.startswith("prometheus.io/") for k in switched_off)


def test_servicemonitor_targets_the_metrics_port(chart: Any) -> None:
    manifests = render(chart, EVERYTHING_ON)
    monitor = one(manifests, "ServiceMonitor")
    service = one(manifests, "Service", f"{FULLNAME}-metrics")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    # Only the metrics Service: the subscriber Service has no metrics port.
    selected = [
        m["metadata"]["name"]
        for m in manifests
        if m["kind"] == "Service"
        and monitor["spec"]["selector"]["matchLabels"].items() <= m["metadata"]["labels"].items()
    ]
    assert selected == [f"{FULLNAME}-metrics"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["port"] == "metrics"


def test_network_policy_admits_subscribers_only_from_selected_namespaces(chart: Any) -> None:
    policy = one(render(chart, EVERYTHING_ON), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    rules = {tuple(p["port"] for p in rule["ports"]): rule for rule in policy["ingress"]}
    assert set(rules) == {("ws",), ("metrics",)}
    net = EVERYTHING_ON["networkPolicy"]
    assert rules[("ws",)]["from"] == [
        {"namespaceSelector": s} for s in net["subscriberNamespaceSelectors"]
    ]
    assert rules[("metrics",)]["from"] == [
        {"namespaceSelector": s} for s in net["metricsNamespaceSelectors"]
    ]
    # No pod selector inside a peer: a namespaceSelector alone admits the whole namespace and
    # nothing else.
    assert all(set(peer) == {"namespaceSelector"} for peer in rules[("ws",)]["from"])


def test_network_policy_by_default(chart: Any) -> None:
    # On by default: the subscriber port open to any source (a LoadBalancer's clients
    # included), the ops port to pods of any namespace but not from outside the cluster.
    manifests = render(chart)
    policy = one(manifests, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    rules = {tuple(p["port"] for p in rule["ports"]): rule for rule in policy["ingress"]}
    assert set(rules) == {("ws",), ("metrics",)}
    assert "from" not in rules[("ws",)]
    assert rules[("metrics",)]["from"] == [{"namespaceSelector": {}}]
    # The rules name the container's ports (and so follow config.server.port/metrics.port).
    names = {p["name"] for p in container(manifests)["ports"]}
    assert {"ws", "metrics"} == names
    off = render(chart, {"networkPolicy": {"enabled": False}})
    assert "NetworkPolicy" not in kinds(off)


def test_dashboard_configmap_ships_the_dashboard(chart: Any) -> None:
    manifests = render(chart, EVERYTHING_ON)
    configmap = one(manifests, "ConfigMap", f"{FULLNAME}-dashboard")
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Market data"}
    shipped = json.loads(configmap["data"]["paxos-gateway.json"])
    assert shipped == json.loads((CHART_DIR / "dashboards" / "paxos-gateway.json").read_text())
