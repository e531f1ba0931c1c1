"""Labels and annotations that more than one process reads: one home for each contract.

Only the node labels that say where a node is live here so far; the others move here as
their modules are touched (issue 20).
"""

from __future__ import annotations

ZONE_LABEL = "topology.kubernetes.io/zone"
"""The well-known zone label: the scheduler and Kueue's flavors select a site's nodes by it. A kubelet
may set it on its own Node, so it says where work is *scheduled*, never where it *may* run."""

SITE_NODE_LABEL = "node-restriction.kubernetes.io/gigafab-site"
"""The Site (its name) a Node belongs to, set by whoever provisions the node. The NodeRestriction
admission plugin refuses any label under ``node-restriction.kubernetes.io/`` that a kubelet sets on
its own Node, so a compromised node cannot claim to stand in a certified site: tenant pods are pinned
to their lawful sites by this label, and a health record is believed only for a Node of the record's
site by this label."""

LAWFUL_SITES_ANNOTATION = "gigafab.nl/lawful-sites"
"""On a tenant's Namespace: the Sites (names, comma-separated, sorted) where the tenant's pods may run;
empty when none may. The operator writes it (operator/sovereignty.py) and keeps it current as Sites and
the Tenant change; no tenant role may change a Namespace. The admission policy
``gigafab-tenant-pods-on-lawful-sites`` (config/admission/) reads it to pin every pod of the namespace
to nodes whose ``SITE_NODE_LABEL`` names one of these sites."""
