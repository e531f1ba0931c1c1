"""What the plane benchmarks share: quantiles of seconds, a bounded wait that ends the bench, and the
GpuWorkload they run on fake nodes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def quantiles(values: list[float]) -> dict[str, float]:
    """p50, p99 and max of durations in seconds, and how many there were."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    return {
        "p50_s": round(ordered[len(ordered) // 2], 2),
        "p99_s": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
        "max_s": round(ordered[-1], 2),
        "n": len(ordered),
    }


def wait(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``check`` until it gives something; a bench that waits longer than ``timeout`` stops."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found is not None and found is not False:
            return found
        time.sleep(interval)
    raise SystemExit(f"bench: {what} not seen within {timeout:.0f} s")


def gpu_workload(name: str, namespace: str, sites: list[str], criticality: str, gpus: int = 2) -> dict[str, Any]:
    """A GpuWorkload whose pods run on the plane's fake (KWOK) nodes."""
    template = {
        "spec": {
            "containers": [{"name": "train", "image": "registry.example/train:1"}],
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
        }
    }
    return {
        "apiVersion": "gigafab.nl/v1alpha1",
        "kind": "GpuWorkload",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"gpus": gpus, "criticality": criticality, "sites": sites, "template": template},
    }
