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


def test_an_open_problem_does_not_delay_revocation(kubectl: Kubectl, unique: str) -> None:
    """The audit's case: while QuotaBelowUse holds the tenant (nothing new is granted), a member taken off it
    loses its RoleBinding, a viewer role left empty loses its binding, and a deleted destination leaves the
    boundary policy at once; a member added meanwhile gets nothing yet."""
    store, registry = f"{unique}-store", f"{unique}-registry"
    # ranges no other test of the session uses: test_netpol_analysis reads every NetworkPolicy of the plane
    kubectl.apply(destination(store, "NL", "100.65.1.0/27"), destination(registry, "DE", "100.65.2.0/27"))
    members = [{"name": "ann", "role": "member"}, {"name": "bob", "role": "member"}, {"name": "vic", "role": "viewer"}]
    kubectl.apply(tenant(unique, quota={"gpus": 4}, members=members, egress=[store, registry]))
    ready(kubectl, unique)
    kubectl.create(gpu_pod("busy", unique, gpus=3))
    eventually(lambda: _used(kubectl, unique, "3"))
    kubectl.apply(
        tenant(unique, quota={"gpus": 1}, members=[members[0], {"name": "eve", "role": "member"}], egress=[store, registry])
    )
    not_ready(kubectl, unique, "QuotaBelowUse")
    kubectl.run("delete", "egressdestination", registry)

    def revoked() -> None:
        bindings = {b["metadata"]["name"]: b for b in kubectl.get("rolebindings", "-n", unique)["items"]}
        assert set(bindings) == {"gigafab-member"}, "the viewer binding is gone"
        assert [s["name"] for s in bindings["gigafab-member"]["subjects"]] == ["ann"], "bob removed, eve not added yet"
        policy = kubectl.get("networkpolicy", "gigafab-tenant-boundary", "-n", unique)["spec"]
        assert [peer["ipBlock"]["cidr"] for rule in policy["egress"] for peer in rule["to"] if "ipBlock" in peer] == [
            "100.65.1.0/27"
        ]

    eventually(revoked)
    assert not kubectl.can("create", "pods", unique, "bob")
    assert not kubectl.can("list", "pods", unique, "vic")
    assert kubectl.can("create", "pods", unique, "ann")
    assert kubectl.get("resourcequota", "gigafab-quota", "-n", unique)["spec"]["hard"]["requests.nvidia.com/gpu"] == "4"
    state = condition(kubectl.get("tenant", unique), "Ready")
    assert state["status"] == "False"
    events = kubectl.get("events", "-A", "--field-selector", f"involvedObject.name={unique},reason=AccessRevoked")["items"]
    assert events, "no AccessRevoked event"
    kubectl.run("delete", "pod", "busy", "-n", unique, "--wait=false")  # its GPUs are the session's


def _used(kubectl: Kubectl, namespace: str, gpus: str) -> None:
    assert kubectl.get("resourcequota", "gigafab-quota", "-n", namespace)["status"]["used"]["requests.nvidia.com/gpu"] == gpus


def claim(name: str, namespace: str) -> dict[str, object]:
    spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def pending_workload(name: str, namespace: str) -> dict[str, object]:
    template = {"spec": {"containers": [{"name": "train", "image": "registry.example/train:1"}]}}
    return {
        "apiVersion": "gigafab.nl/v1alpha1",
        "kind": "GpuWorkload",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"gpus": 1, "template": template, "sites": ["eemshaven"]},
    }


def test_deleting_a_tenant_waits_for_its_data_and_its_workloads(kubectl: Kubectl, unique: str) -> None:
    """No pod runs, but a PersistentVolumeClaim holds data and a GpuWorkload waits for a site: deleting the
    Tenant would destroy both, so it waits, naming them, until they are gone."""
    kubectl.apply(tenant(unique, allowedSites=["eemshaven"]))  # only Planned: its work stays Pending
    ready(kubectl, unique)
    kubectl.create(claim("scans", unique), pending_workload("cohort", unique))
    kubectl.run("delete", "tenant", unique, "--wait=false")
    not_ready(kubectl, unique, "DeletionBlocked")
    message = condition(kubectl.get("tenant", unique), "Ready")["message"]
    assert "PersistentVolumeClaim(s) scans" in message
    assert "GpuWorkload(s) cohort (Pending)" in message
    assert kubectl.get("namespace", unique)["status"]["phase"] == "Active"
    kubectl.run("delete", "gpuworkload", "cohort", "-n", unique)

    def only_the_claim() -> None:
        message = condition(kubectl.get("tenant", unique), "Ready")["message"]
        assert "scans" in message
        assert "cohort" not in message

    eventually(only_the_claim)
    kubectl.run("delete", "pvc", "scans", "-n", unique)

    def deleted() -> None:
        assert kubectl.get("tenant", unique) is None
        namespace = kubectl.get("namespace", unique)
        assert namespace is None or namespace["status"]["phase"] == "Terminating"

    eventually(deleted)


def test_a_dropped_namespace_keeps_its_data_until_told(kubectl: Kubectl, unique: str) -> None:
    kubectl.apply(tenant(unique, namespaces=[f"{unique}-a", f"{unique}-b"]))
    ready(kubectl, unique)
    kubectl.create(claim("archive", f"{unique}-b"))
    kubectl.apply(tenant(unique, namespaces=[f"{unique}-a"]))
    not_ready(kubectl, unique, "NamespaceRemovalBlocked")
    assert "PersistentVolumeClaim(s) archive" in condition(kubectl.get("tenant", unique), "Ready")["message"]
    assert kubectl.get("namespace", f"{unique}-b")["status"]["phase"] == "Active"
    kubectl.run("annotate", "tenant", unique, "gigafab.nl/allow-delete-with-running-work=true")
    ready(kubectl, unique)

    def gone() -> None:
        namespace = kubectl.get("namespace", f"{unique}-b")
        assert namespace is None or namespace["status"]["phase"] == "Terminating"

    eventually(gone)
