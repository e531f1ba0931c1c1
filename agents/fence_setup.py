"""How ``gigafab agent``'s fence flags become each node's ``FenceKeeper``: runtime, watchdog, record.

A real node (``--runtime cri``) must keep its fence on the host (``--state-dir``) and, unless
told ``--watchdog none``, arms ``/dev/watchdog``; flags that cannot keep the promise to the
operator are refused before anything starts, with what to change.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from gigafab.agents.agent_metrics import AgentMetrics
from gigafab.agents.cri import CriRuntime
from gigafab.agents.fencing import Fence, Runtime, SimulatedRuntime, Start, check_watchdog_timeout, watchdog_seconds
from gigafab.agents.keeper import FenceKeeper
from gigafab.agents.record import RecordError, load, record_path, start_of
from gigafab.agents.watchdog import LinuxWatchdog, NoWatchdog, SimulatedWatchdog, Watchdog, WatchdogError

log = logging.getLogger("gigafab.agent.fence")


class FenceSetupError(ValueError):
    """Flags that cannot work together (``code`` 2) or a host that lacks what they need (``code`` 1)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Keepers:
    by_node: dict[str, FenceKeeper]
    metrics: AgentMetrics


def _checked(args: argparse.Namespace) -> tuple[str, str, int]:
    """The runtime, the watchdog and its timeout the flags ask for, refused if they cannot be kept."""
    # a real node's fence must really stop its work: never simulated unless asked for
    runtime = args.runtime or ("cri" if args.backend == "nvml" else "simulated")
    watchdog = args.watchdog or ("/dev/watchdog" if runtime == "cri" else "none")
    timeout = args.watchdog_timeout if args.watchdog_timeout is not None else watchdog_seconds(args.fence_after)
    if runtime == "cri" and args.state_dir is None:
        raise FenceSetupError(
            "a real node's fence must outlive its agent: give --state-dir (the chart uses /var/lib/gigafab, a hostPath)"
        )
    if watchdog == "simulated" and args.state_dir is None:
        raise FenceSetupError("--watchdog simulated keeps its pets in --state-dir: give one")
    if watchdog not in ("none", "simulated") and not watchdog.startswith("/"):
        raise FenceSetupError(f"--watchdog takes a device (e.g. /dev/watchdog), simulated or none, not {watchdog!r}")
    if watchdog not in ("none", "simulated") and len(args.node) > 1:
        raise FenceSetupError(f"a node has one watchdog ({watchdog}): run one agent (--node) per process with it")
    if watchdog != "none" and (why := check_watchdog_timeout(timeout, args.fence_after, args.interval)):
        raise FenceSetupError(why)
    return runtime, watchdog, timeout


def _watchdog(kind: str, timeout: int, state_dir: Path | None, node: str) -> Watchdog:
    if kind == "none":
        return NoWatchdog()
    if kind == "simulated":
        assert state_dir is not None
        return SimulatedWatchdog(state_dir, node)
    try:
        return LinuxWatchdog(Path(kind), timeout)
    except WatchdogError as missing:
        raise FenceSetupError(str(missing), code=1) from missing


def _start(state_dir: Path | None, node: str, fence_after: float) -> tuple[Path | None, Start, float | None]:
    """The node's record, how the agent starts from it, and its last contact."""
    if state_dir is None:
        return None, Start(), None  # nothing kept: a new agent counts its lost contact from its start
    path = record_path(state_dir, node)
    try:
        record = load(path, node)
    except RecordError as unreadable:
        log.error("agent %s: %s; starting fenced", node, unreadable)
        return path, Start(fenced=True, reason=str(unreadable)), None
    start = start_of(record, time.time(), fence_after)
    if start.fenced:
        log.warning("agent %s: starts fenced: %s", node, start.reason)
    return path, start, record.contact_at if record is not None else None


def keepers(args: argparse.Namespace) -> Keepers:
    """A ``FenceKeeper`` per ``--node``, sharing one ``AgentMetrics``."""
    runtime_kind, watchdog_kind, timeout = _checked(args)
    if args.state_dir is not None:
        try:
            args.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as failed:
            raise FenceSetupError(f"cannot use --state-dir {args.state_dir}: {failed}", code=1) from failed
    metrics = AgentMetrics()
    by_node = {}
    for node in args.node:
        runtime: Runtime = CriRuntime(args.crictl) if runtime_kind == "cri" else SimulatedRuntime(node, args.fence_log)
        path, start, contact_at = _start(args.state_dir, node, args.fence_after)
        fence = Fence(args.fence_after, watchdog_timeout=timeout, start=start)
        watchdog = _watchdog(watchdog_kind, timeout, args.state_dir, node)
        by_node[node] = FenceKeeper(node, fence, runtime, watchdog, path, contact_at, metrics)
    return Keepers(by_node, metrics)
