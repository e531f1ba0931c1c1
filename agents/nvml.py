"""The NVML backend: real GPU health through NVIDIA's management library (``pynvml``
from the ``nvidia-ml-py`` package).

Calls made, all through the ``pynvml`` module (tests give a stand-in with the same
function names, since no GPU is lent here):

- ``nvmlInit``, ``nvmlDeviceGetCount``, ``nvmlDeviceGetHandleByIndex``,
  ``nvmlDeviceGetUUID``, ``nvmlDeviceGetName`` — once, at start;
- ``nvmlEventSetCreate`` and ``nvmlDeviceRegisterEvents(handle,
  nvmlEventTypeXidCriticalError, set)`` — once; then ``nvmlEventSetWait_v2(set, 0)``
  drained on every read until ``NVMLError_Timeout`` (XID events);
- per read and GPU: ``nvmlDeviceGetTemperature(NVML_TEMPERATURE_GPU)``,
  ``nvmlDeviceGetPowerUsage`` and ``nvmlDeviceGetEnforcedPowerLimit`` (milliwatts),
  ``nvmlDeviceGetTotalEccErrors(NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
  NVML_VOLATILE_ECC)``, ``nvmlDeviceGetRemappedRows`` (correctable, uncorrectable,
  pending, failure), ``nvmlDeviceGetCurrentClocksEventReasons``, and
  ``nvmlDeviceGetNvLinkErrorCounter`` for CRC, replay and recovery errors on every
  link.

A counter a GPU does not support (``NVMLError_NotSupported``, or any NVML error for
NVLink on a GPU without links) reads as zero.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from gigafab.agents.classify import Reading


@dataclass(frozen=True)
class NvmlGpu:
    index: int
    uuid: str
    model: str
    handle: Any


class NvmlBackend:
    """Readings of the node's real GPUs."""

    silent = False

    def __init__(self, nvml: ModuleType | None = None) -> None:
        self.nvml = nvml or importlib.import_module("pynvml")
        self.nvml.nvmlInit()
        count = self.nvml.nvmlDeviceGetCount()
        self.gpus = []
        for index in range(count):
            handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
            self.gpus.append(
                NvmlGpu(index, _text(self.nvml.nvmlDeviceGetUUID(handle)), _text(self.nvml.nvmlDeviceGetName(handle)), handle)
            )
        self.events = self.nvml.nvmlEventSetCreate()
        for gpu in self.gpus:
            self.nvml.nvmlDeviceRegisterEvents(gpu.handle, self.nvml.nvmlEventTypeXidCriticalError, self.events)

    def _xids(self) -> dict[str, list[int]]:
        """XID codes by GPU UUID since the last read."""
        seen: dict[str, list[int]] = {}
        while True:
            try:
                event = self.nvml.nvmlEventSetWait_v2(self.events, 0)
            except self.nvml.NVMLError_Timeout:
                return seen
            uuid = _text(self.nvml.nvmlDeviceGetUUID(event.device))
            seen.setdefault(uuid, []).append(int(event.eventData))

    def _counter(self, call: str, *args: Any) -> Any:
        try:
            return getattr(self.nvml, call)(*args)
        except self.nvml.NVMLError_NotSupported:
            return 0

    def _nvlink_errors(self, handle: Any) -> int:
        nvml = self.nvml
        total = 0
        for link in range(nvml.NVML_NVLINK_MAX_LINKS):
            for kind in (
                nvml.NVML_NVLINK_ERROR_DL_CRC_FLIT,
                nvml.NVML_NVLINK_ERROR_DL_REPLAY,
                nvml.NVML_NVLINK_ERROR_DL_RECOVERY,
            ):
                try:
                    total += int(nvml.nvmlDeviceGetNvLinkErrorCounter(handle, link, kind))
                except nvml.NVMLError:
                    break  # no such link
        return total

    def read(self) -> list[Reading]:
        nvml = self.nvml
        xids = self._xids()
        readings = []
        for gpu in self.gpus:
            remapped = self._counter("nvmlDeviceGetRemappedRows", gpu.handle) or (0, 0, 0, 0)
            readings.append(
                Reading(
                    xids=tuple(xids.get(gpu.uuid, ())),
                    ecc_uncorrected=int(
                        self._counter(
                            "nvmlDeviceGetTotalEccErrors",
                            gpu.handle,
                            nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                            nvml.NVML_VOLATILE_ECC,
                        )
                    ),
                    remapped_rows_pending=bool(remapped[2]),
                    remapped_rows_failure=bool(remapped[3]),
                    temperature_celsius=float(nvml.nvmlDeviceGetTemperature(gpu.handle, nvml.NVML_TEMPERATURE_GPU)),
                    power_watts=nvml.nvmlDeviceGetPowerUsage(gpu.handle) / 1000.0,
                    power_limit_watts=nvml.nvmlDeviceGetEnforcedPowerLimit(gpu.handle) / 1000.0,
                    nvlink_errors=self._nvlink_errors(gpu.handle),
                )
            )
        return readings

    def throttle_reasons(self, index: int) -> int:
        return int(self._counter("nvmlDeviceGetCurrentClocksEventReasons", self.gpus[index].handle))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
