"""Problems only the operator can see, found before anything is touched.

Each is a pure function of what the operator observed; when any is found the Tenant
is Ready=False with the problem's reason, a Warning event is posted, and no object
is created or changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gigafab.operator.quantity import quantity
from gigafab.operator.tenancy import Destination, namespaces_of, quota_hard

from gigafab.api.v1alpha1.tenant import TenantSpec

ABSENT = None
"""Marks a namespace that does not exist yet."""


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
