"""Node health from etcd onto Nodes: which records count, the decision, and what the Node shows.

``observe`` takes a record by its key (``health_records.read``) and applies it only to the Node
of the key's site (``health_records.membership``); anything else is refused and reported
(``health_refusals``). A record whose Node is missing, unlabelled or of another site is held:
it is applied once its Node exists with the key's site label (``node_changed``, then ``recheck``).

An applied record goes through ``node_health.decide`` (worse at once, better after a quiet
period) and, when the decision changes, onto the Node: our taints replaced (others kept), the
``GigafabGpuHealthy`` condition set, the number of its Healthy GPUs in ``gigafab.nl/gpus-healthy``
(which the Site counts; a Node without it has not been vouched for) and the decision's state in
``gigafab.nl/health-history`` (``health_history``), in the same patch as the taints. Before the
first decision about a node, this process reads that state back: a restarted operator keeps a
node in its quiet period, with its relapses, where the last one left it.

``recheck`` (every second) re-decides nodes waiting out their quiet period, writes decisions the
apiserver did not take (it was restarting, or not yet authorizing; etcd holds transitions only,
so nothing else would bring them back), and takes the Node events ``node_changed`` queued.

What this process remembers, and how it is rebuilt after a restart or a change of leader:
every record (listed from etcd at start), each Node's site label (from Node events), each
node's decision (from its ``health-history`` annotation). A deleted Node is forgotten, and its
records are handed to the watch to delete from etcd (``take_purges``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from gigafab.agents.records import node_key
from gigafab.operator import audit
from gigafab.operator.conditions import now_rfc3339
from gigafab.operator.health_history import HISTORY, annotation, applied_from
from gigafab.operator.health_records import Record, Refused, key_parts, membership, read
from gigafab.operator.health_refusals import Refusals
from gigafab.operator.kube import Kube
from gigafab.operator.node_health import MEMORY, SILENT, TRUST_AFTER, Applied, condition_for, decide, taints_for
from gigafab.operator.site_contact import CONTACTS, Contacts
from gigafab.operator.site_health import HEALTHY_GPUS

from gigafab.api.labels import SITE_NODE_LABEL

log = logging.getLogger("gigafab.health")


def wall_offset() -> float:
    """Wall-clock minus monotonic time of this process: the history annotation holds wall-clock times."""
    return time.time() - time.monotonic()


def node_path(node: str) -> str:
    return f"/api/v1/nodes/{node}"


def _labels(node: Mapping[str, Any] | None) -> Mapping[str, str] | None:
    return None if node is None else dict(node["metadata"].get("labels") or {})


class NodeHealthSync:
    """Keeps Nodes in step with the health recorded in etcd (called from the watch's and kopf's threads)."""

    def __init__(
        self,
        kube: Kube,
        trust_after: float = TRUST_AFTER,
        contacts: Contacts = CONTACTS,
        refusals: Refusals | None = None,
        offset: Callable[[], float] = wall_offset,
        relapse_memory: float = MEMORY,
    ) -> None:
        self.kube = kube
        self.trust_after, self.relapse_memory = trust_after, relapse_memory
        self.contacts = contacts
        self.refusals = refusals or Refusals(kube)
        self.offset = offset
        self._lock = threading.RLock()
        self.records: dict[str, dict[str, Record]] = {}
        """Every record read whole, by node and then by its key's site: applied or held."""
        self.site_of: dict[str, str] = {}
        """The site whose records each admitted node follows (its label named it)."""
        self.applied: dict[str, Applied] = {}
        self.reported: dict[str, tuple[str, str]] = {}
        self.reported_gpus: dict[str, int] = {}
        self.healthy_gpus: dict[str, int] = {}
        """The count on each Node: that of the report the applied state follows."""
        self.written: set[str] = set()
        self.unwritten: dict[str, Applied] = {}
        """Nodes whose last decision the apiserver did not take, with the state the Node showed before it."""
        self.labels: dict[str, str | None] = {}
        """Each Node's site label, as its events showed it."""
        self.reconsider: set[str] = set()
        """Nodes whose records to take again: their Node appeared or changed site, or could not be read."""
        self._purges: set[bytes] = set()
        self._inbox: list[tuple[str, str | None, bool]] = []
        self._inbox_lock = threading.Lock()

    # -- records from etcd ----------------------------------------------------------------------
    def observe(self, key: bytes, value: bytes, now: float) -> None:
        """A record was listed or written under ``key``."""
        found = read(key, value)
        with self._lock:
            if isinstance(found, Refused):
                self.refusals.refuse(found)
                return
            self.records.setdefault(found.node, {})[found.site] = found
            self._admit(found, now)

    def record_deleted(self, key: bytes) -> None:
        """A record went from etcd (a purge): a held record is held no more; an applied one changes nothing."""
        parts = key_parts(key.decode(errors="replace"))
        if parts is not None:
            with self._lock:
                self.records.get(parts[1], {}).pop(parts[0], None)

    def site_lost(self, site: str, now: float) -> None:
        """The site's gateway is gone: none of its nodes is vouched for any more."""
        with self._lock:
            for node, member_of in list(self.site_of.items()):
                if member_of == site:
                    self._take(node, SILENT, _gateway_lost(site), 0, now)

    def _admit(self, record: Record, now: float, current: Mapping[str, Any] | None = None) -> None:
        """Apply ``record`` if its Node belongs to the key's site; else refuse it (and hold it)."""
        node = record.node
        if current is None and self.site_of.get(node) == record.site and self.labels.get(node, record.site) == record.site:
            self._apply(record, now)  # a Node of this site already: its events tell when it changes site
            return
        if current is None:
            try:
                current = self.kube.get(node_path(node))
            except Exception as failure:  # the apiserver away: ``recheck`` takes the node's records again
                log.warning("Node %s not readable, its health record waits: %r", node, failure)
                self.reconsider.add(node)
                return
        refused = membership(record, _labels(current))
        if refused is not None:
            if self.site_of.get(node) == record.site:  # it followed this site, and is none of its Nodes any more
                self._unvouch(node)
            self.refusals.refuse(refused)
            return
        assert current is not None  # membership refuses a missing Node
        if node not in self.applied:
            self._restore(node, current)
        self.site_of[node] = record.site
        self._apply(record, now, current)

    def _apply(self, record: Record, now: float, current: Mapping[str, Any] | None = None) -> None:
        node = record.node
        if self.contacts.lost(record.site):  # a record of a site without gateway: nothing vouches for it now
            self._take(node, SILENT, _gateway_lost(record.site), 0, now, current)
            return
        self.contacts.node_heard(record.site, node, record.health, record.last_report, time.time())
        self._take(node, record.health, record.reason, record.healthy_gpus, now, current)

    def _restore(self, node: str, current: Mapping[str, Any]) -> None:
        """What the Node shows of an earlier decision (another process's, before a restart)."""
        annotations = current["metadata"].get("annotations") or {}
        restored = applied_from(annotations, self.offset())
        if restored is None:
            return
        self.applied[node] = restored
        count = str(annotations.get(HEALTHY_GPUS, ""))
        if count.isdigit():
            self.healthy_gpus[node] = int(count)

    # -- the decision and the Node ----------------------------------------------------------------
    def _take(self, node: str, health: str, reason: str, gpus: int, now: float, current: Mapping[str, Any] | None = None) -> None:
        self.reported[node] = (health, reason)
        self.reported_gpus[node] = gpus
        self._decide(node, now, current)

    def _decide(self, node: str, now: float, current: Mapping[str, Any] | None = None) -> None:
        health, reason = self.reported[node]
        before = self.applied.get(node, Applied())
        after = decide(before, health, reason, now, self.trust_after, self.relapse_memory)
        self.applied[node] = after
        count = self.healthy_gpus.get(node)
        if after.health == health and after.better_health is None:  # the node is where its report says
            count = self.reported_gpus[node]
        if (after, count) != (before, self.healthy_gpus.get(node)) or node not in self.written:
            if count is not None:
                self.healthy_gpus[node] = count
            self._try_write(node, self.unwritten.get(node, before), current)

    def _try_write(self, node: str, before: Applied, current: Mapping[str, Any] | None = None) -> None:
        """Write the node's applied state; when the apiserver does not take it, keep it for ``recheck``."""
        try:
            self._write(node, self.applied[node], before, current)
        except Exception as failure:  # the apiserver away, restarting, not yet authorizing: try again
            if node not in self.unwritten:
                log.warning("health of %s not written to its Node, trying again: %r", node, failure)
            self.unwritten[node] = before
            return
        self.unwritten.pop(node, None)

    def rewrite(self, node: str) -> None:
        with self._lock:
            applied = self.applied[node]
            self._write(node, applied, applied)

    def _write(self, node: str, after: Applied, before: Applied, current: Mapping[str, Any] | None = None) -> None:
        path = node_path(node)
        if current is None:
            current = self.kube.get(path)
        if current is None:
            log.warning("health of %s not written: the Node is gone", node)
            return
        taints = taints_for(after.health, current["spec"].get("taints") or [])
        annotations = {HISTORY: annotation(after, self.offset())}
        if node in self.healthy_gpus:
            annotations[HEALTHY_GPUS] = str(self.healthy_gpus[node])
        self.kube.merge_patch(path, {"metadata": {"annotations": annotations}, "spec": {"taints": taints or None}})
        condition = {
            **condition_for(after, self.trust_after),
            "lastHeartbeatTime": now_rfc3339(),
            "lastTransitionTime": now_rfc3339(),
        }
        self.kube.strategic_patch(f"{path}/status", {"status": {"conditions": [condition]}})
        self.written.add(node)
        if after.health != before.health:
            reference = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "uid": current["metadata"]["uid"]}}
            audit.verdict(
                reference,
                after.health == "Healthy",
                reason=f"Gpu{after.health}",
                message=f"{after.reason or after.health}; taints now {[t['key'] for t in taints]}",
            )

    # -- Nodes that come, go, or change site ------------------------------------------------------
    def node_changed(self, node: str, site: str | None, *, deleted: bool = False) -> None:
        """A Node event (from kopf's thread): queued for ``recheck``, so kopf never waits for the apiserver
        here. A deleted Node stops counting toward its site's Silent nodes at once."""
        if deleted:
            followed = self.site_of.get(node)
            if followed is not None:
                self.contacts.forget_node(followed, node)
        with self._inbox_lock:
            self._inbox.append((node, site, deleted))

    def _take_inbox(self) -> None:
        with self._inbox_lock:
            inbox, self._inbox = self._inbox, []
        for node, site, deleted in inbox:
            if deleted:
                self._node_deleted(node)
            elif node not in self.labels or self.labels[node] != site:
                self.labels[node] = site
                if node in self.records or node in self.site_of:
                    self.reconsider.add(node)

    def _node_deleted(self, node: str) -> None:
        self.labels.pop(node, None)
        self.reconsider.discard(node)
        self._forget(node)
        for site in self.records.pop(node, {}):
            self._purges.add(node_key(site, node))

    def take_purges(self) -> set[bytes]:
        """Keys of deleted Nodes' records, for the watch to delete from etcd (``purge_later`` when it cannot)."""
        with self._lock:
            purges, self._purges = self._purges, set()
            return purges

    def purge_later(self, keys: set[bytes]) -> None:
        with self._lock:
            self._purges |= keys

    def _reconsider(self, node: str, now: float) -> None:
        """Take the record of the site the Node belongs to now, and let go of the one it no longer does."""
        try:
            current = self.kube.get(node_path(node))
        except Exception:  # the apiserver away: next time
            return
        self.reconsider.discard(node)
        if current is None:
            return  # its deletion event forgets it
        label = (_labels(current) or {}).get(SITE_NODE_LABEL)
        followed = self.site_of.get(node)
        if followed is not None and followed != label:
            self._unvouch(node)
        record = self.records.get(node, {}).get(label or "")
        if record is not None:
            self._admit(record, now, current)

    def _forget(self, node: str) -> None:
        followed = self.site_of.pop(node, None)
        if followed is not None:
            self.contacts.forget_node(followed, node)
        for memory in (self.applied, self.reported, self.reported_gpus, self.healthy_gpus, self.unwritten):
            memory.pop(node, None)
        self.written.discard(node)

    def _unvouch(self, node: str) -> None:
        """The node left the site whose records it followed: forgotten, and its GPUs no longer counted
        (our taints stay: nothing vouches for it until its new site's gateway does)."""
        log.warning("Node %s left site %s: its health is no longer vouched for", node, self.site_of.get(node))
        self._forget(node)
        try:
            self.kube.merge_patch(node_path(node), {"metadata": {"annotations": {HEALTHY_GPUS: None, HISTORY: None}}})
        except Exception as failure:  # taken again at the next Node event
            log.warning("could not take the health annotations off Node %s: %r", node, failure)

    # -- every second -----------------------------------------------------------------------------
    def recheck(self, now: float) -> None:
        with self._lock:
            self._take_inbox()
            for node in list(self.reconsider):
                self._reconsider(node, now)
            for node, before in list(self.unwritten.items()):
                self._try_write(node, before)
            for node, applied in list(self.applied.items()):
                if applied.better_health is not None:
                    self._decide(node, now)


def _gateway_lost(site: str) -> str:
    return f"the health gateway of site {site} is lost: nothing vouches for this node"
