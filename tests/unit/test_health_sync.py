"""The operator's health sync: which records it applies, what it remembers, and what it writes.

A stand-in for the Node API (``NodeApi``) holds Nodes in memory and refuses calls while ``away``.
The real paths run on the e2e plane: tests/e2e/test_health_trust.py (records under another site's
prefix, purge of a deleted Node's records, unvouched nodes), tests/e2e/test_operator_restart.py
(a restart in a quiet period) and tests/e2e/test_chaos_control_plane.py (the apiserver restarting
under the health plane).
"""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from gigafab.agents.records import node_key
from gigafab.operator import telemetry
from gigafab.operator.health_history import HISTORY
from gigafab.operator.health_sync import NodeHealthSync
from gigafab.operator.kube import Kube
from gigafab.operator.site_contact import Contacts
from gigafab.operator.state import Client
from kubernetes.client.exceptions import ApiException

from gigafab.api.labels import SITE_NODE_LABEL

NODE = "de-halm-gpu-001"
SITES = {"de-halm": "uid-de-halm", "niemeyer": "uid-niemeyer"}


class NodeApi:
    """The calls NodeHealthSync makes: Nodes' gets and patches, Sites' gets, and events."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.away = False
        self.refused = 0
        self.events: list[dict[str, Any]] = []
        self.add(NODE, "de-halm")

    def add(self, name: str, site: str | None) -> None:
        labels = {SITE_NODE_LABEL: site} if site is not None else {}
        meta = {"name": name, "uid": f"u-{name}", "labels": labels}
        self.nodes[name] = {"metadata": meta, "spec": {"taints": []}, "status": {}}

    def _answer(self) -> None:
        if self.away:
            self.refused += 1
            raise ApiException(status=403, reason="Forbidden")

    def get(self, path: str) -> dict[str, Any] | None:
        self._answer()
        kind, name = path.rsplit("/", 2)[-2:]
        if kind == "sites":
            return {"metadata": {"name": name, "uid": SITES[name]}} if name in SITES else None
        return self.nodes.get(name)

    def merge_patch(self, path: str, patch: dict[str, Any]) -> None:
        self._answer()
        node = self.nodes[path.rsplit("/", 1)[-1]]
        if "spec" in patch:
            node["spec"]["taints"] = patch["spec"]["taints"] or []
        annotations = node["metadata"].setdefault("annotations", {})
        for key, value in patch.get("metadata", {}).get("annotations", {}).items():
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = value

    def strategic_patch(self, path: str, patch: dict[str, Any]) -> None:
        self._answer()
        self.nodes[path.split("/")[-2]]["status"]["conditions"] = patch["status"]["conditions"]

    def create(self, manifest: dict[str, Any]) -> None:
        self.events.append(manifest)

    def taints(self, node: str = NODE) -> list[str]:
        return [str(taint["key"]) for taint in self.nodes[node]["spec"]["taints"]]

    def annotations(self, node: str = NODE) -> dict[str, str]:
        return dict(self.nodes[node]["metadata"].get("annotations") or {})

    def reasons(self) -> list[str]:
        return [str(event["reason"]) for event in self.events]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> NodeApi:
    stand_in = NodeApi()
    monkeypatch.setattr(Client, "kube", stand_in)  # audit events go here too
    return stand_in


def sync_of(api: NodeApi, contacts: Contacts | None = None, offset: float = 0.0) -> NodeHealthSync:
    return NodeHealthSync(cast(Kube, api), trust_after=2.0, contacts=contacts or Contacts(), offset=lambda: offset)


def record(health: str, node: str = NODE, site: str = "de-halm", **fields: Any) -> tuple[bytes, bytes]:
    """A gateway's record under its own site's prefix (``fields`` change the value, not the key)."""
    value = {"node": node, "site": site, "health": health, "reason": f"{health} now", "gpus": {"0": health}, **fields}
    return node_key(site, node), json.dumps(value).encode()


def refused(reason: str) -> float:
    return float(telemetry.METRICS.health_records_refused.labels(reason)._value.get())


def test_a_recovery_refused_by_the_apiserver_is_written_once_it_answers(api: NodeApi) -> None:
    sync = sync_of(api)
    sync.observe(*record("Failed"), now=0.0)
    assert api.taints() == ["gigafab.nl/gpu-failed"]
    api.away = True
    sync.observe(*record("Healthy"), now=10.0)
    sync.recheck(now=11.0)
    sync.recheck(now=13.0)  # quiet long enough: trusted again, but the apiserver is away
    assert api.refused >= 2
    assert api.taints() == ["gigafab.nl/gpu-failed"]
    api.away = False
    sync.recheck(now=14.0)
    assert api.taints() == []
    assert api.nodes[NODE]["status"]["conditions"][0]["status"] == "True"
    assert api.reasons()[-1] == "GpuHealthy", "the event tells the change from the state the Node showed"
    assert sync.unwritten == {}


def test_a_failure_refused_by_the_apiserver_is_written_without_another_report(api: NodeApi) -> None:
    sync = sync_of(api)
    sync.observe(*record("Healthy"), now=0.0)
    api.away = True
    sync.observe(*record("Failed"), now=5.0)  # etcd records this once; no report repeats it
    assert api.taints() == []
    api.away = False
    sync.recheck(now=6.0)
    assert api.taints() == ["gigafab.nl/gpu-failed"]
    assert api.reasons() == ["GpuFailed"]


def test_a_record_under_another_sites_prefix_is_refused_and_counts_no_silence(api: NodeApi) -> None:
    """The audit's repro: niemeyer's gateway names de-halm's node Silent. Nothing happens to it."""
    api.add("de-halm-gpu-000", "de-halm")
    contacts = Contacts()
    sync = sync_of(api, contacts)
    before = refused("node_of_another_site"), refused("key_mismatch")
    for node in ("de-halm-gpu-000", NODE):
        key, _ = record("Silent", node=node, site="niemeyer")
        _, value = record("Silent", node=node, site="niemeyer" if node == NODE else "de-halm", lastReportAt=1.0)
        sync.observe(key, value, now=0.0)
    assert api.taints("de-halm-gpu-000") == api.taints() == []
    assert not contacts.unreachable("de-halm", 2)
    assert not contacts.unreachable("niemeyer", 2)
    assert (refused("node_of_another_site"), refused("key_mismatch")) == (before[0] + 1, before[1] + 1)
    events = [event for event in api.events if event["reason"] == "HealthRecordRefused"]
    assert {event["involvedObject"]["uid"] for event in events} == {"uid-niemeyer"}, "on the Site whose gateway wrote it"
    assert "Node de-halm-gpu-001 belongs to site de-halm" in events[-1]["message"]
    assert events[0]["type"] == "Warning"


def test_a_value_naming_another_node_than_its_key_is_refused_for_both(api: NodeApi) -> None:
    api.add("de-halm-gpu-000", "de-halm")
    sync = sync_of(api)
    key, _ = record("Failed", node="de-halm-gpu-000")
    _, value = record("Failed", node=NODE)
    sync.observe(key, value, now=0.0)
    assert api.taints("de-halm-gpu-000") == api.taints() == []
    assert "key_mismatch" in api.events[-1]["message"]
    assert "names node 'de-halm-gpu-001' of site 'de-halm'" in api.events[-1]["message"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (node_key("de-halm", NODE), b"not json"),
        (node_key("de-halm", NODE), json.dumps({"node": NODE, "site": "de-halm", "health": "Fine"}).encode()),
        (b"/gigafab/health/v1/sites/de-halm/nodes/de-halm-gpu-001/status", record("Failed")[1]),
        (b"/gigafab/health/v1/sites/de-halm/nodes/..", json.dumps({"node": "..", "site": "de-halm", "health": "Dead"}).encode()),
    ],
)
def test_an_unreadable_record_is_refused_and_the_next_good_one_applied(api: NodeApi, key: bytes, value: bytes) -> None:
    sync = sync_of(api)
    count = refused("malformed")
    sync.observe(key, value, now=0.0)
    assert refused("malformed") == count + 1
    assert api.taints() == []
    sync.observe(*record("Failed"), now=1.0)
    assert api.taints() == ["gigafab.nl/gpu-failed"]


def test_a_record_of_an_unlabelled_node_waits_until_the_node_is_labelled(api: NodeApi) -> None:
    api.add(NODE, None)
    sync = sync_of(api)
    sync.observe(*record("Degraded"), now=0.0)
    assert api.taints() == []
    assert f"kubectl label node {NODE} {SITE_NODE_LABEL}=<its Site>" in api.events[-1]["message"]
    api.nodes[NODE]["metadata"]["labels"][SITE_NODE_LABEL] = "de-halm"
    sync.node_changed(NODE, "de-halm")
    sync.recheck(now=1.0)
    assert api.taints() == ["gigafab.nl/gpu-degraded"]
    assert api.annotations()["gigafab.nl/gpus-healthy"] == "0"


def test_a_record_written_before_its_node_exists_is_applied_when_the_node_comes(api: NodeApi) -> None:
    """The local plane starts its agents before it creates the Nodes: their first records come first."""
    del api.nodes[NODE]
    sync = sync_of(api)
    sync.observe(*record("Healthy"), now=0.0)
    api.add(NODE, "de-halm")
    sync.node_changed(NODE, "de-halm")
    sync.recheck(now=1.0)
    assert api.annotations()["gigafab.nl/gpus-healthy"] == "1", "vouched for: its one GPU is Healthy"


def test_a_node_that_moves_to_another_site_is_no_longer_vouched_for_by_the_old_one(api: NodeApi) -> None:
    contacts = Contacts()
    sync = sync_of(api, contacts)
    sync.observe(*record("Silent", lastReportAt=1.0), now=0.0)
    assert contacts.unreachable("de-halm", 1)
    api.nodes[NODE]["metadata"]["labels"][SITE_NODE_LABEL] = "niemeyer"
    sync.node_changed(NODE, "niemeyer")
    sync.recheck(now=1.0)
    assert "gigafab.nl/gpus-healthy" not in api.annotations()
    assert not contacts.unreachable("de-halm", 1)
    sync.observe(*record("Healthy", site="niemeyer"), now=2.0)  # its new site's gateway vouches for it
    assert api.annotations()["gigafab.nl/gpus-healthy"] == "1"


def test_a_deleted_node_is_forgotten_at_once_and_its_records_are_purged(api: NodeApi) -> None:
    contacts = Contacts()
    sync = sync_of(api, contacts)
    sync.observe(*record("Silent", lastReportAt=1.0), now=0.0)
    sync.observe(*record("Silent", site="niemeyer"), now=0.0)  # refused, and held
    assert contacts.unreachable("de-halm", 1)
    del api.nodes[NODE]
    sync.node_changed(NODE, "de-halm", deleted=True)
    assert not contacts.unreachable("de-halm", 1), "its silence counts no more, before the next recheck"
    sync.recheck(now=1.0)
    assert NODE not in sync.applied
    assert NODE not in sync.site_of
    assert NODE not in sync.records
    assert sync.take_purges() == {node_key("de-halm", NODE), node_key("niemeyer", NODE)}
    assert sync.take_purges() == set()


def test_a_restarted_operator_keeps_a_node_in_its_quiet_period_with_its_relapses(api: NodeApi) -> None:
    """Monotonic clocks of two processes differ (``offset``); the annotation holds wall-clock times."""
    first = sync_of(api, offset=1000.0)
    first.observe(*record("Failed"), now=0.0)
    first.observe(*record("Healthy"), now=1.0)
    first.observe(*record("Failed"), now=1.5)  # a relapse: the quiet period doubles to 4 s
    first.observe(*record("Healthy"), now=2.0)  # trusted at wall time 1006 at the earliest
    assert json.loads(api.annotations()[HISTORY])["betterSince"] == 1002.0
    restarted = sync_of(api, offset=-50.0)  # wall time 1003 is monotonic 1053 in this process
    restarted.observe(*record("Healthy"), now=1053.0)
    assert api.taints() == ["gigafab.nl/gpu-failed"], "still untrusted: its quiet period goes on"
    assert "(doubled for each of 1 relapse(s))" in api.nodes[NODE]["status"]["conditions"][0]["message"]
    restarted.recheck(now=1055.5)
    assert api.taints() == ["gigafab.nl/gpu-failed"]
    restarted.recheck(now=1056.0)
    assert api.taints() == []
    assert "GpuHealthy" in api.reasons()


def test_without_its_history_a_restarted_operator_would_trust_at_once(api: NodeApi) -> None:
    """The same restart, with the annotation gone (a hand edit): the node is decided afresh."""
    first = sync_of(api)
    first.observe(*record("Failed"), now=0.0)
    first.observe(*record("Healthy"), now=1.0)
    api.nodes[NODE]["metadata"]["annotations"][HISTORY] = "{not json"
    sync_of(api).observe(*record("Healthy"), now=1.5)
    assert api.taints() == []
