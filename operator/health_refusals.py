"""Refused health records, reported: a counter for each, a Warning Event now and then.

Every refusal counts in ``gigafab_health_records_refused_total{reason}``. The Event goes on the
Site named by the record's key (the site whose gateway wrote it: ``kubectl describe site
niemeyer`` lists what was refused from it), and says what was refused and why. Events are
rate-limited (``EventBudget``): a gateway that writes thousands of bad records, by fault or on
purpose, costs the apiserver a handful of Events, each saying how many refusals it stands for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gigafab.operator import audit, telemetry
from gigafab.operator.health_records import Refused
from gigafab.operator.kube import Kube
from gigafab.operator.state import custom_path

log = logging.getLogger("gigafab.health")
EVENT_EVERY = 60.0
"""Seconds between two Events for one site and reason."""
EVENTS_PER_WINDOW = 10
"""Events about refused records, all sites together, in any ``EVENT_EVERY`` seconds: the bound
for a writer that invents a new site name for every record."""
REASON = "HealthRecordRefused"


@dataclass
class EventBudget:
    """Which refusals get an Event: the first of each (site, reason) per ``every`` seconds, and no
    more than ``per_window`` in all per ``every`` seconds. A pure state machine; the clock is passed in."""

    every: float = EVENT_EVERY
    per_window: int = EVENTS_PER_WINDOW
    _last: dict[tuple[str, str], float] = field(default_factory=dict)
    _held: dict[tuple[str, str], int] = field(default_factory=dict)
    _posted: list[float] = field(default_factory=list)

    def allow(self, site: str, reason: str, now: float) -> int | None:
        """None when this refusal gets no Event; else how many refusals of the same site and reason
        it stands for (itself and those held back since the last Event)."""
        key = (site, reason)
        self._posted = [at for at in self._posted if now - at < self.every]
        last = self._last.get(key)
        if (last is not None and now - last < self.every) or len(self._posted) >= self.per_window:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        self._posted.append(now)
        return 1 + self._held.pop(key, 0)


class Refusals:
    """Reports refused records (thread-safe enough: called under the health sync's lock)."""

    def __init__(self, kube: Kube, clock: Callable[[], float] = time.monotonic, budget: EventBudget | None = None) -> None:
        self.kube = kube
        self.clock = clock
        self.budget = budget or EventBudget()

    def refuse(self, refused: Refused) -> None:
        telemetry.health_record_refused(str(refused.reason))
        site = refused.site or ""
        count = self.budget.allow(site, str(refused.reason), self.clock())
        if count is None:
            log.debug("health record %s refused (%s): %s", refused.key, refused.reason, refused.message)
            return
        message = f"health record {refused.key} refused ({refused.reason}): {refused.message}"
        if count > 1:
            message += f" ({count - 1} more refused for this reason since the last such event)"
        audit.warning(self._site(site), REASON, message)

    def _site(self, site: str) -> dict[str, Any]:
        """The Site to put the Event on: the key's; with its uid when it exists, so ``kubectl describe`` finds it."""
        meta: dict[str, Any] = {"name": site or "unnamed"}
        try:
            found = self.kube.get(custom_path("sites", site)) if site else None
        except Exception as failure:  # the Event is still posted, by name only
            log.warning("could not read Site %s for an event: %r", site, failure)
            found = None
        if found is not None:
            meta["uid"] = found["metadata"]["uid"]
        return {"apiVersion": "gigafab.nl/v1alpha1", "kind": "Site", "metadata": meta}
