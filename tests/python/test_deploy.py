"""deploy/: the Kubernetes manifests and the systemd unit, checked offline against their
own schemas and tools, and against what the keymux binary really serves.

- Every Kubernetes manifest validates strictly against the Kubernetes schemas
  (kubernetes-validate, offline); the Prometheus Operator's resources, which those
  schemas do not cover, get their required fields checked here.
- The ConfigMap's config loads (`keymux check-config`); its ports are the container's,
  the Services' and the probes'; the probe paths and the ServiceMonitor path answer
  200 on a running binary; every metric the alerts name is on its /metrics page.
- The systemd unit passes `systemd-analyze verify` and a `systemd-analyze security`
  threshold; its config loads and reads the PIN from the credential the unit loads.
- SIGTERM turns /readyz off while the listener still serves (the drain), SIGHUP does
  not end a proxy without TLS, and `$NOTIFY_SOCKET` receives READY=1 and STOPPING=1.
"""

import re
import shutil
import signal
import socket
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from conftest import ROOT, keymux_bin

KUBERNETES = ROOT / "deploy" / "kubernetes"
SYSTEMD = ROOT / "deploy" / "systemd"
# The oldest Kubernetes release the manifests promise to work on, and the newest.
KUBERNETES_VERSIONS = ["1.29.0", "1.34.0"]


def documents(path: Path) -> list[dict]:
    """The YAML documents of a manifest file."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifests() -> dict[str, dict]:
    """Every resource of the kustomization, by `Kind/name`."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    resources = {}
    for name in kustomization["resources"]:
        for doc in documents(KUBERNETES / name):
            resources[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return resources


def http_status(url: str) -> tuple[int, str]:
    """GET `url`: the status and the body, 4xx and 5xx included."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def seconds(text: str) -> float:
    """A humantime duration of whole units, as the configs here write them."""
    value, unit = re.fullmatch(r"(\d+)(ms|s|m)", text).groups()
    return int(value) * {"ms": 0.001, "s": 1, "m": 60}[unit]


def configmap_config() -> dict:
    return tomllib.loads(manifests()["ConfigMap/keymux-config"]["data"]["keymux.toml"])


def container() -> dict:
    return manifests()["Deployment/keymux"]["spec"]["template"]["spec"]["containers"][0]


def test_every_manifest_validates_against_the_kubernetes_schemas():
    files = sorted(KUBERNETES.rglob("*.yaml"))
    assert len(files) >= 9, files
    checked = 0
    for path in files:
        if path.name == "kustomization.yaml":
            continue
        for doc in documents(path):
            if doc["apiVersion"].startswith("monitoring.coreos.com/"):
                # The Prometheus Operator's CRDs are not in the Kubernetes schemas.
                assert doc["kind"] in ("ServiceMonitor", "PrometheusRule"), path
                assert doc["apiVersion"] == "monitoring.coreos.com/v1", path
                assert doc["metadata"]["name"] and doc["spec"], path
            else:
                for version in KUBERNETES_VERSIONS:
                    kubernetes_validate.validate(doc, version, strict=True)
            checked += 1
    assert checked >= 10


def test_the_kustomization_names_every_manifest_beside_it():
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    beside = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == beside
    assert kustomization["namespace"] == "keymux"


def test_the_configmap_config_loads(tmp_path):
    config = tmp_path / "keymux.toml"
    config.write_text(manifests()["ConfigMap/keymux-config"]["data"]["keymux.toml"])
    checked = subprocess.run([keymux_bin(), "check-config", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "tls 0.0.0.0:7443" in checked.stdout


def test_ports_probes_and_secrets_agree_with_the_config():
    resources = manifests()
    config = configmap_config()
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert ports["admin"] == int(config["admin"]["listen"].rsplit(":", 1)[1])
    assert ports["tls"] == int(config["tls"]["listen"].rsplit(":", 1)[1])
    assert config["server"]["plain_tcp"] is False, "clients come over mutual TLS only"

    probes = {kind: container()[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in probes.values():
        assert probe["httpGet"]["port"] == "admin"

    for name in ("Service/keymux", "Service/keymux-admin"):
        for port in resources[name]["spec"]["ports"]:
            assert port["targetPort"] in ports, name
    policy = resources["NetworkPolicy/keymux"]["spec"]
    assert {p["port"] for rule in policy["ingress"] for p in rule["ports"]} == set(ports)
    # The ServiceMonitor selects the admin Service by its labels, the kustomization's too.
    monitor = resources["ServiceMonitor/keymux"]["spec"]
    admin_service = resources["Service/keymux-admin"]
    common = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["labels"][0]["pairs"]
    labels = {**common, **admin_service["metadata"]["labels"]}
    assert monitor["selector"]["matchLabels"].items() <= labels.items()
    assert monitor["endpoints"][0]["port"] == admin_service["spec"]["ports"][0]["name"]

    # The whole drain fits in the grace period, and the liveness probe outlasts it.
    pod = resources["Deployment/keymux"]["spec"]["template"]["spec"]
    drain = seconds(config["server"]["drain_delay"]) + seconds(config["server"]["shutdown_grace"])
    assert pod["terminationGracePeriodSeconds"] > drain
    live = probes["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > drain
    assert seconds(config["server"]["drain_delay"]) > 2 * probes["readinessProbe"]["periodSeconds"]

    # The PIN and the TLS key come from Secrets, mounted where the config reads them.
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"tls": "keymux-tls", "hsm": "keymux-hsm"}
    assert config["backend"]["pin"]["file"].startswith(mounts["hsm"] + "/")
    assert config["tls"]["key"].startswith(mounts["tls"] + "/")
    budget = resources["PodDisruptionBudget/keymux"]["spec"]
    assert budget["maxUnavailable"] < resources["Deployment/keymux"]["spec"]["replicas"]


def test_the_kms_plugin_pod_runs_its_config_and_shares_its_socket_with_the_host():
    plugin = KUBERNETES / "kms-plugin"
    checked = subprocess.run(
        [keymux_bin(), "check-config", str(plugin / "kms-plugin.toml")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    config = tomllib.loads((plugin / "kms-plugin.toml").read_text())
    pod = documents(plugin / "static-pod.yaml")[0]["spec"]
    keymux = pod["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in keymux["volumeMounts"]}
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    assert keymux["args"][-1] == mounts["config"] + "/kms-plugin.toml"
    socket_dir = str(Path(config["kubernetes_kms"]["socket"]).parent)
    assert mounts["socket"] == host["socket"] == socket_dir, "the API server finds the socket on the node"
    assert config["backend"]["pin"]["file"].startswith(mounts["config"] + "/")
    admin_port = int(config["admin"]["listen"].rsplit(":", 1)[1])
    assert {p["name"]: p["containerPort"] for p in keymux["ports"]}["admin"] == admin_port
    assert pod["hostNetwork"] and keymux["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_probe_paths_and_alert_metrics_are_what_the_binary_serves(keymux):
    proxy = keymux()
    admin = f"http://127.0.0.1:{proxy.admin_port}"
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = container()[kind]["httpGet"]["path"]
        assert http_status(admin + path)[0] == 200, (kind, path)
    status, page = http_status(admin + manifests()["ServiceMonitor/keymux"]["spec"]["endpoints"][0]["path"])
    assert status == 200
    # Families by their `# TYPE` line: those without samples yet are listed too.
    families = dict(re.findall(r"^# TYPE (\S+) (\S+)$", page, re.M))
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
    served = {name + suffix for name, kind in families.items() for suffix in suffixes.get(kind, [""])}
    rules = manifests()["PrometheusRule/keymux"]["spec"]["groups"][0]["rules"]
    named = {m for rule in rules for m in re.findall(r"\bkeymux_[a-z0-9_]+", rule["expr"])}
    assert named and named <= served, named - served
    for status_label in re.findall(r'status="([A-Z_]+)"', " ".join(r["expr"] for r in rules)):
        assert status_label in ("OK", "BUSY", "BACKEND_UNAVAILABLE", "TIMEOUT"), status_label


def test_sigterm_drains_not_ready_first_and_notifies_the_service_manager(keymux, tmp_path):
    notify_path = tmp_path / "notify"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(10)
    proxy = keymux(env={"NOTIFY_SOCKET": str(notify_path)}, server='drain_delay = "2s"')
    assert notify.recv(64) == b"READY=1"
    admin = f"http://127.0.0.1:{proxy.admin_port}"
    assert http_status(admin + "/readyz") == (200, "ready\n")

    proxy.process.send_signal(signal.SIGHUP)  # reloads the config file, and does not exit
    proxy.process.send_signal(signal.SIGTERM)
    assert notify.recv(64) == b"STOPPING=1"
    assert http_status(admin + "/readyz") == (503, "draining: shutting down\n")
    # Not ready, still serving: the balancer's next check moves new clients away.
    socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()
    assert proxy.process.wait(20) == 0
    assert "config reloaded" in proxy.log_path.read_text()


def systemd_analyze(*args: str) -> subprocess.CompletedProcess:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (./scripts/test does)")
    return subprocess.run([tool, *args], capture_output=True, text=True)


def test_the_systemd_unit_verifies_and_is_hardened(tmp_path):
    # verify checks that ExecStart's binary exists: point it at the one under test.
    unit = tmp_path / "keymux.service"
    unit.write_text((SYSTEMD / "keymux.service").read_text().replace("/usr/bin/keymux", keymux_bin()))
    verified = systemd_analyze("verify", "--man=no", str(unit))
    assert verified.returncode == 0 and verified.stderr == "", verified.stderr
    # Exposure 0 (locked down) to 100 (unsafe) in tenths; the unit scores 12 ("OK").
    security = systemd_analyze("security", "--offline=yes", "--threshold=20", str(unit))
    assert security.returncode == 0, security.stdout[-2000:]
    text = unit.read_text()
    for setting in ("Type=notify", "NoNewPrivileges=yes", "ProtectSystem=strict", "User=keymux",
                    "ExecReload=/bin/kill -HUP $MAINPID"):
        assert setting in text.splitlines(), setting


def test_the_systemd_config_loads_and_reads_the_pin_from_the_loaded_credential():
    checked = subprocess.run(
        [keymux_bin(), "check-config", str(SYSTEMD / "keymux.toml")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    unit = (SYSTEMD / "keymux.service").read_text()
    credential = re.search(r"^LoadCredential=([^:]+):", unit, re.M).group(1)
    config = tomllib.loads((SYSTEMD / "keymux.toml").read_text())
    assert config["backend"]["pin"] == {"file": f"/run/credentials/keymux.service/{credential}"}
    stop = re.search(r"^TimeoutStopSec=(\S+)$", unit, re.M).group(1)
    drain = seconds(config["server"]["drain_delay"]) + seconds(config["server"]["shutdown_grace"])
    assert seconds(stop) > drain
