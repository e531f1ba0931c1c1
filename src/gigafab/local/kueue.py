"""Kueue in the local control plane: its manager on loopback, its CRDs, RBAC and webhooks.

Kueue is built from its Go module (``toolchain.ensure_kueue``) and runs as a host
process like the other components. Its manifests come from the same module
(``config/components`` in the Go module cache) and are adapted, not copied:

- the webhooks (admission and CRD conversion) point at ``https://127.0.0.1:<port>``
  with the plane's CA instead of an in-cluster Service; only those of the
  integrations gigafab enables (pods, deployments) and of Kueue's own kinds are kept;
- the pod and deployment webhooks only see tenant namespaces (namespaces with the
  ``gigafab.nl/tenant`` label), so pods elsewhere are never held by Kueue;
- the manager's ClusterRole is bound to the client certificate identity
  ``gigafab-kueue`` instead of a ServiceAccount.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from gigafab.local.layout import KUEUE_VERSION, Layout
from gigafab.local.pki import Pair
from gigafab.local.processes import Component, PlaneError

NAMESPACE = "kueue-system"
USER = "gigafab-kueue"
TENANT_LABEL = "gigafab.nl/tenant"
FRAMEWORKS = ("pod", "deployment")
KEPT_WEBHOOK_PATHS = ("--v1-pod", "-apps-v1-deployment", "-kueue-x-k8s-io-")
CONVERTED_CRDS = ("localqueues", "clusterqueues", "cohorts", "workloads", "multikueueclusters")
SERVER_NAMES = ("127.0.0.1", "localhost")
METRICS_CERTS = Path("/etc/kueue/metrics/certs")
"""Kueue v0.15 reads a metrics certificate from this fixed path whenever its internal certificate
management is off, even with the metrics server disabled (bindAddress "0"): it exits without one."""


def configuration(layout: Layout, cert_dir: Path) -> dict[str, Any]:
    """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2) for the local plane."""
    ports = layout.ports
    tenants = {"matchExpressions": [{"key": TENANT_LABEL, "operator": "Exists"}]}
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{ports.kueue_health}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"port": ports.kueue_webhook, "host": "127.0.0.1", "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "managedJobsNamespaceSelector": tenants,
        "clientConnection": {"qps": 100, "burst": 200},
        "integrations": {"frameworks": list(FRAMEWORKS)},
        # CPU and memory are the tenants' ResourceQuotas' business; Kueue divides GPUs
        "resources": {"excludeResourcePrefixes": ["cpu", "memory", "ephemeral-storage", "pods"]},
    }


def component(layout: Layout, serving: Pair) -> Component:
    """The Kueue manager: webhooks on loopback with a certificate of the plane's CA."""
    from gigafab.local.components import http_ok
    from gigafab.local.toolchain import ensure_kueue

    home = layout.state / "kueue"
    cert_dir = home / "certs"
    cert_dir.mkdir(parents=True, exist_ok=True)
    (cert_dir / "tls.crt").write_bytes(serving.cert.read_bytes())
    (cert_dir / "tls.key").write_bytes(serving.key.read_bytes())
    (cert_dir / "tls.key").chmod(0o600)
    _ensure_metrics_certs(serving)
    config = home / "config.yaml"
    config.write_text(yaml.safe_dump(configuration(layout, cert_dir), sort_keys=False))
    return Component(
        "kueue",
        [str(ensure_kueue(layout)), f"--config={config}", "--feature-gates=VisibilityOnDemand=false", "--zap-log-level=info"],
        http_ok(f"http://127.0.0.1:{layout.ports.kueue_health}/readyz"),
        env={"KUBECONFIG": str(layout.kubeconfig_for("kueue"))},
        ready_timeout=90,
    )


def _ensure_metrics_certs(serving: Pair) -> None:
    """A certificate where Kueue insists on finding one; never served (metrics are off)."""
    if (METRICS_CERTS / "tls.crt").exists() and (METRICS_CERTS / "tls.key").exists():
        return
    try:
        METRICS_CERTS.mkdir(parents=True, exist_ok=True)
        (METRICS_CERTS / "tls.crt").write_bytes(serving.cert.read_bytes())
        (METRICS_CERTS / "tls.key").write_bytes(serving.key.read_bytes())
        (METRICS_CERTS / "tls.key").chmod(0o600)
    except OSError as error:
        raise PlaneError(
            f"Kueue {KUEUE_VERSION} needs a certificate in {METRICS_CERTS} even with metrics off, and it could "
            f"not be written ({error}). Run once as root, or create tls.crt and tls.key there yourself."
        ) from error


def manifests(module: Path, layout: Layout, ca: Path) -> list[dict[str, Any]]:
    """Kueue's namespace, CRDs, RBAC and webhook configurations, adapted to a plane on loopback."""
    components = module / "config" / "components"
    base = f"https://127.0.0.1:{layout.ports.kueue_webhook}"
    bundle = base64.b64encode(ca.read_bytes()).decode()
    objects: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}]
    for path in sorted((components / "crd" / "bases").glob("*.yaml")):
        for crd in _documents(path):
            if crd["spec"]["names"]["plural"] in CONVERTED_CRDS:
                crd["spec"]["conversion"] = {
                    "strategy": "Webhook",
                    "webhook": {
                        "clientConfig": {"url": f"{base}/convert", "caBundle": bundle},
                        "conversionReviewVersions": ["v1"],
                    },
                }
            objects.append(crd)
    for role in _documents(components / "rbac" / "role.yaml"):
        objects.extend((role, _binding(role)))
    for role in _documents(components / "rbac" / "manager_secrets_role.yaml"):
        role["metadata"]["namespace"] = NAMESPACE
        objects.extend((role, _binding(role)))
    for configuration in _documents(components / "webhook" / "manifests.yaml"):
        configuration["metadata"]["name"] = f"kueue-{configuration['metadata']['name']}"
        configuration["webhooks"] = [
            _local_webhook(hook, base, bundle)
            for hook in configuration["webhooks"]
            if any(part in hook["clientConfig"]["service"]["path"] for part in KEPT_WEBHOOK_PATHS)
        ]
        objects.append(configuration)
    return objects


def _local_webhook(hook: dict[str, Any], base: str, bundle: str) -> dict[str, Any]:
    path = hook["clientConfig"]["service"]["path"]
    hook = {**hook, "clientConfig": {"url": base + path, "caBundle": bundle}}
    if "--v1-pod" in path or "-apps-v1-deployment" in path:
        hook["namespaceSelector"] = {"matchExpressions": [{"key": TENANT_LABEL, "operator": "Exists"}]}
    return hook


def _binding(role: Mapping[str, Any]) -> dict[str, Any]:
    """Binds ``role`` (a ClusterRole, or a Role in Kueue's namespace) to Kueue's identity."""
    name, namespaced = role["metadata"]["name"], role["kind"] == "Role"
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding" if namespaced else "ClusterRoleBinding",
        "metadata": {"name": f"gigafab-kueue-{name}", **({"namespace": NAMESPACE} if namespaced else {})},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role["kind"], "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}],
    }


def _documents(path: Path) -> Iterator[dict[str, Any]]:
    for document in yaml.safe_load_all(path.read_text()):
        if isinstance(document, Mapping) and document:
            yield dict(document)
