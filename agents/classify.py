"""GPU health classification, the way NVIDIA documents it, as a pure function.

- Failed: XID 48 (double-bit ECC), 64 (ECC page retirement / row remap failure),
  74 (NVLink error), 79 (fallen off the bus), 95 (uncontained ECC error), any new
  uncorrected (double-bit) ECC error, a failed row remap, or a GPU NVML cannot read
  (lost from the bus, needing a reset, or any other NVML error).
- Degraded: XID 63 (row remap / page retirement recorded, reset pending), XID 94
  (contained ECC error), a pending row remap, overheating, power above the limit, or
  new NVLink errors.
- Application XIDs (13, 31, 43, 45, 68) say a program misbehaved; they do not make a
  GPU unhealthy.

Failed is sticky: only an explicit GPU reset clears it, never silence or a quiet
report. Degraded from an XID is sticky the same way (the driver needs a reset);
degraded from temperature, power or NVLink counters clears when they do.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

FAILED_XIDS = frozenset({48, 64, 74, 79, 95})
DEGRADED_XIDS = frozenset({63, 94})
APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68})
OVERHEAT_CELSIUS = 90.0
POWER_EXCURSION = 1.10
"""Draw above this multiple of the power limit is an excursion."""


class Health(enum.IntEnum):
    """Ordered worst-last, numbered as in the protocol's ``Health`` enum."""

    HEALTHY = 1
    DEGRADED = 2
    FAILED = 3


@dataclass(frozen=True)
class Reading:
    """One look at a GPU: counters are cumulative, XIDs are those seen since the last look."""

    xids: tuple[int, ...] = ()
    ecc_uncorrected: int = 0
    remapped_rows_pending: bool = False
    remapped_rows_failure: bool = False
    temperature_celsius: float = 40.0
    power_watts: float = 300.0
    power_limit_watts: float = 700.0
    nvlink_errors: int = 0
    reset: bool = False
    lost: str = ""
    """Why NVML could not read the GPU (its error); empty when it did. The other fields then repeat the last
    reading that succeeded."""


@dataclass(frozen=True)
class Verdict:
    """A GPU's health, why, and what stays until a reset."""

    health: Health = Health.HEALTHY
    reason: str = "healthy"
    sticky: Health = Health.HEALTHY
    sticky_reason: str = ""
    ecc_uncorrected: int = 0
    nvlink_errors: int = 0


def _worst(findings: Iterable[tuple[Health, str]]) -> tuple[Health, str]:
    found = sorted(findings, key=lambda finding: finding[0], reverse=True)
    return found[0] if found else (Health.HEALTHY, "healthy")


def classify(previous: Verdict, reading: Reading) -> Verdict:
    """The GPU's verdict after ``reading``, given the verdict before it."""
    if reading.reset:
        previous = Verdict(ecc_uncorrected=reading.ecc_uncorrected, nvlink_errors=reading.nvlink_errors)
    lasting: list[tuple[Health, str]] = [(previous.sticky, previous.sticky_reason)]
    for xid in reading.xids:
        if xid in FAILED_XIDS:
            lasting.append((Health.FAILED, f"XID {xid}"))
        elif xid in DEGRADED_XIDS:
            lasting.append((Health.DEGRADED, f"XID {xid}"))
    if reading.ecc_uncorrected > previous.ecc_uncorrected:
        lasting.append((Health.FAILED, "uncorrected (double-bit) ECC error"))
    if reading.remapped_rows_failure:
        lasting.append((Health.FAILED, "row remapping failed"))
    if reading.lost:
        lasting.append((Health.FAILED, f"unreadable through NVML: {reading.lost}"))
    sticky, sticky_reason = _worst(item for item in lasting if item[0] > Health.HEALTHY)
    passing: list[tuple[Health, str]] = []
    if reading.remapped_rows_pending:
        passing.append((Health.DEGRADED, "row remapping pending a reset"))
    if reading.temperature_celsius >= OVERHEAT_CELSIUS:
        passing.append((Health.DEGRADED, f"overheating at {reading.temperature_celsius:.0f} °C"))
    if reading.power_watts > reading.power_limit_watts * POWER_EXCURSION:
        passing.append((Health.DEGRADED, f"power excursion to {reading.power_watts:.0f} W"))
    if reading.nvlink_errors > previous.nvlink_errors:
        passing.append((Health.DEGRADED, "new NVLink errors"))
    health, reason = _worst([(sticky, sticky_reason), *passing] if sticky > Health.HEALTHY else passing)
    return Verdict(
        health,
        reason,
        sticky,
        sticky_reason if sticky > Health.HEALTHY else "",
        max(previous.ecc_uncorrected, reading.ecc_uncorrected),
        reading.nvlink_errors,
    )
