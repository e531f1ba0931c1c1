"""What the chaos tests watch while they break things."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from tests.e2e.conftest import Kubectl, PodPoller

Copy = tuple[str, str]
"""A workload: (namespace, name)."""


class Overlaps(PodPoller):
    """Polls every workload pod of namespaces starting with ``prefix`` twice a second.

    ``found``: the moments two epochs of one workload ran at once (never, if fencing works);
    ``history``: the epochs each workload was seen running in, in order of appearance;
    ``returned``: workloads whose older epoch ran again after a newer one had run.
    """

    def __init__(self, kubectl: Kubectl, prefix: str) -> None:
        super().__init__(kubectl, "-A")
        self.prefix = prefix
        self.found: list[tuple[Copy, set[int]]] = []
        self.history: dict[Copy, list[int]] = defaultdict(list)
        self.returned: set[Copy] = set()
        self.samples = 0

    def take(self, pods: list[dict[str, Any]]) -> None:
        running: dict[Copy, set[int]] = defaultdict(set)
        for pod in pods:
            meta, labels = pod["metadata"], pod["metadata"]["labels"]
            namespace = str(meta["namespace"])
            if (
                namespace.startswith(self.prefix)
                and pod["status"].get("phase") == "Running"
                and not meta.get("deletionTimestamp")
            ):
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
