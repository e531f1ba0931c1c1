"""Kueue's objects for the allocation tracks, as pure functions.

The operator does not queue work itself: Kueue does (guaranteed quota, cohorts,
borrowing, lending limits, preemption to take a lent share back). This module says
what Kueue should hold:

- a ResourceFlavor per Site, selecting the nodes of its zone: Kueue counts GPUs per
  site, and a GpuWorkload's pods (with the site's node affinity) only fit its flavor;
- a WorkloadPriorityClass per track, valued at the track's priority: when GPUs are
  scarce, Kueue admits the highest priority first (the regional track by default);
- a ClusterQueue per track, all in one cohort, with a nominal quota per site of the
  track's share of that site's healthy GPUs (``site_quotas``). A lending track's idle
  quota may be borrowed by the others; a track that does not lend has a lending limit
  of 0. A track within its quota takes lent GPUs back by preempting the borrowers
  (``reclaimWithinCohort: Any``); borrowing never preempts (``borrowWithinCohort:
  Never``); within a track, higher priority preempts lower;
- a LocalQueue ``gigafab`` in every tenant namespace, pointing at the tenant's track
  (built with the tenant's other objects, ``tenancy.desired_objects``).

The GpuWorkload's Deployment carries the LocalQueue and the priority class as labels
(``runner_labels``); Kueue's pod integration holds each pod (a scheduling gate) until
its track's quota admits it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gigafab.operator.tracks import Share, guarantees

KUEUE_API = "kueue.x-k8s.io/v1beta2"
COHORT = "gigafab"
LOCAL_QUEUE = "gigafab"
GPU_RESOURCE = "nvidia.com/gpu"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
MANAGED_BY = {"app.kubernetes.io/managed-by": "gigafab"}


def site_quotas(shares: Sequence[Share], healthy_by_site: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """Nominal GPUs of every track on every site: its share of the site's healthy GPUs (``guarantees``:
    the quotas of a site add up to its healthy GPUs)."""
    quotas: dict[str, dict[str, int]] = {share.name: {} for share in shares}
    for site, healthy in sorted(healthy_by_site.items()):
        for track, gpus in guarantees(shares, max(healthy, 0)).items():
            quotas[track][site] = gpus
    return quotas


def priority_class_name(track: str) -> str:
    return f"gigafab-{track}"


def runner_labels(track: str) -> dict[str, str]:
    """Labels of a GpuWorkload's Deployment and pods: they queue in the namespace's LocalQueue at the
    track's priority."""
    return {QUEUE_LABEL: LOCAL_QUEUE, PRIORITY_LABEL: priority_class_name(track)}


def resource_flavor(site: str, zone_label: str, zone: str) -> dict[str, Any]:
    return {
        "apiVersion": KUEUE_API,
        "kind": "ResourceFlavor",
        "metadata": {"name": site, "labels": dict(MANAGED_BY)},
        "spec": {"nodeLabels": {zone_label: zone}},
    }


def priority_class(share: Share) -> dict[str, Any]:
    return {
        "apiVersion": KUEUE_API,
        "kind": "WorkloadPriorityClass",
        "metadata": {"name": priority_class_name(share.name), "labels": dict(MANAGED_BY)},
        "value": share.priority,
        "description": f"GpuWorkloads of the {share.name} allocation track",
    }


def cluster_queue(share: Share, quotas: Mapping[str, int]) -> dict[str, Any]:
    """The track's ClusterQueue: a flavor (site) each, nominal GPUs from ``quotas``."""
    flavors = []
    for site, gpus in sorted(quotas.items()):
        resource: dict[str, Any] = {"name": GPU_RESOURCE, "nominalQuota": gpus}
        if not share.lending:
            resource["lendingLimit"] = 0
        flavors.append({"name": site, "resources": [resource]})
    return {
        "apiVersion": KUEUE_API,
        "kind": "ClusterQueue",
        "metadata": {"name": share.name, "labels": dict(MANAGED_BY)},
        "spec": {
            "cohortName": COHORT,
            "namespaceSelector": {},
            "queueingStrategy": "BestEffortFIFO",
            "resourceGroups": [{"coveredResources": [GPU_RESOURCE], "flavors": flavors}],
            "preemption": {
                "reclaimWithinCohort": "Any",
                "borrowWithinCohort": {"policy": "Never"},
                "withinClusterQueue": "LowerPriority",
            },
        },
    }


def local_queue(namespace: str, track: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": KUEUE_API,
        "kind": "LocalQueue",
        "metadata": {"name": LOCAL_QUEUE, "namespace": namespace, "labels": dict(labels)},
        "spec": {"clusterQueue": track},
    }


def track_objects(
    shares: Sequence[Share], healthy_by_site: Mapping[str, int], zones: Mapping[str, str], zone_label: str
) -> list[dict[str, Any]]:
    """Every cluster-scoped Kueue object of the policy: flavors, priority classes, ClusterQueues."""
    quotas = site_quotas(shares, healthy_by_site)
    objects = [resource_flavor(site, zone_label, zones.get(site, site)) for site in sorted(healthy_by_site)]
    objects += [priority_class(share) for share in shares]
    objects += [cluster_queue(share, quotas[share.name]) for share in shares]
    return objects
