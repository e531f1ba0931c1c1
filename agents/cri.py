"""Fencing on a real node, through the container runtime's CLI (``crictl``, cri-tools).

Every ready pod sandbox that carries the label ``gigafab.nl/workload`` (any value: the
operator puts the workload's name there) is stopped with ``crictl stopp``, and stopped
again each time the agent checks while fenced (the kubelet, cut off from the apiserver
too, would otherwise start it again).

crictl filters labels only by ``key=value`` (``--label gigafab.nl/workload`` alone is
refused, exit 1), so the ready sandboxes are listed as JSON and filtered here by key.
The sandboxes are stopped all at once, and each crictl call is bounded (``CALL_TIMEOUT``, no
connection retries): a runtime that does not
answer is a failed stop, which the agent counts, retries, and answers by letting its
watchdog stop the node (``fencing.STOP_WITHIN``). Where crictl finds the runtime is its own
business: ``CONTAINER_RUNTIME_ENDPOINT`` (the chart sets it) or ``/etc/crictl.yaml``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from gigafab.agents.fencing import WORKLOAD_LABEL

CALL_TIMEOUT = "1s"
"""crictl's timeout per call (``--timeout``): within ``fencing.STOP_WITHIN`` a stop that takes longer
fails anyway, and the agent must hear of it while it can still act."""

Run = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)


class CriError(RuntimeError):
    """crictl failed; the message has its command and what it said."""


class CriRuntime:
    """Stops the node's gigafab pod sandboxes through ``crictl``."""

    blocking = True

    def __init__(self, crictl: str = "crictl", run: Run = _run) -> None:
        self.crictl, self.run = crictl, run
        self.stopped: list[str] = []

    def _crictl(self, *args: str) -> str:
        command = [self.crictl, f"--timeout={CALL_TIMEOUT}", "--max-retries=0", *args]
        try:
            answer = self.run(command)
        except (OSError, subprocess.TimeoutExpired) as failed:
            raise CriError(f"crictl {' '.join(args)} failed: {failed}") from failed
        if answer.returncode != 0:
            said = [line for line in answer.stderr.splitlines() if "level=warning" not in line]
            raise CriError(f"crictl {' '.join(args)} failed (exit {answer.returncode}): {' '.join(said).strip()}")
        return answer.stdout

    def sandboxes(self) -> list[str]:
        """IDs of the ready pod sandboxes of gigafab workloads on this node."""
        listed = self._crictl("pods", "--state=ready", "--output=json")
        try:
            items = json.loads(listed).get("items") or []
            return [str(item["id"]) for item in items if WORKLOAD_LABEL in (item.get("labels") or {})]
        except (ValueError, AttributeError, KeyError, TypeError) as garbled:
            raise CriError(f"crictl pods answered what is not its JSON ({garbled}): {listed[:200]!r}") from garbled

    def fence(self, reason: str) -> None:
        """Stop every ready gigafab sandbox, all at once (the whole stop must fit in ``fencing.STOP_WITHIN``);
        one that fails does not keep the others running."""
        sandboxes = self.sandboxes()
        if not sandboxes:
            return
        with ThreadPoolExecutor(max_workers=len(sandboxes)) as pool:
            outcomes = list(pool.map(self._stop, sandboxes))
        failures = [outcome for outcome in outcomes if outcome is not None]
        if failures:
            raise CriError("; ".join(failures))

    def _stop(self, sandbox: str) -> str | None:
        try:
            self._crictl("stopp", sandbox)
        except CriError as failed:
            return str(failed)
        self.stopped.append(sandbox)
        return None

    def lift(self) -> None:
        """Nothing to undo: the kubelet starts what the apiserver still wants."""
