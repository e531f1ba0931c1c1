"""Where a GpuWorkload may run: a pure function from a snapshot to a site and reasons.

``place`` judges every site against the hard rules, in this order, and stops at the
first that fails (that rule is the site's reason): first whether the site may hold
the work at all, then whether it can now, then whether it has room.

1. its jurisdiction is an EU member state;
2. it is certified for the workload's data class;
3. it is in the tenant's ``allowedSites`` (when the tenant names any);
4. it is Active;
5. it is Healthy;
6. its healthy nodes have room for every replica (a replica's GPUs on one node);
7. its placed GPU power plus this workload's stays within
   ``min(powerBudgetKW, powerCapKW)``.

Among the sites that pass, it prefers the workload's ``sites`` order, then the site
it already runs on (stickiness: what runs well is not moved), then the most headroom
(GPUs left after placing, then power left), then the name: the same snapshot always
gives the same answer. A workload that fits nowhere gets, besides each site's
reason, one sentence that tells the tenant what would make it fit.

Room is counted from each site's histogram of free GPUs per healthy node, built once
per snapshot (``free_gpus_by_node``), so a decision costs a few operations per site
whatever the number of nodes.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from gigafab.api.v1alpha1.common import EU_MEMBER_STATES


class Rule(enum.StrEnum):
    """The hard rule a site failed (in the order they are checked), or FITS."""

    OUTSIDE_EU = "OutsideEU"
    NOT_CERTIFIED = "NotCertified"
    NOT_ALLOWED = "NotAllowedForTenant"
    NOT_ACTIVE = "NotActive"
    NOT_HEALTHY = "NotHealthy"
    NO_ROOM = "NoRoom"
    NO_POWER = "NoPowerHeadroom"
    FITS = "Fits"


@dataclass(frozen=True)
class SiteView:
    """What placement needs to know of one site."""

    name: str
    lifecycle: str
    healthy: bool
    jurisdiction: str
    data_classes: frozenset[str]
    power_limit_kw: float
    """``min(powerBudgetKW, powerCapKW)``."""
    placed_power_kw: float
    """Power of the GPUs already placed on the site."""
    gpu_watts: int
    """Power per GPU on this site (node labels or the Site's default; the highest of them)."""
    free_gpus: Mapping[int, int] = field(default_factory=dict)
    """Free GPUs per healthy node → number of such nodes."""


@dataclass(frozen=True)
class WorkloadView:
    name: str
    gpus: int
    """GPUs per replica (on one node)."""
    replicas: int
    data_class: str
    preferred_sites: tuple[str, ...] = ()
    current_site: str | None = None


@dataclass(frozen=True)
class TenantView:
    name: str
    allowed_sites: frozenset[str] = frozenset()
    """Empty: any site."""


@dataclass(frozen=True)
class Verdict:
    site: str
    rule: Rule
    reason: str

    @property
    def fits(self) -> bool:
        return self.rule is Rule.FITS


@dataclass(frozen=True)
class Decision:
    site: str | None
    verdicts: tuple[Verdict, ...]
    """One per site, the chosen site first, then in the order of preference."""
    message: str


def free_gpus_by_node(free: Iterable[int]) -> dict[int, int]:
    """The histogram ``SiteView.free_gpus`` from each healthy node's free GPU count."""
    return dict(Counter(count for count in free if count > 0))


def replica_room(free_gpus: Mapping[int, int], gpus: int) -> int:
    """How many replicas of ``gpus`` GPUs each fit, a replica's GPUs on one node."""
    return sum(nodes * (free // gpus) for free, nodes in free_gpus.items())


def _outside_eu(site: SiteView, workload: WorkloadView, tenant: TenantView) -> str | None:
    return None if site.jurisdiction in EU_MEMBER_STATES else f"jurisdiction {site.jurisdiction} is not an EU member state"


def _not_certified(site: SiteView, workload: WorkloadView, tenant: TenantView) -> str | None:
    if workload.data_class in site.data_classes:
        return None
    return f"not certified for {workload.data_class} data (holds {', '.join(sorted(site.data_classes))})"


def _not_allowed(site: SiteView, workload: WorkloadView, tenant: TenantView) -> str | None:
    if not tenant.allowed_sites or site.name in tenant.allowed_sites:
        return None
    return f"not in the allowedSites of tenant {tenant.name}"


def _not_active(site: SiteView, workload: WorkloadView, tenant: TenantView) -> str | None:
    return None if site.lifecycle == "Active" else f"site is {site.lifecycle}, only Active sites take new work"


def _not_healthy(site: SiteView, workload: WorkloadView, tenant: TenantView) -> str | None:
    return None if site.healthy else "site is not Healthy (lost, or most of its nodes are)"


def _no_room(site: SiteView, workload: WorkloadView, tenant: TenantView) -> str | None:
    room = replica_room(site.free_gpus, workload.gpus)
    if room >= workload.replicas:
        return None
    return f"room for {room} of {workload.replicas} replica(s) of {workload.gpus} GPU(s) on healthy nodes"


def _no_power(site: SiteView, workload: WorkloadView, tenant: TenantView) -> str | None:
    left_kw = site.power_limit_kw - site.placed_power_kw
    needed_kw = _power_kw(site, workload)
    if needed_kw <= left_kw:
        return None
    return f"needs {needed_kw:g} kW, {max(left_kw, 0):g} kW left of {site.power_limit_kw:g} kW"


def _power_kw(site: SiteView, workload: WorkloadView) -> float:
    return workload.gpus * workload.replicas * site.gpu_watts / 1000


_CHECKS = (
    (Rule.OUTSIDE_EU, _outside_eu),
    (Rule.NOT_CERTIFIED, _not_certified),
    (Rule.NOT_ALLOWED, _not_allowed),
    (Rule.NOT_ACTIVE, _not_active),
    (Rule.NOT_HEALTHY, _not_healthy),
    (Rule.NO_ROOM, _no_room),
    (Rule.NO_POWER, _no_power),
)


SOVEREIGNTY = frozenset({Rule.OUTSIDE_EU, Rule.NOT_CERTIFIED, Rule.NOT_ALLOWED, Rule.NOT_ACTIVE})
"""The rules on whether a site may hold the data at all, whatever its health, room or power: the first four.
They also pin every pod of a tenant, not only its GpuWorkloads (operator/sovereignty.py)."""


def unlawful(site: SiteView, data_class: str, tenant: TenantView) -> Verdict | None:
    """The first sovereignty rule ``site`` fails for ``tenant``'s data of ``data_class``, or None when it may hold it."""
    work = WorkloadView(name="", gpus=1, replicas=1, data_class=data_class)
    for rule, check in _CHECKS:
        if rule in SOVEREIGNTY:
            reason = check(site, work, tenant)
            if reason is not None:
                return Verdict(site.name, rule, reason)
    return None


def judge(site: SiteView, workload: WorkloadView, tenant: TenantView) -> Verdict:
    """The first hard rule ``site`` fails for this workload, or FITS with its headroom."""
    for rule, check in _CHECKS:
        reason = check(site, workload, tenant)
        if reason is not None:
            return Verdict(site.name, rule, reason)
    room = replica_room(site.free_gpus, workload.gpus)
    left_kw = site.power_limit_kw - site.placed_power_kw - _power_kw(site, workload)
    return Verdict(site.name, Rule.FITS, f"fits: room for {room} replica(s), {left_kw:g} kW left after placing")


def place(sites: Sequence[SiteView], workload: WorkloadView, tenant: TenantView) -> Decision:
    """The site for ``workload`` (or None) and every site's verdict."""
    verdicts = {site.name: judge(site, workload, tenant) for site in sites}
    by_name = {site.name: site for site in sites}

    def preference(name: str) -> tuple[int, int, int, float, str]:
        site, order = by_name[name], workload.preferred_sites
        rank = order.index(name) if name in order else len(order)
        gpus_left = _gpus_free(site) - workload.gpus * workload.replicas
        power_left = site.power_limit_kw - site.placed_power_kw
        return (rank, 0 if name == workload.current_site else 1, -gpus_left, -power_left, name)

    ordered = sorted(verdicts, key=lambda name: (not verdicts[name].fits, preference(name)))
    chosen = ordered[0] if ordered and verdicts[ordered[0]].fits else None
    ranked = tuple(verdicts[name] for name in ordered)
    if chosen is not None:
        return Decision(chosen, ranked, f"placed on {chosen}: {verdicts[chosen].reason}")
    return Decision(None, ranked, _what_would_fit(ranked, workload))


def _gpus_free(site: SiteView) -> int:
    return sum(free * nodes for free, nodes in site.free_gpus.items())


_HINTS = {
    Rule.OUTSIDE_EU: "a site in the EU",
    Rule.NOT_CERTIFIED: "a site certified for this data class",
    Rule.NOT_ALLOWED: "the tenant's allowedSites naming a site that may hold this data",
    Rule.NOT_ACTIVE: "that site Active again",
    Rule.NOT_HEALTHY: "that site recovered",
    Rule.NO_ROOM: "fewer or smaller replicas, or GPUs freed there",
    Rule.NO_POWER: "power headroom there (a lower load or a raised power cap)",
}


def _what_would_fit(verdicts: Sequence[Verdict], workload: WorkloadView) -> str:
    """One sentence for the tenant: the nearest miss (the site that passed most rules) says what would make it fit."""
    if not verdicts:
        return "no sites are defined"
    checks = list(Rule)
    nearest = max(verdicts, key=lambda v: checks.index(v.rule))
    return (
        f"fits on no site; nearest: {nearest.site} ({nearest.reason}). "
        f"It would fit with {_HINTS[nearest.rule]}; {workload.gpus * workload.replicas} GPU(s) asked in total."
    )
