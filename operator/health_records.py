"""Which health records the operator believes, as pure functions.

A site's gateway writes ``/gigafab/health/v1/sites/<site>/nodes/<node>`` (``agents/records.py``),
and etcd lets it write only under its own site's prefix once the health etcd has per-site users
(docs/security.md). So the **key** says which site speaks and for which node; the JSON value is
only what it says. ``read`` takes site and node from the key and refuses a value that names
another node or site, or that cannot be read. ``membership`` then asks the Node: a record is
applied only to a Node that exists and whose ``node-restriction.kubernetes.io/gigafab-site``
label (``SITE_NODE_LABEL``: set by whoever provisions the node, never by its kubelet) names the
key's site. A gateway therefore speaks only for the Nodes of its own site: a record under
niemeyer's prefix cannot taint, count or move anything of de-halm.

Every refusal has a reason (``Refusal``: the metric's label) and a message that says what to fix.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gigafab.agents.records import PREFIX
from gigafab.operator.node_health import RANK

from gigafab.api.labels import SITE_NODE_LABEL

NODES_KEY = re.compile(rf"^{re.escape(PREFIX)}/(?P<site>[^/]*)/nodes/(?P<node>[^/]*)$")
GATEWAY_KEY = re.compile(rf"^{re.escape(PREFIX)}/(?P<site>[^/]*)/gateway$")
SITE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
"""A Site's name: a DNS-1123 label (the Site kind's names)."""
NODE_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
"""A Node's name: a DNS-1123 subdomain. Checked before the name goes into an API path."""
REASON_LENGTH = 1024
"""Characters of a record's reason kept (the Node's condition and annotation carry it)."""


class Refusal(enum.StrEnum):
    """Why a record is not applied (``gigafab_health_records_refused_total{reason}``)."""

    MALFORMED = "malformed"
    """The key is not ``…/sites/<site>/nodes/<node>`` with valid names, or the value is no record."""
    KEY_MISMATCH = "key_mismatch"
    """The value names another node or site than its key."""
    UNKNOWN_NODE = "unknown_node"
    """No Node of that name exists (yet): the record is held until one does."""
    UNLABELLED_NODE = "unlabelled_node"
    """The Node carries no site label: nobody said which site it belongs to."""
    NODE_OF_ANOTHER_SITE = "node_of_another_site"
    """The Node's site label names another site than the key."""


@dataclass(frozen=True)
class Record:
    """A node's health as its site's gateway recorded it; ``site`` and ``node`` are the key's."""

    site: str
    node: str
    health: str
    reason: str
    healthy_gpus: int
    """GPUs the record calls Healthy."""
    last_report: float | None
    """Wall-clock time of the node's last report, when the gateway heard it since its start."""


@dataclass(frozen=True)
class Refused:
    """A record (or key) the operator does not apply, and why."""

    reason: Refusal
    key: str
    message: str
    site: str | None = None
    """The key's site, when the key names one."""
    node: str | None = None
    """The key's node, when the key names one."""


def key_parts(key: str) -> tuple[str, str] | None:
    """(site, node) of a well-formed node key, else None."""
    found = NODES_KEY.match(key)
    if found is None or not SITE_NAME.match(found["site"]) or not NODE_NAME.match(found["node"]):
        return None
    return found["site"], found["node"]


def gateway_site(key: str) -> str | None:
    """The site of a ``…/sites/<site>/gateway`` key, else None."""
    found = GATEWAY_KEY.match(key)
    return found["site"] if found is not None and SITE_NAME.match(found["site"]) else None


def read(key: bytes, value: bytes) -> Record | Refused:
    """The record under ``key``, or why it is refused. Site and node come from the key."""
    text = key.decode(errors="replace")
    parts = key_parts(text)
    if parts is None:
        why = f"not a node record: keys under {PREFIX}/ are <site>/gateway or <site>/nodes/<node> with DNS names"
        return Refused(Refusal.MALFORMED, text, why)
    site, node = parts
    try:
        document = json.loads(value)
    except ValueError:
        return Refused(Refusal.MALFORMED, text, "the value is not JSON", site, node)
    if not isinstance(document, dict):
        return Refused(Refusal.MALFORMED, text, "the value is not a JSON object", site, node)
    named = (document.get("site"), document.get("node"))
    if named != (site, node):
        why = (
            f"the value names node {_short(named[1])} of site {_short(named[0])}; "
            "a gateway's record speaks only for the node of its key, at the site of its key"
        )
        return Refused(Refusal.KEY_MISMATCH, text, why, site, node)
    problem = _unreadable(document)
    if problem is not None:
        return Refused(Refusal.MALFORMED, text, problem, site, node)
    gpus: Mapping[str, Any] = document.get("gpus") or {}
    last = document.get("lastReportAt")
    return Record(
        site=site,
        node=node,
        health=document["health"],
        reason=str(document.get("reason") or "")[:REASON_LENGTH],
        healthy_gpus=sum(1 for health in gpus.values() if health == "Healthy"),
        last_report=float(last) if last is not None else None,
    )


def _unreadable(document: Mapping[str, Any]) -> str | None:
    """What makes a record's fields unusable, or None."""
    if document.get("health") not in RANK:
        return f"health {_short(document.get('health'))} is none of {', '.join(RANK)}"
    gpus = document.get("gpus")
    if gpus is not None and (not isinstance(gpus, dict) or not all(isinstance(h, str) for h in gpus.values())):
        return "gpus is not an object of GPU index to health"
    last = document.get("lastReportAt")
    if last is not None and (isinstance(last, bool) or not isinstance(last, int | float)):
        return f"lastReportAt {_short(last)} is not a time in seconds"
    return None


def _short(value: object) -> str:
    """An untrusted value, quoted and cut short for a message."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def membership(record: Record, labels: Mapping[str, str] | None) -> Refused | None:
    """Why ``record`` may not be applied to its Node (``labels``: the Node's, None when there is no
    such Node), or None when the Node belongs to the record's site."""
    site, node = record.site, record.node
    key = f"{PREFIX}/{site}/nodes/{node}"
    if labels is None:
        why = f"no Node {node} exists; the record is held and applied once a Node of that name with {SITE_NODE_LABEL}={site} does"
        return Refused(Refusal.UNKNOWN_NODE, key, why, site, node)
    label = labels.get(SITE_NODE_LABEL)
    if label is None:
        why = (
            f"Node {node} carries no label {SITE_NODE_LABEL}, so nothing says it belongs to site {site}; "
            f"whoever provisions it sets it (kubectl label node {node} {SITE_NODE_LABEL}=<its Site>)"
        )
        return Refused(Refusal.UNLABELLED_NODE, key, why, site, node)
    if label != site:
        why = f"Node {node} belongs to site {label} ({SITE_NODE_LABEL}); the gateway of site {site} does not speak for it"
        return Refused(Refusal.NODE_OF_ANOTHER_SITE, key, why, site, node)
    return None
