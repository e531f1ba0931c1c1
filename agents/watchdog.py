"""The node's watchdog: it stops the node when the agent cannot (dead, hung, or unable to stop the work).

The agent pets it every ``fencing.TICK`` for as long as ``fencing.Fence.step`` allows, and
withholds the pet when the node's work may be running while it must not; a watchdog
that is not petted in time stops the node. As medik8s' self-node-remediation does, the
agent arms the Linux watchdog device (``softdog``, or the node's hardware watchdog).

- ``LinuxWatchdog``: ``/dev/watchdog``. Opening it arms it; ``WDIOC_SETTIMEOUT`` sets its
  timeout in whole seconds and counts as a pet; a write pets it. A clean stop while in
  contact writes the magic character ``V`` before closing, which disarms it (drivers
  with magic close, softdog among them, unless loaded with ``nowayout=1``). Closing
  without it, which is all a killed agent does, leaves it armed: the node stops unless
  another agent opens the device and pets it in time.
- ``SimulatedWatchdog`` (the local plane, whose nodes are KWOK's): each pet writes the
  moment it runs out to ``<state dir>/watchdog/<node>.pet``. ``watch`` (``gigafab watchdog``)
  is a separate process, so it outlives a killed or stopped agent: when a pet runs out
  it records a fence in the site's fence log (reason ``watchdog expired``), marks the
  node's fence record as a reboot would leave it, and leaves ``<node>.expired``, from
  which a surviving agent learns that its node was "reset".
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from gigafab.agents.fencing import SimulatedRuntime
from gigafab.agents.record import mark_fenced, record_path

log = logging.getLogger("gigafab.watchdog")

EXPIRED_REASON = "watchdog expired"

WDIOC_SETTIMEOUT = 0xC0045706
"""``_IOWR('W', 6, int)`` of ``<linux/watchdog.h>`` (a test compares it with the kernel's header)."""
MAGIC_CLOSE = b"V"


class WatchdogError(RuntimeError):
    """The watchdog cannot be used as the agent needs; the message says what to do."""


class Watchdog(Protocol):
    def pet(self, within: float) -> bool:
        """Stop the node unless petted again within ``within`` seconds (rounded down to what the device can
        do); False, and nothing done, when it cannot promise that short a time: the last pet stands."""

    def reset(self) -> bool:
        """True once when the watchdog stopped the node while this agent ran (only a simulated one can tell)."""

    def close(self, disarm: bool) -> None:
        """Stop petting; ``disarm``: and switch the watchdog off, else it stops the node when the last pet runs out."""


class NoWatchdog:
    """``--watchdog none``: a dead agent then cannot stop its node's work (docs/security.md)."""

    def pet(self, within: float) -> bool:
        return False

    def reset(self) -> bool:
        return False

    def close(self, disarm: bool) -> None:
        pass


Ioctl = Callable[[int, int, bytes], bytes]


class LinuxWatchdog:
    """The node's ``/dev/watchdog``, armed for ``timeout`` seconds when opened."""

    def __init__(
        self, device: Path, timeout: int, ioctl: Ioctl = fcntl.ioctl, opener: Callable[[Path], int] | None = None
    ) -> None:
        self.device, self.ioctl = device, ioctl
        try:
            self.fd = opener(device) if opener is not None else os.open(device, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError as missing:
            raise WatchdogError(
                f"no watchdog at {device}: load softdog (`modprobe softdog`) or name the node's hardware watchdog with "
                "--watchdog PATH; --watchdog none runs without one (a dead agent then cannot stop its node's work)"
            ) from missing
        except OSError as refused:
            raise WatchdogError(f"cannot open the watchdog {device}: {refused} (another agent holds it, or no root)") from refused
        self.timeout = 0
        try:
            # a fenced node's pets hold 1 s (fencing.STOP_WITHIN): a device that cannot is refused now, not when it matters
            self._set(1)
            self._set(timeout)
        except WatchdogError:
            self.close(disarm=True)
            raise

    def _set(self, seconds: int) -> None:
        """Set the timeout; the driver also pets the watchdog."""
        answer = self.ioctl(self.fd, WDIOC_SETTIMEOUT, struct.pack("i", seconds))
        (granted,) = struct.unpack("i", answer)
        if granted != seconds:
            raise WatchdogError(f"the watchdog {self.device} took a timeout of {granted} s when asked for {seconds} s")
        self.timeout = seconds

    def pet(self, within: float) -> bool:
        seconds = int(within)
        if seconds < 1:
            return False
        if seconds != self.timeout:
            self._set(seconds)
        else:
            os.write(self.fd, b"\0")
        return True

    def reset(self) -> bool:
        return False  # a Linux watchdog that fired has reset the machine, this agent with it

    def close(self, disarm: bool) -> None:
        if self.fd < 0:
            return
        try:
            if disarm:
                os.write(self.fd, MAGIC_CLOSE)
        finally:
            os.close(self.fd)
            self.fd = -1


def pet_path(state_dir: Path, node: str) -> Path:
    return state_dir / "watchdog" / f"{node}.pet"


def expired_path(state_dir: Path, node: str) -> Path:
    return state_dir / "watchdog" / f"{node}.expired"


class SimulatedWatchdog:
    """A node's watchdog in the local plane: pets are files that ``watch`` reads."""

    def __init__(self, state_dir: Path, node: str, clock: Callable[[], float] = time.time) -> None:
        self.node, self.clock = node, clock
        self.pets, self.expired = pet_path(state_dir, node), expired_path(state_dir, node)
        self.pets.parent.mkdir(parents=True, exist_ok=True)

    def pet(self, within: float) -> bool:
        temporary = self.pets.with_name(f".{self.pets.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"node": self.node, "expires": self.clock() + within}))
        temporary.replace(self.pets)
        return True

    def reset(self) -> bool:
        try:
            self.expired.unlink()
        except FileNotFoundError:
            return False
        return True

    def close(self, disarm: bool) -> None:
        if disarm:
            self.pets.unlink(missing_ok=True)


def heartbeat_path(state_dir: Path) -> Path:
    """Touched by ``watch`` at every look: it is alive (the local plane's readiness check)."""
    return state_dir / "watchdog" / "watching"


def look(state_dir: Path, fence_log: Path, now: float) -> list[str]:
    """One look at every node's pets: the nodes whose pet ran out now, each recorded once."""
    expired = []
    for pets in sorted((state_dir / "watchdog").glob("*.pet")):
        node = pets.stem
        if expired_path(state_dir, node).exists():
            continue  # recorded; the agent has not come back yet
        try:
            expires = float(json.loads(pets.read_text())["expires"])
        except FileNotFoundError:
            continue  # disarmed meanwhile
        except (OSError, ValueError, KeyError, TypeError) as broken:
            log.error("watchdog: cannot read %s: %s", pets, broken)
            continue
        if now <= expires:
            continue
        SimulatedRuntime(node, fence_log, clock=lambda: now).fence(EXPIRED_REASON)
        mark_fenced(record_path(state_dir, node), node, EXPIRED_REASON)
        expired_path(state_dir, node).write_text(json.dumps({"node": node, "at": now, "expires": expires}))
        log.warning("watchdog: %s expired %.2f s after its last pet ran out: node stopped", node, now - expires)
        expired.append(node)
    return expired


POLL = 0.1
"""Seconds between looks: a simulated node stops at most this long after its pet ran out."""


def watch(state_dir: Path, fence_log: Path, clock: Callable[[], float] = time.time) -> None:
    """``gigafab watchdog``: watch the pets of the agents that keep their state in ``state_dir``, forever."""
    (state_dir / "watchdog").mkdir(parents=True, exist_ok=True)
    fence_log.parent.mkdir(parents=True, exist_ok=True)
    heartbeat = heartbeat_path(state_dir)
    while True:
        look(state_dir, fence_log, clock())
        with contextlib.suppress(OSError):
            heartbeat.touch()
        time.sleep(POLL)
