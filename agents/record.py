"""A node's fence, kept on the host so that it outlives the agent (a crash, an OOM kill, a rollout, a reboot).

One small JSON file per node, ``<state dir>/fence-<node>.json``: whether the node is fenced
(and why), and ``contactAt``, the last moment (wall clock) the agent knew it had contact
with a gateway. The agent writes it when the node is fenced (before it stops the work)
or lifted, and every ``CONTACT_EVERY`` seconds while in contact; each write replaces the
file whole (a new file, flushed to disk, renamed over the old one), so a reader never
sees half of one.

At start (``start_of``) an agent is fenced when the record says so, when it has no
record or cannot read it, when its contact is ``fence_after`` old or older, or when it
lies in the future (the clock moved: it proves nothing). Otherwise it counts its lost
contact from ``contactAt``, which is at most ``CONTACT_EVERY`` plus a tick older than the
real last contact: a restarted agent fences at most that much early, never late.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from gigafab.agents.fencing import Start

CONTACT_EVERY = 1.0
"""Seconds between writes of ``contactAt`` while in contact: a restarted agent fences at most this
(plus a tick) earlier than it would have; one small write and fsync a second per node."""


@dataclass(frozen=True)
class FenceRecord:
    node: str
    fenced: bool
    reason: str = ""
    contact_at: float | None = None
    """The last moment the agent knew it had contact with a gateway (wall clock), None: never."""

    def to_json(self) -> str:
        return json.dumps({"node": self.node, "fenced": self.fenced, "reason": self.reason, "contactAt": self.contact_at})


def record_path(state_dir: Path, node: str) -> Path:
    return state_dir / f"fence-{node}.json"


class RecordError(ValueError):
    """A record that cannot be read; it was moved aside (``.unreadable``) so nothing is lost."""


def load(path: Path, node: str) -> FenceRecord | None:
    """The node's record; None when there is none; ``RecordError`` when it cannot be read."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        contact = data.get("contactAt")
        return FenceRecord(node, bool(data["fenced"]), str(data.get("reason", "")), None if contact is None else float(contact))
    except (ValueError, KeyError, TypeError, AttributeError) as broken:
        aside = path.with_name(path.name + ".unreadable")
        path.replace(aside)
        raise RecordError(f"fence record {path} is unreadable ({broken}); kept as {aside}") from broken


def save(path: Path, record: FenceRecord) -> None:
    """Replace the record whole and durably: a reboot right after finds this one or the last."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w") as out:
        out.write(record.to_json() + "\n")
        out.flush()
        os.fsync(out.fileno())
    temporary.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def start_of(record: FenceRecord | None, now: float, fence_after: float) -> Start:
    """How an agent starts from its node's record (``now``: wall clock)."""
    if record is None:
        return Start(fenced=True, reason="no record of contact: the node may have been cut off for any time")
    if record.fenced:
        return Start(fenced=True, reason=f"fenced before the agent started: {record.reason}")
    if record.contact_at is None:
        return Start(fenced=True, reason="never in contact")
    lost_for = now - record.contact_at
    if lost_for < 0:
        return Start(fenced=True, reason=f"last contact is {-lost_for:.1f} s in the future: the clock moved")
    if lost_for >= fence_after:
        return Start(fenced=True, reason=f"no gateway for {lost_for:.1f} s when the agent started")
    return Start(lost_for=lost_for)


def mark_fenced(path: Path, node: str, reason: str) -> None:
    """Mark the node fenced, keeping its last contact (the simulated watchdog, as a reboot would leave it)."""
    try:
        before = load(path, node)
    except RecordError:
        before = None
    save(path, FenceRecord(node, True, reason, before.contact_at if before is not None else None))
