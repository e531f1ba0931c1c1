"""What a site draws and what goes when its power cap is lowered: pure functions.

A site's draw is the power of the GPUs placed there (``gpus * replicas * watts per GPU``,
the watts from the nodes' ``gigafab.nl/gpu-power-watts`` label or the Site's
default). When a grid operator lowers ``powerCapKW`` below the draw, work is shed
until the draw fits, the lowest first:

1. preemptible work;
2. work that runs on GPUs borrowed from another track;
3. standard work;
4. critical work, last.

Within a class the largest goes first (fewer workloads are disturbed). Each shed
workload is moved to a lawful site with room and power headroom when one exists
(placement judges it), and suspended otherwise; critical work is only suspended when
no lawful site can take it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class ShedClass(enum.IntEnum):
    PREEMPTIBLE = 0
    BORROWED = 1
    STANDARD = 2
    CRITICAL = 3


@dataclass(frozen=True)
class PlacedWork:
    key: tuple[str, str]
    """(namespace, name) of the GpuWorkload."""
    criticality: str
    borrowed: bool
    """It runs on GPUs its track borrows on this site."""
    kw: float

    @property
    def shed_class(self) -> ShedClass:
        if self.criticality == "preemptible":
            return ShedClass.PREEMPTIBLE
        if self.criticality == "critical":
            return ShedClass.CRITICAL
        return ShedClass.BORROWED if self.borrowed else ShedClass.STANDARD


def placed_kw(gpus: int, watts: int) -> float:
    return gpus * watts / 1000


def draw_kw(work: Iterable[PlacedWork]) -> float:
    return round(sum(item.kw for item in work), 3)


def to_shed(work: Sequence[PlacedWork], limit_kw: float) -> list[PlacedWork]:
    """The work to take off a site whose draw exceeds ``limit_kw``, in the order it goes."""
    excess = draw_kw(work) - limit_kw
    chosen: list[PlacedWork] = []
    for item in sorted(work, key=lambda w: (w.shed_class, -w.kw, w.key)):
        if excess <= 1e-9:
            break
        chosen.append(item)
        excess -= item.kw
    return chosen


def why(item: PlacedWork, site: str, draw: float, limit_kw: float) -> str:
    kind = {
        ShedClass.PREEMPTIBLE: "preemptible work goes first",
        ShedClass.BORROWED: "it runs on GPUs borrowed from another track",
        ShedClass.STANDARD: "standard work goes before critical work",
        ShedClass.CRITICAL: "no lesser work is left to shed",
    }[item.shed_class]
    return f"site {site} draws {draw:g} kW, above its power cap of {limit_kw:g} kW; {kind}"
