"""EgressDestinations are no wider than a service, claim no network twice, and never open the cluster itself.

On the real plane: the audit's destination ``["0.0.0.0/0", "::/0"]`` claimed NL is refused by the
apiserver, naming the field; an EU claim on a range a non-EU destination also claims is refused by
the operator (Accepted=False, OverlapsNonEU, naming the other, with a Warning), leaves the tenants'
NetworkPolicies, and comes back when the clash is gone; and an accepted range that contains the
cluster's own networks reaches them through no NetworkPolicy (they are its ipBlock's ``except``).
The ranges here are used by no other test of the session, so no other destination overlaps them.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from gigafab.local.components import cluster_networks
from tests.e2e.conftest import Kubectl, condition, destination, eventually, tenant
from tests.e2e.test_tenants import ready

SHARED = "100.64.0.0/16"
"""Claimed NL by one destination..."""
INSIDE = "100.64.7.0/24"
"""...and US by another."""
CAMPUS = "10.0.0.0/16"
"""Contains the plane's pod and service network (10.0.0.0/24)."""


def blocks(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    policy = kubectl.get("networkpolicy", "gigafab-tenant-boundary", "-n", namespace)
    assert policy is not None, "no boundary yet"
    return [peer["ipBlock"] for rule in policy["spec"]["egress"] for peer in rule["to"] if "ipBlock" in peer]


def accepted(kubectl: Kubectl, name: str) -> tuple[str, str, str]:
    state = condition(kubectl.get("egressdestination", name), "Accepted")
    return state["status"], state["reason"], state["message"]


def test_a_destination_as_wide_as_the_internet_is_refused_naming_the_field(kubectl: Kubectl, unique: str) -> None:
    body = destination(unique, "NL", "0.0.0.0/0")
    body["spec"]["cidrs"].append("::/0")
    refused = kubectl.create(body, check=False)
    assert refused.returncode != 0
    assert "spec.cidrs[0]" in refused.stderr
    assert "spec.cidrs[1]" in refused.stderr
    assert "no broader than /16 (IPv4) or /32 (IPv6)" in refused.stderr
    assert kubectl.get("egressdestination", unique) is None
    widest = destination(unique, "NL", "10.0.0.0/16")
    widest["spec"]["cidrs"].append("2001:db8::/32")
    assert kubectl.create(widest, dry_run=True).returncode == 0


def test_an_eu_claim_on_a_non_eu_range_is_refused_and_leaves_every_policy(kubectl: Kubectl, unique: str) -> None:
    ours, theirs = f"{unique}-nl", f"{unique}-us"
    kubectl.apply(destination(ours, "NL", SHARED))
    kubectl.apply(tenant(unique, egress=[ours]))
    ready(kubectl, unique)
    eventually(lambda: _expect([block["cidr"] for block in blocks(kubectl, unique)] == [SHARED]))
    kubectl.apply(destination(theirs, "US", INSIDE))

    def refused() -> None:
        status, reason, message = accepted(kubectl, ours)
        assert (status, reason) == ("False", "OverlapsNonEU")
        assert f"{theirs}: {SHARED} and {INSIDE}" in message

    eventually(refused)
    eventually(lambda: _expect(blocks(kubectl, unique) == []))
    egress = condition(kubectl.get("tenant", unique), "Egress")
    assert (egress["status"], egress["reason"]) == ("False", "DestinationRefused")
    assert f"{ours} (OverlapsNonEU)" in egress["message"]
    events = kubectl.get("events", "-A", "--field-selector", f"involvedObject.name={ours},type=Warning")["items"]
    assert "OverlapsNonEU" in {event["reason"] for event in events}
    kubectl.run("delete", "egressdestination", theirs)
    eventually(lambda: _expect(accepted(kubectl, ours)[:2] == ("True", "EUJurisdiction")))
    eventually(lambda: _expect([block["cidr"] for block in blocks(kubectl, unique)] == [SHARED]))


def test_the_clusters_own_networks_are_no_destination(kubectl: Kubectl, unique: str) -> None:
    kubectl.apply(destination(unique, "NL", CAMPUS))
    kubectl.apply(tenant(unique, egress=[unique]))
    ready(kubectl, unique)
    campus = ipaddress.ip_network(CAMPUS)
    own = sorted(n for n in cluster_networks(kubectl.plane.layout) if ipaddress.ip_network(n).subnet_of(campus))  # type: ignore[arg-type]
    assert own, "the plane's pod network lies in the campus range"
    eventually(lambda: _expect(blocks(kubectl, unique) == [{"cidr": CAMPUS, "except": own}]))


def _expect(fact: bool) -> None:
    assert fact
