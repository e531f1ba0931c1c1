"""What counts as capacity for Kueue's quotas and the tracks' guarantees: only GPUs placement may use
(``allocation.healthy_by_site``), and only silences of a site's own Nodes (``site_contact``)."""

from __future__ import annotations

from typing import Any

import pytest
from gigafab.operator.allocation import healthy_by_site
from gigafab.operator.queues import site_quotas
from gigafab.operator.site_contact import Contacts
from gigafab.operator.tracks import Share


def site(name: str, *, jurisdiction: str = "NL", lifecycle: str = "Active", healthy: str = "True") -> dict[str, Any]:
    status = {"gpusHealthy": 16, "conditions": [{"type": "Healthy", "status": healthy}]}
    return {"name": name, "body": {"spec": {"jurisdiction": jurisdiction, "lifecycle": lifecycle}, "status": status}}


@pytest.mark.parametrize(
    ("entry", "gpus"),
    [
        (site("ok"), 16),
        (site("geneva", jurisdiction="CH"), 0),  # outside the EU: placement never puts work there
        (site("draining", lifecycle="Draining"), 0),
        (site("planned", lifecycle="Planned"), 0),
        (site("lost", healthy="False"), 0),  # its health plane does not vouch for most of its nodes
    ],
)
def test_only_gpus_placement_may_use_count(entry: dict[str, Any], gpus: int) -> None:
    assert healthy_by_site({"site_index": {entry["name"]: [entry]}}) == {entry["name"]: gpus}


def test_a_non_eu_sites_gpus_are_in_no_track_quota() -> None:
    entries = [site("niemeyer"), site("geneva", jurisdiction="CH")]
    shares = [Share("euro-hpc", 50, 100, True), Share("national", 25, 100, True), Share("regional", 25, 200, True)]
    quotas = site_quotas(shares, healthy_by_site({"site_index": {entry["name"]: [entry] for entry in entries}}))
    assert {track: by_site["geneva"] for track, by_site in quotas.items()} == {"euro-hpc": 0, "national": 0, "regional": 0}
    assert sum(by_site["niemeyer"] for by_site in quotas.values()) == 16


def test_a_forgotten_node_no_longer_counts_toward_its_sites_silence() -> None:
    contacts = Contacts()
    contacts.gateway_up("de-halm", 5.0, 4.0)
    contacts.node_heard("de-halm", "a", "Silent", 10.0, 12.0)
    contacts.node_heard("de-halm", "b", "Silent", 10.0, 12.0)
    assert contacts.unreachable("de-halm", 2)
    contacts.forget_node("de-halm", "b")
    assert not contacts.unreachable("de-halm", 2)


def test_remembered_gateway_terms_fence_a_site_found_without_its_gateway() -> None:
    """As after a restart: the Site's status gave its fenceAfter (60 s), not the default 30 s."""
    contacts = Contacts(margin=2.0)
    assert contacts.terms("far") is None
    contacts.remember("far", 5.0, 60.0)
    assert contacts.terms("far") == (5.0, 60.0)
    contacts.gateway_lost("far", 1000.0, expired=False)
    assert contacts.fenced_at("far") == 1062.0
