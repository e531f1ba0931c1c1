"""Problems only the operator can see, found before anything is touched.

Each is a pure function of what the operator observed; when any is found the Tenant
is Ready=False with the problem's reason, a Warning event is posted, and no object
is created or changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gigafab.operator.quantity import quantity
from gigafab.operator.tenancy import Destination, namespaces_of, quota_hard

from gigafab.api.v1alpha1.tenant import TenantSpec

ABSENT = None
"""Marks a namespace that does not exist yet."""
FINISHED_POD_PHASES = frozenset({"Succeeded", "Failed"})
FINISHED_WORKLOAD_PHASES = frozenset({"Failed"})
"""A GpuWorkload in any other phase (Pending, Placed, Running, FailingOver; Pending also while suspended or
queued) is work the tenant still wants: deleting its namespace would destroy it."""
NAMED = 5
"""Objects named in a blocking message before "and N more": enough to act on, short enough for an event."""


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str


def find_problems(
    name: str,
    spec: TenantSpec,
    *,
    namespace_owners: Mapping[str, str | None],
    destinations: Mapping[str, Destination],
    quota_used: Mapping[str, Mapping[str, str]],
) -> list[Problem]:
    """Every reason not to reconcile tenant ``name`` now, in a stable order.

    ``namespace_owners`` maps each existing namespace to its ``gigafab.nl/tenant``
    label ("" when it has none); ``quota_used`` maps a namespace to its quota's
    ``status.used``.
    """
    problems: list[Problem] = []
    namespaces = namespaces_of(name, spec)
    for namespace in namespaces:
        owner = namespace_owners.get(namespace, ABSENT)
        if owner is not ABSENT and owner != name:
            holder = f"tenant {owner}" if owner else "something outside gigafab"
            problems.append(
                Problem("NamespaceConflict", f"namespace {namespace} already exists and belongs to {holder}; choose another name")
            )
    unknown = [d for d in spec.egress if d not in destinations]
    if unknown:
        problems.append(
            Problem(
                "UnknownEgressDestination",
                f"no EgressDestination named {', '.join(unknown)}; create it or remove it from spec.egress",
            )
        )
    for index, namespace in enumerate(namespaces):
        used = quota_used.get(namespace, {})
        for resource, limit in quota_hard(spec, index, len(namespaces)).items():
            if resource in used and quantity(used[resource]) > quantity(limit):
                problems.append(
                    Problem(
                        "QuotaBelowUse",
                        f"namespace {namespace} uses {used[resource]} of {resource}, more than the new quota {limit}; "
                        "stop some work first or raise spec.quota",
                    )
                )
    return problems


def removal_blockers(
    pods: Sequence[Mapping[str, Any]], claims: Sequence[Mapping[str, Any]], workloads: Sequence[Mapping[str, Any]]
) -> list[str]:
    """What deleting a namespace would destroy, in words: pods not finished, every PersistentVolumeClaim (its
    volume may be deleted with it) and every GpuWorkload not Failed; empty when nothing is at stake."""
    found = []
    active = [pod for pod in pods if (pod.get("status") or {}).get("phase") not in FINISHED_POD_PHASES]
    if active:
        found.append(f"{len(active)} pod(s) running or pending")
    if claims:
        found.append(f"PersistentVolumeClaim(s) {_names(claims)}")
    unfinished = [
        workload
        for workload in workloads
        if (workload.get("status") or {}).get("phase", "Pending") not in FINISHED_WORKLOAD_PHASES
    ]
    if unfinished:
        phases = {w["metadata"]["name"]: (w.get("status") or {}).get("phase", "Pending") for w in unfinished}
        found.append(f"GpuWorkload(s) {_names(unfinished, phases)}")
    return found


def _names(items: Sequence[Mapping[str, Any]], detail: Mapping[str, str] | None = None) -> str:
    names = sorted(item["metadata"]["name"] for item in items)
    shown = [f"{name} ({detail[name]})" if detail else name for name in names[:NAMED]]
    more = f" and {len(names) - NAMED} more" if len(names) > NAMED else ""
    return ", ".join(shown) + more
