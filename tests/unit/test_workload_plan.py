"""From memory to placement inputs, and from a decision to the Job that runs it."""

from __future__ import annotations

from typing import Any

from gigafab.operator.site_health import NodeSummary
from gigafab.operator.workload_plan import pod_gpus, runner_for, site_views


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
