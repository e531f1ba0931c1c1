"""Which running work borrows, and what a track may take back: pure functions.

Kueue decides admission and preemption; placement has to foresee it. A track's use
of a site beyond its nominal quota there is borrowed, and the work that borrows is
the most recently started beyond the quota (Kueue preempts the most recently
admitted first). Pods created within the same second (creation times are whole
seconds) are told apart by node and workload name, as Kueue tells such workloads
apart by UID: which of them borrows is then arbitrary, but the same on every pass.
A track within its quota on a site may take borrowed GPUs back (``reclaimWithinCohort``),
so for placement those GPUs are as good as free; a track beyond its quota may only use
what is really free.

The same view says which work is "borrowed" when a power cap sheds load.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Held:
    """GPUs held on a node by one pod of a GpuWorkload."""

    workload: tuple[str, str]
    """(namespace, name) of the GpuWorkload."""
    node: str
    site: str
    track: str
    gpus: int
    started: float
    """When the pod was created (epoch seconds): the newest borrow first."""


def use_by_track(held: Iterable[Held], site: str) -> dict[str, int]:
    use: dict[str, int] = {}
    for pod in held:
        if pod.site == site:
            use[pod.track] = use.get(pod.track, 0) + pod.gpus
    return use


def borrowing(held: Sequence[Held], quotas: Mapping[str, Mapping[str, int]], site: str) -> list[Held]:
    """The pods on ``site`` that hold GPUs beyond their track's quota there, newest first per track."""
    use = use_by_track(held, site)
    borrowers: list[Held] = []
    for track, used in sorted(use.items()):
        excess = used - quotas.get(track, {}).get(site, 0)
        on_site = (p for p in held if p.site == site and p.track == track)
        for pod in sorted(on_site, key=lambda p: (-p.started, p.node, p.workload)):
            if excess <= 0:
                break
            borrowers.append(pod)
            excess -= pod.gpus
    return borrowers


def reclaimable(
    held: Sequence[Held], quotas: Mapping[str, Mapping[str, int]], track: str, gpus: int, sites: Iterable[str]
) -> dict[str, int]:
    """GPUs per node that ``track`` could take back for ``gpus`` more GPUs: on every site where its use
    plus ``gpus`` stays within its quota, the GPUs of the other tracks' borrowers."""
    freed: dict[str, int] = {}
    for site in sites:
        if use_by_track(held, site).get(track, 0) + gpus > quotas.get(track, {}).get(site, 0):
            continue
        for pod in borrowing(held, quotas, site):
            if pod.track != track:
                freed[pod.node] = freed.get(pod.node, 0) + pod.gpus
    return freed


def borrowed_workloads(held: Sequence[Held], quotas: Mapping[str, Mapping[str, int]], site: str) -> set[tuple[str, str]]:
    """GpuWorkloads on ``site`` that run on borrowed GPUs."""
    return {pod.workload for pod in borrowing(held, quotas, site)}
