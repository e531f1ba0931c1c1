"""What the plane benchmarks share: quantiles of seconds, and a bounded wait that ends the bench."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

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
