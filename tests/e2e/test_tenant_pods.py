"""Every pod of a tenant stays where the tenant's data may be, and asks for nothing past its boundary.

On the real plane, with the admission policies of config/admission/ and the operator writing each
tenant namespace's lawful sites: a health-data tenant's CPU-only pod aimed at a site not certified
for health data (or outside the EU) is never scheduled, one aimed nowhere lands on the certified
site, the lawful sites follow the Sites, and a tenant with no lawful site has its pods refused,
saying why. Then every refusal of the tenant boundary, each as a member would try it: nothing is
stored (server-side dry runs, or a real request that is refused).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from gigafab.api.labels import LAWFUL_SITES_ANNOTATION, SITE_NODE_LABEL
from gigafab.local.nodes import gpu_node, node_name
from tests.e2e.conftest import Kubectl, condition, eventually, gpu_pod, tenant
from tests.e2e.test_failover import health_certified
from tests.e2e.test_workloads import tenant_ready, workload

MEMBER = "nurse-de-wit"
"""A member of every tenant of this module."""


def member_tenant(name: str, **spec: Any) -> dict[str, Any]:
    return tenant(name, members=[{"kind": "User", "name": MEMBER, "role": "member"}], **spec)


@pytest.fixture(scope="module")
def clinic(kubectl: Kubectl) -> Iterator[str]:
    """A health-data tenant: only niemeyer (NL, certified for health, Active) may hold its data."""
    name = "clinic-pods"
    kubectl.apply(member_tenant(name, dataClass="health", quota={"gpus": 4, "cpu": "8", "memory": "32Gi"}))
    eventually(lambda: tenant_ready(kubectl, name))
    yield name
    kubectl.run("delete", "pods,gpuworkloads", "--all", "-n", name, "--wait=false", check=False)


def carried(kubectl: Kubectl, namespace: str) -> str:
    return str(kubectl.get("namespace", namespace)["metadata"]["annotations"][LAWFUL_SITES_ANNOTATION])


def aimed(name: str, namespace: str, site: str | None = None) -> dict[str, Any]:
    """A CPU-only pod, with a nodeSelector for ``site`` when given (the audit's repro)."""
    pod = gpu_pod(name, namespace, gpus=0)
    if site is not None:
        pod["spec"]["nodeSelector"] = {SITE_NODE_LABEL: site}
    return pod


def unschedulable(kubectl: Kubectl, namespace: str, name: str) -> None:
    pod = kubectl.get("pod", name, "-n", namespace)
    assert not pod["spec"].get("nodeName"), f"scheduled on {pod['spec'].get('nodeName')}"
    scheduled = condition(pod, "PodScheduled")
    assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable"), scheduled
    assert "didn't match Pod's node affinity/selector" in scheduled["message"]


def site_of(kubectl: Kubectl, namespace: str, name: str) -> str:
    pod = kubectl.get("pod", name, "-n", namespace)
    assert pod["spec"].get("nodeName"), "not scheduled yet"
    return str(kubectl.get("node", pod["spec"]["nodeName"])["metadata"]["labels"][SITE_NODE_LABEL])


def pins(pod: dict[str, Any]) -> list[list[str]]:
    """The sites each required node-affinity term of ``pod`` allows."""
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return [next(e["values"] for e in term["matchExpressions"] if e["key"] == SITE_NODE_LABEL) for term in terms]


def test_a_health_tenants_pod_aimed_at_an_uncertified_site_is_never_scheduled(kubectl: Kubectl, clinic: str) -> None:
    """The audit's repro: a member's CPU-only pod with a nodeSelector for de-halm (not certified for health data)."""
    kubectl.create(aimed("to-de-halm", clinic, "de-halm"), as_user=MEMBER)
    kubectl.create(aimed("anywhere", clinic), as_user=MEMBER)
    eventually(lambda: unschedulable(kubectl, clinic, "to-de-halm"))
    assert eventually(lambda: site_of(kubectl, clinic, "anywhere")) == "niemeyer"
    assert pins(kubectl.get("pod", "anywhere", "-n", clinic)) == [["niemeyer"]]
    assert carried(kubectl, clinic) == "niemeyer"


@contextmanager
def foreign_site(kubectl: Kubectl, name: str) -> Iterator[str]:
    """A Site outside the EU, certified for every class, Active, with one node."""
    body = {"jurisdiction": "US", "dataClasses": ["public", "internal", "personal", "health"], "powerBudgetKW": 100}
    kubectl.create(gpu_node(name, 0, gpus=8))
    kubectl.apply({"apiVersion": "gigafab.nl/v1alpha1", "kind": "Site", "metadata": {"name": name}, "spec": body})
    try:
        yield name
    finally:
        kubectl.run("delete", "site", name, "--wait=false", check=False)
        kubectl.run("delete", "node", node_name(name, 0), check=False)


def test_a_pod_aimed_at_a_site_outside_the_eu_is_never_scheduled(kubectl: Kubectl, clinic: str, unique: str) -> None:
    with foreign_site(kubectl, f"{unique}-ohio") as ohio:
        kubectl.create(aimed("to-ohio", clinic, ohio), as_user=MEMBER)
        eventually(lambda: unschedulable(kubectl, clinic, "to-ohio"))
        assert carried(kubectl, clinic) == "niemeyer"


def test_the_lawful_sites_follow_the_sites(kubectl: Kubectl, clinic: str) -> None:
    """de-halm certified for health data: the clinic's namespace names it at once and a pod aimed there runs
    there; certified no more, new pods may not go there again."""
    with health_certified(kubectl, "de-halm"):
        eventually(lambda: _expect(carried(kubectl, clinic) == "de-halm,niemeyer"))
        kubectl.create(aimed("now-lawful", clinic, "de-halm"), as_user=MEMBER)
        assert eventually(lambda: site_of(kubectl, clinic, "now-lawful")) == "de-halm"
    eventually(lambda: _expect(carried(kubectl, clinic) == "niemeyer"))
    kubectl.create(aimed("lawful-no-more", clinic, "de-halm"), as_user=MEMBER)
    eventually(lambda: unschedulable(kubectl, clinic, "lawful-no-more"))


def _expect(fact: bool) -> None:
    assert fact


def test_a_tenant_with_no_lawful_site_has_its_pods_refused_saying_why(kubectl: Kubectl, unique: str) -> None:
    kubectl.apply(member_tenant(unique, dataClass="health", allowedSites=["de-halm"]))
    eventually(lambda: tenant_ready(kubectl, unique))
    sites = condition(kubectl.get("tenant", unique), "Sites")
    assert (sites["status"], sites["reason"]) == ("False", "NoLawfulSite")
    assert "de-halm: not certified for health data" in sites["message"]
    refused = kubectl.create(aimed("nowhere", unique), as_user=MEMBER, check=False)
    assert refused.returncode != 0
    assert f"tenant {unique} has no site that may hold its health data" in refused.stderr
    assert "the Tenant condition Sites says why" in refused.stderr
    assert kubectl.get("pods", "-n", unique)["items"] == []
    events = kubectl.get("events", "-A", "--field-selector", f"involvedObject.name={unique},type=Warning")["items"]
    assert "NoLawfulSite" in {event["reason"] for event in events}


@pytest.mark.usefixtures("workloads_removed")
def test_a_gpu_workloads_runner_pods_are_pinned_too_and_run(kubectl: Kubectl, unique: str) -> None:
    kubectl.apply(member_tenant(unique, dataClass="health", quota={"gpus": 4, "cpu": "8", "memory": "32Gi"}))
    eventually(lambda: tenant_ready(kubectl, unique))
    kubectl.apply(workload("cohort", unique, gpus=1))

    def running() -> dict[str, Any]:
        pods = kubectl.get("pods", "-n", unique, "-l", "gigafab.nl/workload=cohort")["items"]
        assert [pod["status"].get("phase") for pod in pods] == ["Running"]
        return dict(pods[0])

    pod = eventually(running, timeout=90)
    assert pins(pod) == [["niemeyer"]]
    assert kubectl.get("node", pod["spec"]["nodeName"])["metadata"]["labels"][SITE_NODE_LABEL] == "niemeyer"


def test_a_kubelet_cannot_move_its_node_into_another_site(kubectl: Kubectl) -> None:
    """The pin trusts the node label only because NodeRestriction forbids a node to set it on itself."""
    node = node_name("de-halm", 0)
    kubelet = f"system:node:{node}"
    answer = kubectl.run(
        "label",
        "node",
        node,
        f"{SITE_NODE_LABEL}=niemeyer",
        "--overwrite",
        as_user=kubelet,
        groups=("system:nodes",),
        check=False,
    )
    assert answer.returncode != 0
    assert "is not allowed to modify labels" in answer.stderr
    assert kubectl.get("node", node)["metadata"]["labels"][SITE_NODE_LABEL] == "de-halm"
    # the node may still label itself with labels of its own: the refusal is about the site label
    own = kubectl.run("label", "node", node, "example.org/rack=r1", "--dry-run=server", as_user=kubelet, groups=("system:nodes",))
    assert own.returncode == 0


# -- what a pod may not ask for ---------------------------------------------------------------------


def deployment(name: str, namespace: str, change: Any) -> dict[str, Any]:
    template = {"metadata": {"labels": {"app": name}}, "spec": gpu_pod(name, namespace, gpus=0)["spec"]}
    change(template)
    spec = {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": template}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def gpu_workload(name: str, namespace: str, change: Any) -> dict[str, Any]:
    body = workload(name, namespace, gpus=1)
    body["spec"]["template"]["metadata"] = {"labels": {"app": name}}
    change(body["spec"]["template"])
    return body


def pod_of(name: str, namespace: str, change: Any) -> dict[str, Any]:
    pod = gpu_pod(name, namespace, gpus=0)
    change(pod)
    return pod


def node_name_set(pod: dict[str, Any]) -> None:
    pod["spec"]["nodeName"] = node_name("niemeyer", 0)


def critical(pod: dict[str, Any]) -> None:
    pod["spec"]["priorityClassName"] = "system-node-critical"


def devices(pod: dict[str, Any]) -> None:
    env = [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]
    pod["spec"]["initContainers"] = [{"name": "prep", "image": "registry.example/prep:1", "env": env}]


def masquerade(pod: dict[str, Any]) -> None:
    pod["metadata"].setdefault("labels", {}).update({"gigafab.nl/workload": "someone-elses", "gigafab.nl/epoch": "1"})


REFUSALS = [
    (node_name_set, "sets spec.nodeName, which skips the scheduler"),
    (critical, "asks for PriorityClass system-node-critical, which tenant pods may not use"),
    (devices, "sets NVIDIA_VISIBLE_DEVICES in container prep"),
    (masquerade, "gigafab.nl/ labels mark what gigafab makes"),
]


@pytest.mark.parametrize("make", [pod_of, deployment, gpu_workload], ids=["pod", "deployment", "gpuworkload"])
@pytest.mark.parametrize(("change", "said"), REFUSALS, ids=["node-name", "priority-class", "nvidia-devices", "gigafab-labels"])
def test_a_member_may_not_ask_past_the_boundary(kubectl: Kubectl, clinic: str, make: Any, change: Any, said: str) -> None:
    body = make("past", clinic, change)
    refused = kubectl.create(body, as_user=MEMBER, check=False)
    assert refused.returncode != 0, f"{body['kind']} admitted"
    assert said in refused.stderr, refused.stderr
    assert kubectl.get(body["kind"].lower(), "past", "-n", clinic) is None
    plain = make("plain", clinic, lambda pod: None)
    admitted = kubectl.create(plain, as_user=MEMBER, dry_run=True, check=False)
    assert admitted.returncode == 0, admitted.stderr  # the same object without it passes: the refusal is the change's


def test_a_gpu_workload_below_its_tenants_data_class_is_refused(kubectl: Kubectl, clinic: str) -> None:
    for lesser in ("public", "internal", "personal"):
        refused = kubectl.create(workload("lesser", clinic, gpus=1, dataClass=lesser), as_user=MEMBER, check=False)
        assert refused.returncode != 0
        assert f"declares spec.dataClass {lesser}, below its tenant's health" in refused.stderr
    assert kubectl.get("gpuworkload", "lesser", "-n", clinic) is None
    assert kubectl.create(workload("equal", clinic, gpus=1, dataClass="health"), as_user=MEMBER, dry_run=True).returncode == 0


@pytest.mark.usefixtures("workloads_removed")
def test_a_member_cannot_take_a_running_gpu_pod_out_of_its_workload(kubectl: Kubectl, unique: str) -> None:
    """The audit's repro: removing gigafab.nl/workload from a running GPU pod would orphan it (no fencing, no
    failover); Kueue's labels likewise tie it to its queue. Other labels stay the member's."""
    kubectl.apply(member_tenant(unique, quota={"gpus": 4, "cpu": "8", "memory": "32Gi"}))
    eventually(lambda: tenant_ready(kubectl, unique))
    kubectl.apply(workload("steady", unique, gpus=1))

    def running() -> dict[str, Any]:
        pods = kubectl.get("pods", "-n", unique, "-l", "gigafab.nl/workload=steady")["items"]
        assert [pod["status"].get("phase") for pod in pods] == ["Running"]
        return dict(pods[0])

    pod = eventually(running, timeout=90)
    name = pod["metadata"]["name"]
    kueue = sorted(key for key in pod["metadata"]["labels"] if key.startswith("kueue.x-k8s.io/"))
    for change in ("gigafab.nl/workload-", "gigafab.nl/epoch=7", "gigafab.nl/site=elsewhere", *(f"{key}-" for key in kueue)):
        answer = kubectl.run("label", "pod", name, "-n", unique, change, "--overwrite", as_user=MEMBER, check=False)
        assert answer.returncode != 0, change
        assert "only gigafab and Kueue change them" in answer.stderr
    assert kubectl.get("pod", name, "-n", unique)["metadata"]["labels"] == pod["metadata"]["labels"]
    assert kubectl.run("label", "pod", name, "-n", unique, "note=mine", as_user=MEMBER).returncode == 0
    runner = kubectl.get("deployments", "-n", unique, "-l", "gigafab.nl/workload=steady")["items"][0]["metadata"]["name"]
    scale = kubectl.run(
        "patch",
        "deployment",
        runner,
        "-n",
        unique,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"replicas": 4}}),
        as_user=MEMBER,
        check=False,
    )
    assert scale.returncode != 0
    # two policies refuse it (gigafab's object; its pods ask for GPUs): the apiserver names the one it checked first
    refusals = ("was made by gigafab for a GpuWorkload", "create a GpuWorkload instead")
    assert any(refusal in scale.stderr for refusal in refusals), scale.stderr
    assert kubectl.get("deployment", runner, "-n", unique)["spec"]["replicas"] == 1


def test_a_member_may_not_read_secrets_but_may_mount_them(kubectl: Kubectl, clinic: str) -> None:
    """What docs/security.md says of members and Secrets: no get or list through the API, but a pod of theirs
    may mount any Secret of their namespace (and so read it)."""
    assert not kubectl.can("get", "secrets", clinic, MEMBER)
    assert not kubectl.can("list", "secrets", clinic, MEMBER)
    pod = gpu_pod("mounts", clinic, gpus=0)
    pod["spec"]["volumes"] = [{"name": "creds", "secret": {"secretName": "registry-credentials"}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "creds", "mountPath": "/creds"}]
    assert kubectl.create(pod, as_user=MEMBER, dry_run=True).returncode == 0
