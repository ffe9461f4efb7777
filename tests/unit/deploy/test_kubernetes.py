"""deploy/kubernetes/: every manifest validates (strictly: no unknown field) against the bundled
schemas of current Kubernetes releases, and keeps the promises of the README's Deploy section:
non-root pods on a read-only root filesystem, the right probes, resources, an HPA and a PDB that
select the API pods, and every setting the service needs in production coming from the ConfigMap
or, for secrets, from references to a Secret that the operator creates."""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.cli import build_parser
from app.settings import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
MANIFESTS = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes release still supported upstream when this was written, and the newest
# that kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")
SECRET_NAME = "ragchat-secrets"
CONFIG_NAME = "ragchat-config"
# What the service needs outside the embedded developer default (README "Deploy").
SECRET_SETTINGS = {"DATABASE_URL", "REDIS_URL", "CACHE_REDIS_URL"}
API_SECRET_SETTINGS = SECRET_SETTINGS | {
    "GEMINI_API_KEY",
    "GROQ_API_KEY",
    "OPENAI_API_KEY",
    "LANGFUSE_PUBLIC_KEY",
    "LANGFUSE_SECRET_KEY",
}
CONFIG_SETTINGS = {
    "HOST",
    "PORT",
    "DATA_DIR",
    "AUTO_MIGRATE",
    "RUN_WORKER_IN_PROCESS",
    "LLM_PROVIDERS",
    "EMBEDDING_DIM",
    "TRUSTED_PROXIES",
    "AUTH_JWT_ISSUER",
    "AUTH_JWT_AUDIENCE",
    "AUTH_JWKS_URL",
}
NOT_SETTINGS = {"HOME"}  # for libraries: their caches go to the writable /tmp


def manifest_files() -> list[Path]:
    return sorted(path for path in MANIFESTS.glob("*.yaml") if path.name != "kustomization.yaml")


def resources() -> dict[str, dict[str, Any]]:
    """``kind/name`` → resource, from every manifest file."""
    found: dict[str, dict[str, Any]] = {}
    for path in manifest_files():
        for document in yaml.safe_load_all(path.read_text()):
            key = f"{document['kind']}/{document['metadata']['name']}"
            assert key not in found, f"{key} defined twice"
            found[key] = document
    return found


def workloads() -> dict[str, dict[str, Any]]:
    """The pod specs of the API, the workers and the migration Job."""
    found = resources()
    return {
        "api": found["Deployment/ragchat-api"]["spec"]["template"]["spec"],
        "worker": found["Deployment/ragchat-worker"]["spec"]["template"]["spec"],
        "migrate": found["Job/ragchat-migrate"]["spec"]["template"]["spec"],
    }


def only_container(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod["containers"]
    assert isinstance(container, dict)
    return container


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_strictly(version: str) -> None:
    found = resources()
    assert found, "no manifests"
    for key, resource in found.items():
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{key} against Kubernetes {version}: {exc.message} at {list(exc.path)}")


def test_the_validator_refuses_an_unknown_field() -> None:
    """A control: the validation above is not vacuous."""
    broken = resources()["Deployment/ragchat-api"]
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [path.name for path in manifest_files()]
    assert {image["name"] for image in kustomization["images"]} == {
        only_container(pod)["image"].split(":")[0] for pod in workloads().values()
    }


def test_the_workloads_run_the_cli_commands() -> None:
    parser = build_parser()
    commands = {name: only_container(pod)["command"] for name, pod in workloads().items()}
    assert commands == {
        "api": ["python", "-m", "app", "serve"],
        "worker": ["python", "-m", "app", "worker"],
        "migrate": ["python", "-m", "app", "migrate"],
    }
    for command in commands.values():
        parser.parse_args(command[3:])  # exits (fails the test) on an unknown command


@pytest.mark.parametrize("name", ["api", "worker", "migrate"])
def test_pods_run_as_non_root_on_a_read_only_root_filesystem(name: str) -> None:
    pod = workloads()[name]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0  # numeric, so the kubelet can check it
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    container = only_container(pod)
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["runAsNonRoot"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    # What the service writes goes to emptyDirs: DATA_DIR and the temporary directory.
    config = resources()[f"ConfigMap/{CONFIG_NAME}"]["data"]
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for path in (config["DATA_DIR"], "/tmp"):
        assert "emptyDir" in volumes[mounts[path]], f"{name}: {path} is not an emptyDir"
        assert volumes[mounts[path]]["emptyDir"]["sizeLimit"]


@pytest.mark.parametrize("name", ["api", "worker", "migrate"])
def test_every_container_has_resource_requests_and_limits(name: str) -> None:
    resources_ = only_container(workloads()[name])["resources"]
    assert {"cpu", "memory"} <= resources_["requests"].keys()
    assert {"cpu", "memory"} <= resources_["limits"].keys()


def test_the_api_is_probed_on_healthz_and_readyz_through_its_port() -> None:
    container = only_container(workloads()["api"])
    (port,) = container["ports"]
    config = resources()[f"ConfigMap/{CONFIG_NAME}"]["data"]
    assert port["containerPort"] == int(config["PORT"]) and config["HOST"] == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    # Liveness never depends on PostgreSQL or Redis: an outage must not restart every pod.
    assert "readyz" not in str(container["livenessProbe"])


def test_the_service_hpa_and_pdb_select_the_api_pods() -> None:
    found = resources()
    api = found["Deployment/ragchat-api"]
    pod_labels = api["spec"]["template"]["metadata"]["labels"]
    assert api["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    worker_labels = found["Deployment/ragchat-worker"]["spec"]["template"]["metadata"]["labels"]
    service = found["Service/ragchat-api"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert not service["spec"]["selector"].items() <= worker_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == only_container(workloads()["api"])["ports"][0]["name"]
    pdb = found["PodDisruptionBudget/ragchat-api"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert not pdb["spec"]["selector"]["matchLabels"].items() <= worker_labels.items()
    hpa = found["HorizontalPodAutoscaler/ragchat-api"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "ragchat-api",
    }
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]


def environment(container: dict[str, Any]) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """The container's literal values (ConfigMap entries included) and its Secret references."""
    (source,) = container["envFrom"]
    assert source == {"configMapRef": {"name": CONFIG_NAME}}
    values = dict(resources()[f"ConfigMap/{CONFIG_NAME}"]["data"])
    references: dict[str, dict[str, Any]] = {}
    for variable in container["env"]:
        if "value" in variable:
            values[variable["name"]] = variable["value"]
        else:
            references[variable["name"]] = variable["valueFrom"]["secretKeyRef"]
    return values, references


@pytest.mark.parametrize("name", ["api", "worker", "migrate"])
def test_every_setting_comes_from_the_config_map_or_a_secret_reference(name: str) -> None:
    values, references = environment(only_container(workloads()[name]))
    known = {field.upper() for field in Settings.model_fields}
    assert set(values) | set(references) <= known | NOT_SETTINGS
    assert values.keys() >= CONFIG_SETTINGS
    assert values["RUN_WORKER_IN_PROCESS"] == "false" and values["AUTO_MIGRATE"] == "false"
    needed = API_SECRET_SETTINGS if name == "api" else SECRET_SETTINGS
    assert needed <= references.keys()
    for variable, reference in references.items():
        assert reference["name"] == SECRET_NAME and reference["key"] == variable
        # Only the database and Redis are indispensable; a missing key is simply unset.
        assert reference.get("optional", False) is (variable not in {"DATABASE_URL", "REDIS_URL"})
    # The configuration is one the service accepts outside debug (placeholders refused).
    Settings(**{k.lower(): v for k, v in values.items() if k not in NOT_SETTINGS}, _env_file=None)  # type: ignore[arg-type]


def test_no_secret_is_written_in_the_manifests() -> None:
    assert not [key for key in resources() if key.startswith("Secret/")], (
        "ship no Secret; the operator creates it"
    )
    for path in manifest_files():
        text = path.read_text()
        assert not re.search(r"://[^:/\s]*:[^@\s]+@", text), f"{path.name}: credentials in a URL"
    secret_like = re.compile(r"(PASSWORD|SECRET|_KEY|TOKEN|_URL)$")
    for name, pod in workloads().items():
        values, _ = environment(only_container(pod))
        for variable, value in values.items():
            if secret_like.search(variable):
                assert value == "", f"{name}: {variable} has a literal value; reference {SECRET_NAME}"


def test_the_readme_names_every_secret_key_to_create() -> None:
    readme = (ROOT / "README.md").read_text()
    deploy = readme[readme.index("## Deploy") :]
    for name, pod in workloads().items():
        for variable in environment(only_container(pod))[1]:
            assert variable in deploy, f"{name} reads {variable} from {SECRET_NAME}: document it"


# --- images, /metrics, forwarded addresses ------------------------------------------------------


def project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


@pytest.mark.parametrize("name", ["api", "worker", "migrate"])
def test_images_are_pinned_to_the_release_never_latest(name: str) -> None:
    """``:latest`` with ``IfNotPresent`` runs whatever each node pulled first."""
    container = only_container(workloads()[name])
    image = container["image"]
    pinned_by_digest = re.fullmatch(r"[\w./-]+@sha256:[0-9a-f]{64}", image)
    assert pinned_by_digest or image == f"ragchat:{project_version()}", image
    assert container["imagePullPolicy"] in {"IfNotPresent", "Always"}
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    (override,) = kustomization["images"]
    assert override.get("newTag") == project_version() or "digest" in override
    assert "latest" not in str(override)


def test_only_the_ingress_controller_and_prometheus_reach_the_api_port() -> None:
    found = resources()
    policy = found["NetworkPolicy/ragchat-api-ingress"]["spec"]
    pod_labels = found["Deployment/ragchat-api"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    peers = []
    for rule in policy["ingress"]:
        assert rule.get("from"), "a rule without `from` admits every peer"
        assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
        for peer in rule["from"]:
            assert set(peer) == {"namespaceSelector"}, "no ipBlock or open pod selector"
            peers.append(peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"])
    assert sorted(peers) == ["ingress-nginx", "monitoring"]


def test_the_ingress_routes_the_api_and_never_metrics_or_the_probes() -> None:
    found = resources()
    ingress = found["Ingress/ragchat-api"]["spec"]
    service = found["Service/ragchat-api"]
    routed = []
    for rule in ingress["rules"]:
        for path in rule["http"]["paths"]:
            assert path["pathType"] == "Prefix"
            assert path["backend"]["service"]["name"] == service["metadata"]["name"]
            assert path["backend"]["service"]["port"]["name"] == service["spec"]["ports"][0]["name"]
            routed.append(path["path"])
    for private in ("/metrics", "/healthz", "/readyz"):
        assert not [prefix for prefix in routed if private.startswith(prefix.rstrip("/") or "/")], private
    for public in ("/api/v1/chat", "/v1/chat/completions", "/mcp"):
        assert [prefix for prefix in routed if public.startswith(prefix)], public


def test_forwarded_addresses_are_believed_from_the_ingress_controller_only() -> None:
    """Empty TRUSTED_PROXIES behind an Ingress puts every client in the controller pod's per-IP
    bucket; the default trusts private (pod) addresses, which the NetworkPolicy narrows to the
    ingress controller and Prometheus."""
    values = resources()[f"ConfigMap/{CONFIG_NAME}"]["data"]
    settings = Settings(trusted_proxies=values["TRUSTED_PROXIES"], _env_file=None)  # type: ignore[call-arg]
    networks = [ipaddress.ip_network(network) for network in settings.trusted_proxies]
    assert networks and all(network.is_private for network in networks)
    for pod_address in ("10.244.1.7", "10.42.0.9", "172.17.0.5", "192.168.1.20"):  # common pod CIDRs
        assert any(ipaddress.ip_address(pod_address) in network for network in networks), pod_address
    for public in ("203.0.113.9", "8.8.8.8", "2001:db8::1"):
        assert not any(ipaddress.ip_address(public) in network for network in networks), public
    assert "NetworkPolicy/ragchat-api-ingress" in resources()
