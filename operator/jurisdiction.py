"""Whether a destination's jurisdiction keeps data under European law.

A destination is Accepted only when its jurisdiction is an EU member state and none of
its networks overlaps a network of a destination outside the EU: one address cannot be
under two jurisdictions, so when a platform engineer declares the same range NL here and
US there, the EU claim is the one refused (the non-EU one is refused anyway) and no
tenant reaches that range until one of the two is corrected.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from gigafab.operator.conditions import Condition

from gigafab.api.v1alpha1.common import EU_MEMBER_STATES

OUTSIDE_EU = "OutsideEU"
OVERLAPS_NON_EU = "OverlapsNonEU"
INVALID = "InvalidSpec"


@dataclass(frozen=True)
class Declared:
    """An EgressDestination as a platform engineer declared it, and the verdict last written on it."""

    name: str
    jurisdiction: str
    cidrs: tuple[str, ...]
    ports: tuple[tuple[int, str], ...] = ()
    invalid: str = ""
    """Why its spec does not parse, when it does not (such as a range stored before the API refused it): never Accepted."""
    written: tuple[str, str] | None = None
    """The (status, reason) of its Accepted condition as last read, None when it has none yet."""


def _networks(cidrs: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]


def overlapping(cidrs: Sequence[str], theirs: Sequence[str]) -> list[str]:
    """The pairs "mine ∩ theirs" of ``cidrs`` and ``theirs`` that share addresses."""
    pairs = []
    for mine, other in ((a, b) for a in _networks(cidrs) for b in _networks(theirs)):
        if mine.version == other.version and mine.overlaps(other):
            pairs.append(f"{mine} and {other}")
    return pairs


def egress_acceptance(jurisdiction: str, cidrs: Sequence[str] = (), others: Iterable[Declared] = ()) -> Condition:
    """Accepted only for EU member states whose networks overlap no non-EU destination among ``others``;
    the reason says why, for the audit trail."""
    if jurisdiction not in EU_MEMBER_STATES:
        return Condition(
            "Accepted",
            False,
            OUTSIDE_EU,
            f"{jurisdiction} is not an EU member state: tenant traffic may only reach European "
            "destinations, so no NetworkPolicy will ever allow this destination",
        )
    clashes = {
        other.name: pairs
        for other in sorted(others, key=lambda other: other.name)
        if not other.invalid and other.jurisdiction not in EU_MEMBER_STATES and (pairs := overlapping(cidrs, other.cidrs))
    }
    if clashes:
        named = "; ".join(f"{name}: {', '.join(pairs)}" for name, pairs in clashes.items())
        return Condition(
            "Accepted",
            False,
            OVERLAPS_NON_EU,
            f"claims {jurisdiction} for networks that a destination outside the EU also claims ({named}); "
            "one network is under one jurisdiction: correct the cidrs of one of them. Until then no NetworkPolicy allows it",
        )
    return Condition("Accepted", True, "EUJurisdiction", f"{jurisdiction} is an EU member state")


def judge(declared: Declared, everyone: Iterable[Declared]) -> Condition:
    """The Accepted condition of ``declared`` among ``everyone`` (which may include itself)."""
    if declared.invalid:
        return Condition("Accepted", False, INVALID, f"{declared.invalid}; correct the spec")
    return egress_acceptance(declared.jurisdiction, declared.cidrs, (o for o in everyone if o.name != declared.name))


def judge_all(everyone: Mapping[str, Declared]) -> dict[str, Condition]:
    """Every destination's Accepted condition: overlaps make each depend on the others."""
    return {name: judge(declared, everyone.values()) for name, declared in everyone.items()}
