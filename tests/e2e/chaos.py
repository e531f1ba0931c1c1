"""What the chaos tests watch while they break things."""

from __future__ import annotations

import threading
from collections import defaultdict

from tests.e2e.conftest import Kubectl

Copy = tuple[str, str]
"""A workload: (namespace, name)."""


class Overlaps:
    """Polls every workload pod of namespaces starting with ``prefix`` twice a second.

    ``found``: the moments two epochs of one workload ran at once (never, if fencing works);
    ``history``: the epochs each workload was seen running in, in order of appearance;
    ``returned``: workloads whose older epoch ran again after a newer one had run.
    """

    def __init__(self, kubectl: Kubectl, prefix: str) -> None:
        self.kubectl, self.prefix = kubectl, prefix
        self.found: list[tuple[Copy, set[int]]] = []
        self.history: dict[Copy, list[int]] = defaultdict(list)
        self.returned: set[Copy] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Overlaps:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            pods = self.kubectl.get("pods", "-A", "-l", "gigafab.nl/workload")
            if pods is not None:  # None: the apiserver did not answer (a chaos test may have stopped it)
                self._take(pods["items"])

    def _take(self, pods: list[dict[str, object]]) -> None:
        running: dict[Copy, set[int]] = defaultdict(set)
        for pod in pods:
            meta: dict[str, object] = pod["metadata"]  # type: ignore[assignment]
            status: dict[str, object] = pod["status"]  # type: ignore[assignment]
            labels: dict[str, str] = meta["labels"]  # type: ignore[assignment]
            namespace = str(meta["namespace"])
            if namespace.startswith(self.prefix) and status.get("phase") == "Running" and not meta.get("deletionTimestamp"):
                running[(namespace, labels["gigafab.nl/workload"])].add(int(labels["gigafab.nl/epoch"]))
        self.samples += 1
        for copy, epochs in running.items():
            if len(epochs) > 1:
                self.found.append((copy, epochs))
            seen = self.history[copy]
            for epoch in sorted(epochs):
                if seen and epoch < max(seen):
                    self.returned.add(copy)
                if not seen or seen[-1] != epoch:
                    seen.append(epoch)
