"""The API on a real apiserver: CRDs installed, explain reads well, bad input is refused."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Kubectl, destination, tenant


def site(name: str, **spec: Any) -> dict[str, Any]:
    body = {"jurisdiction": "NL", "powerBudgetKW": 1000}
    body.update(spec)
    return {"apiVersion": "gigafab.nl/v1alpha1", "kind": "Site", "metadata": {"name": name}, "spec": body}


def gpu_workload(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"gpus": 1, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}
    body.update(spec)
    return {
        "apiVersion": "gigafab.nl/v1alpha1",
        "kind": "GpuWorkload",
        "metadata": {"name": name, "namespace": "default"},
        "spec": body,
    }


@pytest.mark.parametrize("plural", ["sites", "tenants", "egressdestinations", "gpuworkloads", "allocationpolicies"])
def test_crd_is_established_with_short_names_and_category(kubectl: Kubectl, plural: str) -> None:
    crd = kubectl.get("crd", f"{plural}.gigafab.nl")
    assert crd is not None
    assert any(c["type"] == "Established" and c["status"] == "True" for c in crd["status"]["conditions"])
    assert "gigafab" in crd["spec"]["names"]["categories"]
    assert crd["spec"]["names"]["shortNames"]


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("site.spec.powerCapKW", "min(powerBudgetKW, powerCapKW)"),
        ("tenant.spec.members.role", "admin"),
        ("egressdestination.spec.jurisdiction", "alpha-2 code"),
    ],
)
def test_kubectl_explain_describes_fields(kubectl: Kubectl, field: str, expected: str) -> None:
    assert expected in kubectl.run("explain", field).stdout


def test_get_gigafab_category_lists_all_kinds(kubectl: Kubectl) -> None:
    listed = kubectl.run("get", "gigafab").stdout
    assert "site.gigafab.nl/de-halm" in listed


def policy(name: str = "default", **shares: int) -> dict[str, Any]:
    given = shares or {"euro_hpc": 50, "national": 25, "regional": 25}
    tracks = [{"name": track.replace("_", "-"), "share": share} for track, share in given.items()]
    header = {"apiVersion": "gigafab.nl/v1alpha1", "kind": "AllocationPolicy", "metadata": {"name": name}}
    return {**header, "spec": {"tracks": tracks}}


INVALID = [
    pytest.param(site("bad-cap", powerCapKW=2000), "powerCapKW", id="cap-above-budget"),
    pytest.param(site("bad-country", jurisdiction="XX"), "jurisdiction", id="site-unknown-country"),
    pytest.param(site("bad-lower", jurisdiction="nl"), "jurisdiction", id="site-lower-case-country"),
    pytest.param(site("bad-class", dataClasses=["secret"]), "dataClasses", id="site-unknown-data-class"),
    pytest.param(site("bad-life", lifecycle="Retired"), "lifecycle", id="site-unknown-lifecycle"),
    pytest.param(site("bad-budget", powerBudgetKW=0), "powerBudgetKW", id="site-zero-budget"),
    pytest.param(site("bad-zone", zone="Not_A_Label"), "zone", id="site-zone-not-dns"),
    pytest.param(tenant("bad-track", track="commercial"), "track", id="tenant-unknown-track"),
    pytest.param(tenant("bad-ns", namespaces=["kube-system"]), "namespaces", id="tenant-kube-namespace"),
    pytest.param(tenant("bad-ns2", namespaces=["Upper_Case"]), "namespaces", id="tenant-namespace-not-dns"),
    pytest.param(tenant("bad-role", members=[{"name": "x", "role": "root"}]), "role", id="tenant-unknown-role"),
    pytest.param(tenant("bad-cpu", quota={"gpus": 1, "cpu": "lots"}), "cpu", id="tenant-cpu-not-quantity"),
    pytest.param(tenant("bad-gpus", quota={"gpus": -1}), "gpus", id="tenant-negative-gpus"),
    pytest.param(tenant("bad-class", dataClass="secret"), "dataClass", id="tenant-unknown-data-class"),
    pytest.param(destination("bad-cidr", "NL", "300.1.1.1/8"), "cidrs", id="egress-bad-cidr"),
    pytest.param(destination("bad-juris", "Netherlands", "192.0.2.0/24"), "jurisdiction", id="egress-bad-country"),
    pytest.param(destination("bad-port", "NL", "192.0.2.0/24", ports=[{"port": 70000}]), "port", id="egress-port-range"),
    pytest.param(gpu_workload("bad-gpus", gpus=0), "gpus", id="workload-zero-gpus"),
    pytest.param(gpu_workload("bad-replicas", replicas=0), "replicas", id="workload-zero-replicas"),
    pytest.param(gpu_workload("bad-crit", criticality="urgent"), "criticality", id="workload-unknown-criticality"),
    pytest.param(gpu_workload("bad-class", dataClass="secret"), "dataClass", id="workload-unknown-data-class"),
    pytest.param(gpu_workload("bad-sites", sites=["Not_A_Site"]), "sites", id="workload-site-not-dns"),
    pytest.param(gpu_workload("no-template", template=None), "template", id="workload-without-template"),
    pytest.param(policy("other"), "metadata.name must be default: there is one AllocationPolicy", id="policy-not-named-default"),
]


@pytest.mark.parametrize(
    ("changed", "message"),
    [
        pytest.param(policy(euro_hpc=60, national=25, regional=25), "must add up to 100", id="shares-above-100"),
        pytest.param(policy(euro_hpc=50, national=25), "must add up to 100", id="shares-below-100"),
        pytest.param(policy(euro_hpc=50, commercial=50), "tracks[1].name", id="unknown-track"),
        pytest.param(policy(euro_hpc=150), "share", id="share-above-100"),
    ],
)
def test_an_allocation_policy_whose_shares_do_not_add_up_is_refused_and_the_policy_kept(
    kubectl: Kubectl, changed: dict[str, Any], message: str
) -> None:
    before = kubectl.get("allocationpolicy", "default")["spec"]
    answer = kubectl.apply(changed, check=False)
    assert answer.returncode != 0, "accepted"
    assert message in answer.stderr, answer.stderr
    assert kubectl.get("allocationpolicy", "default")["spec"] == before


@pytest.mark.parametrize(("obj", "field"), INVALID)
def test_invalid_resource_is_rejected_naming_the_field(kubectl: Kubectl, obj: dict[str, Any], field: str) -> None:
    answer = kubectl.create(obj, check=False)
    assert answer.returncode != 0, f"{obj['metadata']['name']} was accepted"
    assert field in answer.stderr, answer.stderr
    assert kubectl.get(obj["kind"].lower(), obj["metadata"]["name"]) is None
