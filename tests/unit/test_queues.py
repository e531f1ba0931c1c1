"""Kueue's objects for the tracks (pure)."""

from __future__ import annotations

from gigafab.operator.queues import cluster_queue, local_queue, runner_labels, site_quotas, track_objects
from gigafab.operator.tracks import Share

DEFAULT = [Share("euro-hpc", 50, 100), Share("national", 25, 100), Share("regional", 25, 200)]


def test_each_site_is_divided_by_the_shares_and_adds_up() -> None:
    quotas = site_quotas(DEFAULT, {"niemeyer": 16, "de-halm": 15, "lost": 0})
    assert quotas["euro-hpc"] == {"de-halm": 7, "lost": 0, "niemeyer": 8}
    assert quotas["regional"]["de-halm"] == 4, "the GPU left by rounding goes to the regional track"
    assert sum(quotas[t]["de-halm"] for t in quotas) == 15


def test_a_cluster_queue_per_track_in_one_cohort_reclaims_and_does_not_preempt_to_borrow() -> None:
    queue = cluster_queue(DEFAULT[1], {"niemeyer": 4, "de-halm": 4})
    spec = queue["spec"]
    assert queue["metadata"]["name"] == "national"
    assert spec["cohortName"] == "gigafab"
    assert spec["preemption"]["reclaimWithinCohort"] == "Any"
    assert spec["preemption"]["borrowWithinCohort"] == {"policy": "Never"}
    flavors = spec["resourceGroups"][0]["flavors"]
    assert [(f["name"], f["resources"][0]["nominalQuota"]) for f in flavors] == [("de-halm", 4), ("niemeyer", 4)]
    assert all("lendingLimit" not in f["resources"][0] for f in flavors)


def test_a_track_that_does_not_lend_has_a_lending_limit_of_zero() -> None:
    queue = cluster_queue(Share("euro-hpc", 50, 100, lending=False), {"niemeyer": 8})
    assert queue["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]["lendingLimit"] == 0


def test_flavors_select_the_site_zone_and_priority_classes_carry_the_track_priority() -> None:
    objects = track_objects(DEFAULT, {"niemeyer": 16}, {"niemeyer": "zone-a"}, "topology.kubernetes.io/zone")
    kinds = [o["kind"] for o in objects]
    assert kinds == ["ResourceFlavor", *["WorkloadPriorityClass"] * 3, *["ClusterQueue"] * 3]
    assert objects[0]["spec"]["nodeLabels"] == {"topology.kubernetes.io/zone": "zone-a"}
    assert {o["metadata"]["name"]: o["value"] for o in objects if o["kind"] == "WorkloadPriorityClass"} == {
        "gigafab-euro-hpc": 100,
        "gigafab-national": 100,
        "gigafab-regional": 200,
    }


def test_work_queues_in_its_namespace_at_its_track_priority() -> None:
    assert runner_labels("regional") == {
        "kueue.x-k8s.io/queue-name": "gigafab",
        "kueue.x-k8s.io/priority-class": "gigafab-regional",
    }
    assert local_queue("umcg-research", "regional", {})["spec"] == {"clusterQueue": "regional"}
