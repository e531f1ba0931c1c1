"""Kubernetes-style status conditions, computed purely.

A condition keeps its ``lastTransitionTime`` while its status stays the same, so
writing the same conditions twice changes nothing and no status write is needed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str

    @property
    def status_text(self) -> str:
        """``status`` as Kubernetes writes it."""
        return "True" if self.status else "False"


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def rfc3339(at: float) -> str:
    """A wall-clock time (seconds since the epoch) in RFC 3339, to the millisecond."""
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seconds_of(stamp: str) -> float | None:
    """Wall-clock seconds of an RFC 3339 time (None when there is none)."""
    if not stamp:
        return None
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def merge(
    current: Sequence[Mapping[str, Any]] | None,
    wanted: Sequence[Condition],
    generation: int,
    *,
    clock: str | None = None,
) -> list[dict[str, Any]]:
    """The conditions list after setting ``wanted``; others are kept as they are."""
    by_type = {str(item.get("type")): dict(item) for item in current or ()}
    for condition in wanted:
        status = condition.status_text
        previous = by_type.get(condition.type)
        changed = previous is None or previous.get("status") != status
        by_type[condition.type] = {
            "type": condition.type,
            "status": status,
            "reason": condition.reason,
            "message": condition.message,
            "observedGeneration": generation,
            "lastTransitionTime": (clock or now_rfc3339())
            if changed
            else previous.get("lastTransitionTime", clock or now_rfc3339()),  # type: ignore[union-attr]
        }
    return sorted(by_type.values(), key=lambda item: str(item["type"]))


def find(conditions: Sequence[Mapping[str, Any]] | None, kind: str) -> Mapping[str, Any]:
    """The condition of type ``kind`` (empty when there is none)."""
    return next((item for item in conditions or () if item.get("type") == kind), {})


def status_of(conditions: Sequence[Mapping[str, Any]] | None, kind: str) -> str | None:
    found = find(conditions, kind)
    return str(found.get("status")) if found else None


def reason_of(conditions: Sequence[Mapping[str, Any]] | None, kind: str) -> str | None:
    found = find(conditions, kind)
    return str(found.get("reason")) if found else None
