"""Whether an unschedulable replica waits for GPUs: the scheduler's own words, as Kubernetes 1.36 writes them.

Every message below was produced on the local plane (kube-scheduler v1.36.3, two 8-GPU
KWOK nodes per site, pods required on niemeyer's zone), copied verbatim."""

from __future__ import annotations

import pytest
from gigafab.operator.scheduling import nodes_short_of_gpus, summary, waits_for_gpus

PREEMPTION = "no new claims to deallocate, preemption: 0/6 nodes are available: 6 Preemption is not helpful for scheduling."
AFFINITY = "4 node(s) didn't match Pod's node affinity/selector"

GPUS = (
    f"0/6 nodes are available: 2 Insufficient nvidia.com/gpu, {AFFINITY}. no new claims to deallocate, preemption: "
    "0/6 nodes are available: 2 No preemption victims found for incoming pod, 4 Preemption is not helpful for scheduling."
)
CPU_ON_ONE = f"0/6 nodes are available: 1 Insufficient nvidia.com/gpu, 2 Insufficient cpu, {AFFINITY}. {PREEMPTION}"
CPU_AND_GPUS = f"0/6 nodes are available: 2 Insufficient cpu, 2 Insufficient nvidia.com/gpu, {AFFINITY}. {PREEMPTION}"
SELECTOR = f"0/6 nodes are available: 6 node(s) didn't match Pod's node affinity/selector. {PREEMPTION}"
VOLUME = "0/6 nodes are available: pod has unbound immediate PersistentVolumeClaims. not found"
PORTS = (
    f"0/6 nodes are available: 2 node(s) didn't have free ports for the requested pod ports, {AFFINITY}. no new claims to "
    "deallocate, preemption: 0/6 nodes are available: 2 No preemption victims found for incoming pod, 4 Preemption is not "
    "helpful for scheduling."
)
GPUS_AND_A_TAINT = (
    f"0/6 nodes are available: 1 Insufficient nvidia.com/gpu, 1 node(s) had untolerated taint(s), {AFFINITY}. no new claims "
    "to deallocate, preemption: 0/6 nodes are available: 1 No preemption victims found for incoming pod, 5 Preemption is "
    "not helpful for scheduling."
)
CPU_AND_A_TAINT = f"0/6 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint(s), {AFFINITY}. {PREEMPTION}"
TAINTED = f"0/6 nodes are available: 2 node(s) had untolerated taint(s), {AFFINITY}. {PREEMPTION}"
CORDONED = f"0/6 nodes are available: 2 node(s) were unschedulable, {AFFINITY}. {PREEMPTION}"


@pytest.mark.parametrize(
    ("message", "lost", "waits"),
    [
        (GPUS, 0, True),  # both nodes of the site are full of GPUs
        (CPU_ON_ONE, 0, False),  # one node has the GPUs but too little CPU: another site would not help
        (CPU_AND_GPUS, 0, True),  # each node lacks GPUs (and CPU too): no node of the site has the GPUs
        (SELECTOR, 0, False),  # the tenant's own node selector matches nothing
        (VOLUME, 0, False),
        (PORTS, 0, False),
        (GPUS_AND_A_TAINT, 1, True),  # one node failed (the health plane's taint), the other is full
        (GPUS_AND_A_TAINT, 0, False),  # the taint is no loss the operator knows of (someone's maintenance taint)
        (CPU_AND_A_TAINT, 1, False),  # one node failed; the other has GPUs, too little CPU
        (TAINTED, 2, True),  # both nodes failed or silent
        (TAINTED, 1, False),
        (CORDONED, 2, True),  # cordoned nodes have no usable GPUs, as placement counts them
        (VOLUME, 2, True),  # whatever else it says: every node of the site is lost
    ],
)
def test_a_replica_waits_for_gpus_only_when_every_node_of_its_site_lacks_them_or_is_lost(
    message: str, lost: int, waits: bool
) -> None:
    assert waits_for_gpus(message, site_nodes=2, lost_nodes=lost) is waits


def test_the_nodes_short_of_gpus_are_read_from_the_first_sentence_only() -> None:
    assert [nodes_short_of_gpus(m) for m in (GPUS, CPU_ON_ONE, CPU_AND_GPUS, SELECTOR, VOLUME)] == [2, 1, 2, 0, 0]
    assert nodes_short_of_gpus("0/6 nodes are available: 6 Preemption is not helpful. 3 Insufficient nvidia.com/gpu") == 0
    assert nodes_short_of_gpus("0/9 nodes are available: 12 Insufficient nvidia.com/gpus") == 0, "another resource"


def test_the_summary_is_what_the_scheduler_says_of_the_nodes_without_its_preemption_report() -> None:
    assert summary(CPU_ON_ONE) == f"0/6 nodes are available: 1 Insufficient nvidia.com/gpu, 2 Insufficient cpu, {AFFINITY}"
    assert summary(VOLUME) == "0/6 nodes are available: pod has unbound immediate PersistentVolumeClaims"


def test_a_site_left_without_nodes_has_no_gpus_either() -> None:
    assert waits_for_gpus(SELECTOR, site_nodes=0, lost_nodes=0)
