"""Kueue's manifests, taken from its Go module and adapted to a plane on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gigafab.local import kueue, toolchain
from gigafab.local.layout import Layout, Ports


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, object]]:
    ca = tmp_path_factory.mktemp("pki") / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    layout = Layout(state=Path("/nonexistent"), ports=Ports.shifted(0))
    return kueue.manifests(toolchain.kueue_module(), layout, ca)


def of_kind(objects: list[dict[str, object]], kind: str) -> list[dict[str, object]]:
    return [o for o in objects if o["kind"] == kind]


def test_every_webhook_calls_kueue_on_loopback_with_the_plane_ca_and_none_a_service(objects: list[dict[str, object]]) -> None:
    text = yaml.safe_dump_all(objects)
    assert "webhook-service" not in text
    hooks = [
        hook
        for c in of_kind(objects, "MutatingWebhookConfiguration") + of_kind(objects, "ValidatingWebhookConfiguration")
        for hook in c["webhooks"]
    ]  # type: ignore[attr-defined]
    assert hooks
    assert all(hook["clientConfig"]["url"].startswith("https://127.0.0.1:20930/") for hook in hooks)
    assert all(hook["clientConfig"]["caBundle"] for hook in hooks)


def test_only_pod_deployment_and_kueue_webhooks_are_kept_and_pods_only_in_tenant_namespaces(
    objects: list[dict[str, object]],
) -> None:
    mutating = {hook["name"]: hook for c in of_kind(objects, "MutatingWebhookConfiguration") for hook in c["webhooks"]}  # type: ignore[attr-defined]
    assert "mpod.kb.io" in mutating
    assert "mdeployment.kb.io" in mutating
    assert "mjob.kb.io" not in mutating, "batch Jobs are not queued by Kueue here"
    assert "mrayjob.kb.io" not in mutating
    selector = mutating["mpod.kb.io"]["namespaceSelector"]
    assert selector == {"matchExpressions": [{"key": "gigafab.nl/tenant", "operator": "Exists"}]}


def test_the_crds_kueue_converts_call_its_conversion_webhook(objects: list[dict[str, object]]) -> None:
    crds = {crd["spec"]["names"]["plural"]: crd for crd in of_kind(objects, "CustomResourceDefinition")}  # type: ignore[index]
    assert {"clusterqueues", "localqueues", "workloads", "resourceflavors", "workloadpriorityclasses"} <= set(crds)
    conversion = crds["clusterqueues"]["spec"]["conversion"]  # type: ignore[index]
    assert conversion["strategy"] == "Webhook"
    assert conversion["webhook"]["clientConfig"]["url"] == "https://127.0.0.1:20930/convert"


def test_kueue_is_bound_to_its_own_identity_not_an_admin(objects: list[dict[str, object]]) -> None:
    bindings = of_kind(objects, "ClusterRoleBinding") + of_kind(objects, "RoleBinding")
    assert bindings
    assert all(
        b["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "gigafab-kueue"}] for b in bindings
    )
    assert all(b["roleRef"]["name"] != "cluster-admin" for b in bindings)  # type: ignore[index]


def test_the_configuration_queues_gpus_of_tenant_namespaces_only() -> None:
    config = kueue.configuration(Layout(state=Path("/nonexistent")), Path("/certs"))
    assert config["integrations"] == {"frameworks": ["pod", "deployment"]}
    assert config["manageJobsWithoutQueueName"] is False
    assert "cpu" in config["resources"]["excludeResourcePrefixes"]
    assert config["internalCertManagement"] == {"enable": False}
    assert config["webhook"]["host"] == "127.0.0.1"
