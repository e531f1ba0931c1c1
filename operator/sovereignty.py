"""Where a tenant's pods may run at all, as a pure function: its lawful sites.

Placement keeps a GpuWorkload on a site that may hold its data; a tenant's other pods
(CPU-only pods, Jobs, Deployments, whatever made them) must stay there too. A site is
lawful for a tenant when placement's sovereignty rules (``placement.SOVEREIGNTY``) all
pass for the tenant's data class: the site is in an EU member state, certified for that
class, in the tenant's ``allowedSites`` when it names any, and Active. Health, room and
power do not count: they say whether work fits now, not whether the data may be there.

The operator writes the answer on each of the tenant's namespaces
(``LAWFUL_SITES_ANNOTATION``), and the admission policy
``gigafab-tenant-pods-on-lawful-sites`` (config/admission/) pins every pod created there
to nodes labelled ``SITE_NODE_LABEL`` with one of these sites, and refuses every pod
while there is none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gigafab.operator.placement import SiteView, TenantView, Verdict, unlawful

from gigafab.api.v1alpha1 import SiteSpec
from gigafab.api.v1alpha1.tenant import TenantSpec


@dataclass(frozen=True)
class Lawful:
    """The sites a tenant's pods may run on, and why each other site may not hold its data."""

    sites: tuple[str, ...]
    """Sorted names."""
    refused: tuple[Verdict, ...] = ()

    @property
    def annotation(self) -> str:
        """The value of ``LAWFUL_SITES_ANNOTATION``: the names, comma-separated; empty when none."""
        return ",".join(self.sites)


def site_view(body: Mapping[str, Any]) -> SiteView:
    """What the sovereignty rules read of a Site body; health, room and power are not theirs to judge."""
    spec = SiteSpec.from_body(body.get("spec"))
    return SiteView(
        name=str(body["metadata"]["name"]),
        lifecycle=str(spec.lifecycle),
        healthy=True,
        jurisdiction=spec.jurisdiction,
        data_classes=frozenset(str(data) for data in spec.data_classes),
        power_limit_kw=float(spec.power_budget_kw),
        placed_power_kw=0.0,
        gpu_watts=spec.gpu_power_watts,
    )


def lawful_sites(tenant: str, spec: TenantSpec, sites: Iterable[SiteView]) -> Lawful:
    """The sites where pods of ``tenant`` may run: every sovereignty rule of placement passes for its data class."""
    who = TenantView(tenant, frozenset(spec.allowed_sites))
    lawful, refused = [], []
    for site in sorted(sites, key=lambda site: site.name):
        verdict = unlawful(site, str(spec.data_class), who)
        if verdict is None:
            lawful.append(site.name)
        else:
            refused.append(verdict)
    return Lawful(tuple(lawful), tuple(refused))


def no_lawful_site(tenant: str, spec: TenantSpec, lawful: Lawful) -> str:
    """Why ``tenant``'s pods can run nowhere, for its status and a Warning event; empty when they can run somewhere."""
    if lawful.sites:
        return ""
    why = "; ".join(f"{verdict.site}: {verdict.reason}" for verdict in lawful.refused) or "no Site is defined"
    return (
        f"no site may hold {spec.data_class} data of tenant {tenant}, so its pods are refused ({why}); "
        "a platform engineer must certify or activate an EU site for it, or change the tenant's allowedSites"
    )
