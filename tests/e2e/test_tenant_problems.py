"""Problems only the operator sees: Ready=False with a reason, a Warning, nothing touched.
And the removal policy: running work is never destroyed silently."""

from __future__ import annotations

from tests.e2e.conftest import Kubectl, condition, destination, eventually, gpu_pod, tenant
from tests.e2e.test_tenants import ready


def not_ready(kubectl: Kubectl, name: str, reason: str) -> None:
    def check() -> None:
        state = condition(kubectl.get("tenant", name), "Ready")
        assert (state["status"], state["reason"]) == ("False", reason), state

    eventually(check)


def warned(kubectl: Kubectl, name: str, reason: str) -> None:
    def check() -> None:
        events = kubectl.get("events", "-A", "--field-selector", f"involvedObject.name={name},type=Warning")
        assert reason in {e["reason"] for e in events["items"]}

    eventually(check)


def test_unknown_destination_touches_nothing(kubectl: Kubectl, unique: str) -> None:
    kubectl.apply(tenant(unique, egress=["no-such-destination"]))
    not_ready(kubectl, unique, "UnknownEgressDestination")
    warned(kubectl, unique, "UnknownEgressDestination")
    assert kubectl.get("namespace", unique) is None
    kubectl.apply(destination("no-such-destination", "FR", "192.0.2.128/25"))
    ready(kubectl, unique)
    assert kubectl.get("networkpolicy", "gigafab-tenant-boundary", "-n", unique) is not None


def test_namespace_of_someone_else_is_not_taken(kubectl: Kubectl, unique: str) -> None:
    kubectl.run("create", "namespace", f"{unique}-owned")
    kubectl.apply(tenant(unique, namespaces=[f"{unique}-owned"]))
    not_ready(kubectl, unique, "NamespaceConflict")
    warned(kubectl, unique, "NamespaceConflict")
    labels = kubectl.get("namespace", f"{unique}-owned")["metadata"].get("labels", {})
    assert "gigafab.nl/tenant" not in labels
    assert kubectl.get("resourcequota", "-n", f"{unique}-owned")["items"] == []


def test_quota_below_current_use_is_refused(kubectl: Kubectl, unique: str) -> None:
    kubectl.apply(tenant(unique, quota={"gpus": 4}))
    ready(kubectl, unique)
    kubectl.create(gpu_pod("busy", unique, gpus=3))

    def used() -> None:
        assert kubectl.get("resourcequota", "gigafab-quota", "-n", unique)["status"]["used"]["requests.nvidia.com/gpu"] == "3"

    eventually(used)

    def reported() -> None:
        assert kubectl.get("tenant", unique)["status"]["gpusUsed"] == 3

    eventually(reported)
    kubectl.apply(tenant(unique, quota={"gpus": 1}))
    not_ready(kubectl, unique, "QuotaBelowUse")
    warned(kubectl, unique, "QuotaBelowUse")
    assert kubectl.get("resourcequota", "gigafab-quota", "-n", unique)["spec"]["hard"]["requests.nvidia.com/gpu"] == "4"


def test_dropped_namespace_waits_for_its_work(kubectl: Kubectl, unique: str) -> None:
    kubectl.apply(tenant(unique, namespaces=[f"{unique}-a", f"{unique}-b"]))
    ready(kubectl, unique)
    kubectl.create(gpu_pod("running", f"{unique}-b"))
    kubectl.apply(tenant(unique, namespaces=[f"{unique}-a"]))
    not_ready(kubectl, unique, "NamespaceRemovalBlocked")
    warned(kubectl, unique, "NamespaceRemovalBlocked")
    assert kubectl.get("namespace", f"{unique}-b")["status"]["phase"] == "Active"
    kubectl.run("delete", "pod", "running", "-n", f"{unique}-b", "--grace-period=0", "--force")
    ready(kubectl, unique)

    def gone() -> None:
        namespace = kubectl.get("namespace", f"{unique}-b")
        assert namespace is None or namespace["status"]["phase"] == "Terminating"

    eventually(gone)


def test_deleting_a_tenant_waits_for_running_work_unless_told(kubectl: Kubectl, unique: str) -> None:
    kubectl.apply(tenant(unique))
    ready(kubectl, unique)
    kubectl.create(gpu_pod("running", unique))
    kubectl.run("delete", "tenant", unique, "--wait=false")
    not_ready(kubectl, unique, "DeletionBlocked")
    assert kubectl.get("namespace", unique)["status"]["phase"] == "Active"
    kubectl.run("annotate", "tenant", unique, "gigafab.nl/allow-delete-with-running-work=true")

    def deleted() -> None:
        assert kubectl.get("tenant", unique) is None
        namespace = kubectl.get("namespace", unique)
        assert namespace is None or namespace["status"]["phase"] == "Terminating"

    eventually(deleted)
