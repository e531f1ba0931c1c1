"""The operator's health sync keeps a decision the apiserver did not take and writes it when it can.

The apiserver restarting (or, just after, not yet authorizing the operator) refuses the
operator's writes for a few seconds. etcd holds transitions only, so a Node whose write was
refused then would keep its old taints until its health changed again: the sync retries it
every second (``recheck``) instead. The real-plane path is
tests/e2e/test_chaos_control_plane.py, which restarts the apiserver under the health plane;
here a stand-in for the Node API refuses calls while ``away``.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from gigafab.operator.health_watch import NodeHealthSync
from gigafab.operator.kube import Kube
from gigafab.operator.site_contact import Contacts
from gigafab.operator.state import Client
from kubernetes.client.exceptions import ApiException

NODE = "de-halm-gpu-001"


class NodeApi:
    """The calls NodeHealthSync makes: a Node's get and patches, and events."""

    def __init__(self) -> None:
        self.node: dict[str, Any] = {"metadata": {"name": NODE, "uid": "u-1"}, "spec": {"taints": []}, "status": {}}
        self.away = False
        self.refused = 0
        self.events: list[str] = []

    def _answer(self) -> None:
        if self.away:
            self.refused += 1
            raise ApiException(status=403, reason="Forbidden")

    def get(self, path: str) -> dict[str, Any]:
        self._answer()
        return self.node

    def merge_patch(self, path: str, patch: dict[str, Any]) -> None:
        self._answer()
        self.node["spec"]["taints"] = patch["spec"]["taints"] or []

    def strategic_patch(self, path: str, patch: dict[str, Any]) -> None:
        self._answer()
        self.node["status"]["conditions"] = patch["status"]["conditions"]

    def create(self, manifest: dict[str, Any]) -> None:
        self.events.append(str(manifest["reason"]))

    @property
    def taints(self) -> list[str]:
        return [str(taint["key"]) for taint in self.node["spec"]["taints"]]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> NodeApi:
    stand_in = NodeApi()
    monkeypatch.setattr(Client, "kube", stand_in)  # audit events go here too
    return stand_in


def report(health: str) -> dict[str, Any]:
    return {"node": NODE, "site": "de-halm", "health": health, "reason": f"{health} now", "gpus": {"0": health}}


def test_a_recovery_refused_by_the_apiserver_is_written_once_it_answers(api: NodeApi) -> None:
    sync = NodeHealthSync(cast(Kube, api), trust_after=2.0, contacts=Contacts())
    sync.observe(report("Failed"), now=0.0)
    assert api.taints == ["gigafab.nl/gpu-failed"]
    api.away = True
    sync.observe(report("Healthy"), now=10.0)
    sync.recheck(now=11.0)
    sync.recheck(now=13.0)  # quiet long enough: trusted again, but the apiserver is away
    assert api.refused >= 2
    assert api.taints == ["gigafab.nl/gpu-failed"]
    api.away = False
    sync.recheck(now=14.0)
    assert api.taints == []
    assert api.node["status"]["conditions"][0]["status"] == "True"
    assert api.events[-1] == "GpuHealthy", "the event tells the change from the state the Node showed"
    assert sync.unwritten == {}


def test_a_failure_refused_by_the_apiserver_is_written_without_another_report(api: NodeApi) -> None:
    sync = NodeHealthSync(cast(Kube, api), trust_after=2.0, contacts=Contacts())
    sync.observe(report("Healthy"), now=0.0)
    api.away = True
    sync.observe(report("Failed"), now=5.0)  # etcd records this once; no report repeats it
    assert api.taints == []
    api.away = False
    sync.recheck(now=6.0)
    assert api.taints == ["gigafab.nl/gpu-failed"]
    assert api.events == ["GpuFailed"]
