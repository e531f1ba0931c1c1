"""The simulated GPU backend: N GPUs whose faults are injected at run time."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from gigafab.agents.classify import Reading


class Fault(enum.StrEnum):
    """Faults the simulated backend can be given (``gigafab fault inject``)."""

    XID = "xid"
    ECC_DOUBLE_BIT = "ecc-double-bit"
    ROW_REMAP_FAILURE = "row-remap-failure"
    OVERHEAT = "overheat"
    POWER_EXCURSION = "power-excursion"
    NVLINK = "nvlink"
    SILENT = "silent"
    RESET = "reset"


@dataclass
class SimulatedGpu:
    index: int
    uuid: str
    model: str = "NVIDIA H100 80GB HBM3"
    reading: Reading = field(default_factory=Reading)
    pending_xids: list[int] = field(default_factory=list)
    reset_pending: bool = False


class SimulatedBackend:
    """Readings of ``count`` healthy GPUs until a fault is injected."""

    def __init__(self, node: str, count: int = 8) -> None:
        self.node = node
        self.gpus = [SimulatedGpu(index, f"GPU-{node}-{index}") for index in range(count)]
        self.silent = False

    def inject(self, fault: Fault, gpu: int = 0, xid: int = 79) -> None:
        target = self.gpus[gpu]
        now = target.reading
        if fault is Fault.XID:
            target.pending_xids.append(xid)
        elif fault is Fault.ECC_DOUBLE_BIT:
            target.reading = replace(now, ecc_uncorrected=now.ecc_uncorrected + 1)
        elif fault is Fault.ROW_REMAP_FAILURE:
            target.reading = replace(now, remapped_rows_failure=True)
        elif fault is Fault.OVERHEAT:
            target.reading = replace(now, temperature_celsius=95.0)
        elif fault is Fault.POWER_EXCURSION:
            target.reading = replace(now, power_watts=now.power_limit_watts * 1.3)
        elif fault is Fault.NVLINK:
            target.reading = replace(now, nvlink_errors=now.nvlink_errors + 1)
        elif fault is Fault.SILENT:
            self.silent = True
        elif fault is Fault.RESET:
            target.reading = Reading(ecc_uncorrected=now.ecc_uncorrected, nvlink_errors=now.nvlink_errors)
            target.reset_pending = True
            self.silent = False

    def read(self) -> list[Reading]:
        """One reading per GPU; XIDs and resets are reported once."""
        readings = []
        for gpu in self.gpus:
            readings.append(replace(gpu.reading, xids=tuple(gpu.pending_xids), reset=gpu.reset_pending))
            gpu.pending_xids.clear()
            gpu.reset_pending = False
        return readings
