"""When the operator last heard from each site, and so when a lost site's work is fenced.

A site's work may run elsewhere only once every copy on the site has stopped. The
site's agents stop their work ``fenceAfter`` seconds after they lost contact (see
``gigafab.agents.fencing``); the operator adds a margin and counts from the latest
moment the site could still have been in contact:

- its gateway's key went with the gateway's lease at ``at``: a lease that ran out was
  last refreshed at least ``ttl`` earlier, so contact ended by ``at - ttl``; a gateway
  that stopped says so in its key first, and then contact ended at ``at``;
- a node its gateway reports Silent last reported at its ``lastReportAt``.

``fenced_at(site)`` is the latest of those plus ``fenceAfter`` plus the margin; before
that moment nothing of the site's work is started anywhere else.

Only nodes the health sync admitted as the site's own (``health_records.membership``) are
ever heard here, and a deleted or relabelled Node is forgotten (``forget_node``): a gateway
cannot make a site look lost by naming Silent nodes that are not its Nodes.

After an operator restart a site found without a gateway counts its contact from the
restart: the gateway may have come back and gone again while no operator watched, so
nothing read before the restart bounds it. Its ``fenceAfter`` is the one the operator kept
in the Site's ``status.healthGateway`` (``remember``), not the default: a site whose agents
fence later than 30 s would otherwise have its work started elsewhere while it still runs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

FENCE_MARGIN = 2.0
"""Seconds added to ``fenceAfter``: clocks, and the agent's last check, are not exact."""
DEFAULT_FENCE_AFTER = 30.0


@dataclass
class SiteContact:
    gateway: bool = False
    """The site's gateway holds its key (its lease is alive)."""
    last_contact: float | None = None
    """Since the gateway key went: the latest moment the gateway can have had contact (wall clock)."""
    ttl: float = 5.0
    fence_after: float = DEFAULT_FENCE_AFTER
    stopping: bool = False
    """The gateway said it is stopping (so its key goes at once, not when its lease runs out)."""
    silent_nodes: dict[str, float] = field(default_factory=dict)
    """Nodes reported Silent, with their last report (wall clock)."""
    up_at: float = float("-inf")
    """When the gateway last announced itself (monotonic)."""
    announced: bool = False
    """``ttl`` and ``fence_after`` are the gateway's (from its key, or kept in the Site's status), not defaults."""

    @property
    def lost_contact(self) -> float | None:
        """The gateway's last contact while its key is gone; None while it is there (or never was)."""
        return None if self.gateway else self.last_contact


class Contacts:
    """Contact of every site; written by the health watch, read by the failover loop (other threads)."""

    def __init__(self, margin: float = FENCE_MARGIN) -> None:
        self.margin = margin
        self._sites: dict[str, SiteContact] = {}
        self._lock = threading.Lock()
        self._current = True
        """False while the operator cannot read the health etcd: what it knows of the sites may be
        stale (a gateway key that went while etcd was restarting may be back), so no site counts
        as unreachable until it has read everything again."""

    def view_stale(self) -> None:
        with self._lock:
            self._current = False

    def view_current(self) -> None:
        with self._lock:
            self._current = True

    def _site(self, site: str) -> SiteContact:
        return self._sites.setdefault(site, SiteContact())

    def gateway_up(self, site: str, ttl: float, fence_after: float) -> None:
        with self._lock:
            contact = self._site(site)
            contact.gateway, contact.last_contact, contact.ttl, contact.fence_after = True, None, ttl, fence_after
            contact.announced = True
            contact.stopping = False
            contact.up_at = time.monotonic()

    def remember(self, site: str, ttl: float, fence_after: float) -> None:
        """The terms the site's gateway last announced, as kept in the Site's status (read at start)."""
        with self._lock:
            contact = self._site(site)
            contact.ttl, contact.fence_after, contact.announced = ttl, fence_after, True

    def terms(self, site: str) -> tuple[float, float] | None:
        """(lease ttl, fenceAfter) the site's gateway announced; None when no gateway ever told this process."""
        with self._lock:
            contact = self._sites.get(site)
            return (contact.ttl, contact.fence_after) if contact is not None and contact.announced else None

    def gateway_stopping(self, site: str) -> None:
        with self._lock:
            self._site(site).stopping = True

    def gateway_lost(self, site: str, at: float, *, expired: bool = True) -> None:
        """The gateway key went at ``at``; ``expired``: with a lease that ran out (not at a stop or restart)."""
        with self._lock:
            contact = self._site(site)
            contact.gateway = False
            contact.last_contact = at - contact.ttl if expired and not contact.stopping else at
            contact.stopping = False

    def node_heard(self, site: str, node: str, health: str, last_report: float | None, now: float) -> None:
        with self._lock:
            silent = self._site(site).silent_nodes
            if health == "Silent":
                silent[node] = last_report if last_report is not None else now
            else:
                silent.pop(node, None)

    def forget_node(self, site: str, node: str) -> None:
        """``node`` is no Node of ``site`` any more (deleted, or labelled for another site)."""
        with self._lock:
            contact = self._sites.get(site)
            if contact is not None:
                contact.silent_nodes.pop(node, None)

    def served_since(self, site: str, since: float) -> bool:
        """The site's gateway (re)announced itself at or after ``since`` (monotonic) and holds its key."""
        with self._lock:
            contact = self._sites.get(site)
            return contact is not None and contact.gateway and contact.up_at >= since

    def lost(self, site: str) -> bool:
        with self._lock:
            contact = self._sites.get(site)
            return contact is not None and contact.lost_contact is not None

    def unreachable(self, site: str, nodes: int) -> bool:
        """The site is lost: its gateway is gone, or most of its ``nodes`` are Silent (and the
        operator's view of the health etcd is current)."""
        with self._lock:
            contact = self._sites.get(site)
            if contact is None or not self._current:
                return False
            return contact.lost_contact is not None or 2 * len(contact.silent_nodes) > nodes

    def fenced_at(self, site: str) -> float | None:
        """Wall-clock time from which the site's work has surely stopped; None when nothing of it is lost."""
        with self._lock:
            contact = self._sites.get(site)
            if contact is None:
                return None
            last = [*contact.silent_nodes.values()]
            if (lost := contact.lost_contact) is not None:
                last.append(lost)
            return max(last) + contact.fence_after + self.margin if last else None

    def node_fenced_at(self, site: str, node: str) -> float | None:
        """Wall-clock time from which a Silent ``node``'s agent has surely stopped its work; None unless Silent."""
        with self._lock:
            contact = self._sites.get(site)
            last = contact.silent_nodes.get(node) if contact is not None else None
            return None if contact is None or last is None else last + contact.fence_after + self.margin

    def lost_since(self, site: str) -> float | None:
        """Wall-clock time the site's trouble began: its gateway's last contact, else its first node's
        silence; None when nothing of it is lost."""
        with self._lock:
            contact = self._sites.get(site)
            if contact is None:
                return None
            if contact.lost_contact is not None:
                return contact.lost_contact
            return min(contact.silent_nodes.values(), default=None)

    def fence_after(self, site: str) -> float:
        with self._lock:
            contact = self._sites.get(site)
            return contact.fence_after if contact is not None else DEFAULT_FENCE_AFTER


CONTACTS = Contacts()
"""The operator's one registry."""
