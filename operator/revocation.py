"""What a tenant with an open problem still gets applied: only what takes rights away.

A Tenant with a problem (``tenant_checks.py``) is otherwise left as it is until the problem is
solved, so that a half-understood change grants nothing. But a removal must never wait behind
an unrelated problem: a member taken off the Tenant, a destination deleted or refused, a site
that may no longer hold the tenant's data. Each function here compares what is (``observed``)
with what the Tenant now says (``desired``) and returns the observed object narrowed to their
intersection: nothing the Tenant no longer grants, and nothing it did not grant before.
``None`` means the object should go; an unchanged object means nothing to do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gigafab.operator.tenancy import Manifest


def narrowed_binding(observed: Mapping[str, Any], desired: Mapping[str, Any] | None) -> Manifest | None:
    """A RoleBinding keeping only subjects the Tenant still names; None when none is left, or its role is gone."""
    if desired is None or observed.get("roleRef") != desired.get("roleRef"):
        return None
    kept = [subject for subject in observed.get("subjects") or [] if subject in (desired.get("subjects") or [])]
    if not kept:
        return None
    return {**desired, "subjects": kept}


def narrowed_boundary(observed: Mapping[str, Any], desired: Mapping[str, Any]) -> Manifest:
    """The boundary NetworkPolicy keeping only rules the Tenant still asks for, as they were: a destination
    deleted, refused or changed loses its rule, and none is added."""
    spec, wanted = observed.get("spec") or {}, desired["spec"]
    return {
        **desired,
        "spec": {
            **wanted,
            "ingress": [rule for rule in wanted.get("ingress") or [] if rule in (spec.get("ingress") or [])],
            "egress": [rule for rule in wanted.get("egress") or [] if rule in (spec.get("egress") or [])],
        },
    }


def narrowed_sites(observed: str | None, desired: Sequence[str]) -> str:
    """The lawful sites a namespace may keep (the value of its ``gigafab.nl/lawful-sites``): those it carries
    that are still lawful; none when it carries none."""
    carried = [site for site in (observed or "").split(",") if site]
    return ",".join(sorted(site for site in carried if site in desired))


def revocations(
    bindings: Sequence[Mapping[str, Any]], boundary: Mapping[str, Any] | None, desired: Sequence[Mapping[str, Any]]
) -> tuple[list[Manifest], list[str]]:
    """What to change in one namespace: (objects to apply, narrowed; names of RoleBindings to delete).

    ``bindings``: the managed RoleBindings found there; ``boundary``: its boundary NetworkPolicy as found
    (None when it has none); ``desired``: the namespace's objects as the Tenant now says."""
    wanted = {(m["kind"], m["metadata"]["name"]): m for m in desired}
    apply: list[Manifest] = []
    delete: list[str] = []
    for found in bindings:
        name = found["metadata"]["name"]
        narrowed = narrowed_binding(found, wanted.get(("RoleBinding", name)))
        if narrowed is None:
            delete.append(name)
        elif narrowed["subjects"] != found.get("subjects"):
            apply.append(narrowed)
    if boundary is not None:
        key = ("NetworkPolicy", boundary["metadata"]["name"])
        if key in wanted:
            policy = narrowed_boundary(boundary, wanted[key])
            if policy["spec"] != boundary.get("spec"):
                apply.append(policy)
    return apply, delete
