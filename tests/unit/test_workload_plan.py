"""From memory to placement inputs, and from a decision to the Job that runs it."""

from __future__ import annotations

from typing import Any

import pytest
from gigafab.operator import workloads
from gigafab.operator.site_health import NodeSummary
from gigafab.operator.workload_plan import MAX_GRACE_SECONDS, pod_gpus, replica_gpus, runner_for, site_views

from gigafab.api.v1alpha1 import GpuWorkloadSpec


def site_body(name: str, **spec: Any) -> dict[str, Any]:
    body = {"jurisdiction": "NL", "powerBudgetKW": 100, "dataClasses": ["public", "internal"], **spec}
    status = {"conditions": [{"type": "Healthy", "status": "True"}]}
    return {"metadata": {"name": name}, "spec": body, "status": status}


def test_site_views_count_free_gpus_per_usable_node_and_placed_power() -> None:
    nodes = {
        "z1": [
            NodeSummary("a", "z1", 8, True, healthy_gpus=8),
            NodeSummary("b", "z1", 8, True, healthy_gpus=6),
            NodeSummary("c", "z1", 8, False, healthy_gpus=8),  # lost: nothing free
            NodeSummary("d", "z1", 8, True, gpu_watts=1000, healthy_gpus=8),
            NodeSummary("e", "z1", 8, True),  # no agent has vouched for it: nothing free
        ]
    }
    (view,) = site_views([site_body("one", zone="z1", powerCapKW=50)], nodes, {"a": 8, "d": 2}, {"one": 10})
    assert view.free_gpus == {6: 2}  # b: 6 healthy; d: 8 - 2 in use; a full, c lost, e unvouched
    assert view.gpu_watts == 1000  # the hungriest node's label
    assert (view.power_limit_kw, view.placed_power_kw) == (50.0, 10.0)
    assert view.healthy
    assert view.data_classes == frozenset({"public", "internal"})


def test_a_site_without_a_healthy_condition_is_not_healthy_and_zone_defaults_to_name() -> None:
    body = site_body("two")
    body["status"] = {}
    (view,) = site_views([body], {"two": [NodeSummary("a", "two", 4, True, healthy_gpus=4)]}, {}, {})
    assert not view.healthy
    assert view.free_gpus == {4: 1}


def test_the_deployment_runs_every_replica_on_the_sites_zone_with_its_gpus_and_epoch() -> None:
    body = {
        "metadata": {"name": "train", "namespace": "umcg", "uid": "u-1"},
        "spec": {
            "gpus": 4,
            "replicas": 3,
            "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
        },
    }
    runner = runner_for(body, "niemeyer", "niemeyer", 2)
    assert (runner["kind"], runner["metadata"]["name"]) == ("Deployment", "train-e2")
    assert runner["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert (runner["spec"]["replicas"], runner["spec"]["strategy"]["type"]) == (3, "Recreate")
    assert runner["spec"]["selector"]["matchLabels"] == {"gigafab.nl/workload": "train", "gigafab.nl/epoch": "2"}
    pod = runner["spec"]["template"]
    ours = {"gigafab.nl/workload": "train", "gigafab.nl/epoch": "2", "gigafab.nl/site": "niemeyer"}
    assert pod["metadata"]["labels"] == {"app": "x", **ours}
    assert pod_gpus(pod["spec"]) == 4
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["niemeyer"]}]}]
    assert "affinity" not in body["spec"]["template"]["spec"], "the workload's own template is not changed"


def with_containers(*extra: dict[str, Any], gpus: int = 2, replicas: int = 1, **pod: Any) -> GpuWorkloadSpec:
    containers = [{"name": "train", "image": "i", "resources": {"limits": {"nvidia.com/gpu": 7}}}, *extra]
    return GpuWorkloadSpec.from_body(
        {"gpus": gpus, "replicas": replicas, "template": {"spec": {"containers": containers, **pod}}}
    )


def gpu_container(name: str, gpus: Any, **more: Any) -> dict[str, Any]:
    return {"name": name, "image": "i", "resources": {"limits": {"nvidia.com/gpu": gpus}}, **more}


def test_a_replica_holds_spec_gpus_plus_what_the_other_containers_ask_for() -> None:
    assert replica_gpus(with_containers()) == 2, "the first container's own limit is the operator's: spec.gpus"
    assert replica_gpus(with_containers(gpu_container("sidecar", 1), gpu_container("probe", "2"))) == 5
    sidecar = gpu_container("cache", 1, restartPolicy="Always")
    init = gpu_container("warm-up", 4)
    assert replica_gpus(with_containers(initContainers=[sidecar])) == 3, "a sidecar runs beside the containers"
    assert replica_gpus(with_containers(initContainers=[init])) == 4, "an init container alone, before them, when larger"
    assert replica_gpus(with_containers(initContainers=[sidecar, init])) == 5, "with the sidecars started before it"


def test_a_gpu_limit_that_is_not_a_whole_number_is_refused_naming_the_container() -> None:
    with pytest.raises(ValueError, match=r"spec\.template\.spec\.containers\[1\] asks for nvidia.com/gpu '1.5': GPUs come"):
        replica_gpus(with_containers(gpu_container("sidecar", "1.5")))
    with pytest.raises(ValueError, match=r"initContainers\[0\] asks for nvidia.com/gpu 'lots', which is not a quantity"):
        replica_gpus(with_containers(initContainers=[gpu_container("x", "lots")]))


def workload_body(spec: GpuWorkloadSpec) -> dict[str, Any]:
    return {"metadata": {"name": "w", "namespace": "t", "uid": "u"}, "spec": spec.to_body()}


def test_the_placed_work_of_a_site_counts_every_containers_gpus_for_its_power_and_room() -> None:
    spec = with_containers(gpu_container("sidecar", 1), gpus=2, replicas=3)
    placed = workloads.workload_index(namespace="t", name="w", spec=spec.to_body(), status={"site": "a", "epoch": 1})
    assert placed == {"a": (("t", "w"), 1, 9)}, "3 replicas of 2 + 1 GPUs: the site's powerDrawKW and shedding use these"
    bad = with_containers(gpu_container("sidecar", "0.5"), gpus=2)
    assert workloads.workload_gpus(bad.to_body()) == 2, "refused placement (it says why); counted by spec.gpus meanwhile"


def test_placement_judges_a_replica_by_all_its_gpus() -> None:
    nodes = {"a": [NodeSummary("a-0", "a", 8, True, healthy_gpus=8)]}  # its agent vouched for its 8 GPUs
    indexes: dict[str, Any] = {
        "site_index": {"a": [{"name": "a", "body": site_body("a")}]},
        "node_index": nodes,
        "runner_pod_index": {},
        "workload_index": {},
        "workload_bodies": {},
    }
    fits = with_containers(gpu_container("sidecar", 2), gpus=6)
    tenant = ("t", {"dataClass": "internal"})
    decision = workloads._judge(workload_body(fits), fits, replica_gpus(fits), tenant, "", indexes, None)
    assert decision.site == "a"
    too_big = with_containers(gpu_container("sidecar", 3), gpus=6)
    decision = workloads._judge(workload_body(too_big), too_big, replica_gpus(too_big), tenant, "", indexes, None)
    assert decision.site is None
    assert decision.verdicts[0].rule == "NoRoom", "9 GPUs a replica; the node has 8"
    power = site_body("a", powerBudgetKW=5)  # 700 W a GPU: 6 GPUs draw 4.2 kW, 6 + 2 draw 5.6 kW
    indexes["site_index"] = {"a": [{"name": "a", "body": power}]}
    decision = workloads._judge(workload_body(fits), fits, replica_gpus(fits), tenant, "", indexes, None)
    assert decision.verdicts[0].rule == "NoPowerHeadroom"


def test_the_grace_period_of_a_copys_pods_is_capped_and_a_shorter_one_kept() -> None:
    def grace(**pod: Any) -> Any:
        body = workload_body(with_containers(**pod))
        return runner_for(body, "a", "a", 1)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]

    assert grace() == MAX_GRACE_SECONDS == 30, "Kubernetes' own default"
    assert grace(terminationGracePeriodSeconds=3600) == MAX_GRACE_SECONDS, "hours would hold a move that long"
    assert grace(terminationGracePeriodSeconds=5) == 5
    assert grace(terminationGracePeriodSeconds=0) == 0


def test_the_first_containers_gpu_request_follows_spec_gpus_too() -> None:
    first = {"name": "train", "image": "i", "resources": {"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 1}}}
    spec = GpuWorkloadSpec.from_body({"gpus": 4, "template": {"spec": {"containers": [first]}}})
    resources = runner_for(workload_body(spec), "a", "a", 1)["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources == {"requests": {"nvidia.com/gpu": 4}, "limits": {"nvidia.com/gpu": 4}}, "else the pod is invalid"
