"""The NVML backend: real GPU health through NVIDIA's management library (``pynvml``
from the ``nvidia-ml-py`` package).

Calls made, all through the ``pynvml`` module (tests give a stand-in with the same
function names, constants and error classes, since no GPU is lent here:
``tests/standins/pynvml.py``):

- ``nvmlInit``, ``nvmlDeviceGetCount``, ``nvmlDeviceGetHandleByIndex``,
  ``nvmlDeviceGetUUID``, ``nvmlDeviceGetName`` — once, at start;
- ``nvmlEventSetCreate`` and ``nvmlDeviceRegisterEvents(handle,
  nvmlEventTypeXidCriticalError, set)`` while NVML is held; then ``nvmlEventSetWait_v2(set, 0)``
  drained on every read until ``NVMLError_Timeout`` (XID events);
- per read and GPU: ``nvmlDeviceGetTemperature(NVML_TEMPERATURE_GPU)``,
  ``nvmlDeviceGetPowerUsage`` and ``nvmlDeviceGetEnforcedPowerLimit`` (milliwatts),
  ``nvmlDeviceGetTotalEccErrors(NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
  NVML_VOLATILE_ECC)``, ``nvmlDeviceGetRemappedRows`` (correctable, uncorrectable,
  pending, failure), ``nvmlDeviceGetNvLinkErrorCounter`` for CRC, replay and recovery
  errors on every link, and ``nvmlDeviceGetFieldValues([NVML_FI_DEV_GET_GPU_RECOVERY_ACTION])``
  (what the driver says a GPU needs: nothing, a reset, a reboot);
- while a GPU awaits its reset: ``nvmlEventSetFree`` and ``nvmlShutdown`` after each look,
  ``nvmlInit`` and ``nvmlDeviceGetHandleByUUID`` before the next.

A counter a GPU does not support (``NVMLError_NotSupported``, or any NVML error for
NVLink on a GPU without links) reads as zero. Any other NVML error on a GPU's readings
makes it unreadable (``Reading.lost``: Failed).

A GPU that fails for good waits for its reset (``recovery``). Meanwhile the backend holds
NVML only for a look every ``RECHECK_SECONDS``: any NVML client attached to a GPU makes
``nvidia-smi -r`` refuse to reset it ("In use by another client", NVIDIA/gpu-operator#118),
and the driver cannot be reloaded while it is open. Each look initialises NVML afresh and
finds the GPUs by UUID, so no handle from before a reset is used. Between looks the last
readings are repeated, and XID events are not seen (NVML queues them only for a registered
event set); counters, row-remap flags and lost GPUs are seen at the next look. Once no GPU
awaits a reset, NVML is held again with its events registered.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

from gigafab.agents.classify import Reading
from gigafab.agents.recovery import NO_ACTION, Awaiting, Look, watch

log = logging.getLogger("gigafab.agent.nvml")

RECHECK_SECONDS = 5.0
"""While a GPU awaits its reset, NVML is taken for a look this often and let go in between. The moments it
is held are when a reset (``nvidia-smi -r``) is refused as "in use": short and few, so an operator's reset
goes through, or goes through when run again. A look initialises NVML (tens of milliseconds with the
driver's persistence mode, seconds without), so not every report's worth; the operator's quiet period
before it trusts a recovered node (30 s at least) makes 5 s of delay in seeing the reset immaterial."""
GONE = frozenset(
    {"NVMLError_GpuIsLost", "NVMLError_ResetRequired", "NVMLError_NotFound", "NVMLError_GpuNotFound", "NVMLError_DriverNotLoaded"}
)
"""NVML errors that say a GPU is lost from the bus, needs a reset or is absent, or that no driver is loaded:
only a reset, a driver reload (which initialises every GPU afresh) or a reboot clears them, so reading the
GPU again afterwards shows one (``recovery``)."""


class NvmlUnavailable(RuntimeError):
    """NVML cannot be used on this host: no library, no driver, or a GPU it cannot identify at start."""


@dataclass(frozen=True)
class NvmlGpu:
    index: int
    uuid: str
    model: str


class NvmlBackend:
    """Readings of the node's real GPUs."""

    silent = False

    def __init__(self, nvml: ModuleType | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        try:
            self.nvml = nvml or importlib.import_module("pynvml")
        except ImportError as missing:
            raise NvmlUnavailable(_unavailable(f"the pynvml module cannot be imported: {missing}")) from missing
        self.clock = clock
        try:
            self.nvml.nvmlInit()
        except self.nvml.NVMLError as failed:
            raise NvmlUnavailable(_unavailable(f"nvmlInit: {failed}")) from failed
        self._events: Any = None
        """The XID event set while NVML is held (None while it is released between looks)."""
        self._held = True
        self._missing: dict[str, Exception] = {}
        """GPUs NVML did not find by UUID when it was last initialised, and its error."""
        self.gpus, self._handles = self._enumerate()
        self._register_events()
        self._awaiting: dict[int, Awaiting] = {}
        """GPUs (by index) that need a reset (``recovery``)."""
        self._ecc = [0 for _ in self.gpus]
        """Each GPU's volatile uncorrected ECC count at its last look."""
        self._last = [Reading() for _ in self.gpus]
        """Each GPU's last reading, without its XIDs and reset: repeated between looks."""
        self._next_look = 0.0

    def _enumerate(self) -> tuple[list[NvmlGpu], dict[str, Any]]:
        nvml, gpus, handles = self.nvml, [], {}
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                gpu = NvmlGpu(index, _text(nvml.nvmlDeviceGetUUID(handle)), _text(nvml.nvmlDeviceGetName(handle)))
                gpus.append(gpu)
                handles[gpu.uuid] = handle
        except nvml.NVMLError as failed:
            self._let_go()
            raise NvmlUnavailable(
                f"NVML cannot identify GPU {len(gpus)} of this host ({type(failed).__name__}: {failed}): a GPU lost "
                "from the bus needs a reset or a reboot before the agent can start; until it runs, this node is Silent"
            ) from failed
        return gpus, handles

    def _register_events(self) -> None:
        nvml = self.nvml
        self._events = nvml.nvmlEventSetCreate()
        for gpu in self.gpus:
            try:
                nvml.nvmlDeviceRegisterEvents(self._handles[gpu.uuid], nvml.nvmlEventTypeXidCriticalError, self._events)
            except nvml.NVMLError as failed:  # its readings will say what is wrong with it
                log.warning("GPU %s: no XID events (%s)", gpu.uuid, failed)

    def _let_go(self) -> None:
        """Release NVML (its event set, then the library), so a reset or a driver reload can go through."""
        nvml = self.nvml
        try:
            if self._events is not None:
                nvml.nvmlEventSetFree(self._events)
            nvml.nvmlShutdown()
        except nvml.NVMLError as failed:
            log.warning("releasing NVML: %s", failed)
        self._events, self._held = None, False

    def _take(self) -> Exception | None:
        """Initialise NVML again and find the GPUs by UUID; the error that stopped it (None: none)."""
        nvml = self.nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as failed:
            return failed  # type: ignore[no-any-return]
        self._held, self._handles, self._missing = True, {}, {}
        for gpu in self.gpus:
            try:
                self._handles[gpu.uuid] = nvml.nvmlDeviceGetHandleByUUID(gpu.uuid)
            except nvml.NVMLError as failed:
                self._missing[gpu.uuid] = failed
        return None

    def _xids(self) -> dict[str, list[int]]:
        """XID codes by GPU UUID since the last read (none while NVML is released between looks)."""
        nvml, seen = self.nvml, dict[str, list[int]]()
        while self._events is not None:
            try:
                event = nvml.nvmlEventSetWait_v2(self._events, 0)
            except nvml.NVMLError_Timeout:
                break
            except nvml.NVMLError as failed:  # the GPUs' own readings show what is wrong
                log.warning("reading XID events: %s", failed)
                break
            try:
                uuid = _text(nvml.nvmlDeviceGetUUID(event.device))
            except nvml.NVMLError as failed:  # a GPU lost with its XID: its readings fail the same way
                log.warning("XID %s of a GPU NVML cannot name: %s", event.eventData, failed)
                continue
            seen.setdefault(uuid, []).append(int(event.eventData))
        return seen

    def read(self) -> list[Reading]:
        """One reading per GPU; XIDs and resets are reported once."""
        if not self._held and self.clock() < self._next_look:
            return list(self._last)
        failed = None if self._held else self._take()
        xids = self._xids()
        looks = [self._look(gpu, tuple(xids.get(gpu.uuid, ())), failed) for gpu in self.gpus]
        readings = [self._judge(gpu.index, look, reading) for gpu, (look, reading) in zip(self.gpus, looks, strict=True)]
        if self._awaiting and self._held:
            self._let_go()
        if self._awaiting:
            self._next_look = self.clock() + RECHECK_SECONDS
        elif self._events is None:
            self._register_events()
        return readings

    def _look(self, gpu: NvmlGpu, xids: tuple[int, ...], failed: Exception | None) -> tuple[Look, Reading | None]:
        """Read one GPU: what ``recovery`` needs to know, and its reading (None: NVML could not read it).
        ``failed``: why NVML itself could not be initialised (None: it was)."""
        nvml = self.nvml
        try:
            if failed is not None or gpu.uuid in self._missing:
                raise failed or self._missing[gpu.uuid]
            reading = self._reading(self._handles[gpu.uuid])
            action = self._recovery_action(self._handles[gpu.uuid])
        except nvml.NVMLError as error:
            return Look(error=f"{type(error).__name__}: {error}", gone=type(error).__name__ in GONE, xids=xids), None
        look = Look(
            xids=xids,
            ecc_uncorrected=reading.ecc_uncorrected,
            remap_failure=reading.remapped_rows_failure,
            recovery_action=action,
        )
        return look, replace(reading, xids=xids)

    def _judge(self, index: int, look: Look, reading: Reading | None) -> Reading:
        """The reading to report for GPU ``index``, after ``recovery`` has watched ``look``."""
        awaiting, reset = watch(self._awaiting.get(index), look, self._ecc[index])
        if awaiting is None:
            self._awaiting.pop(index, None)
        else:
            self._awaiting[index] = awaiting
        if reading is None:
            reading = replace(self._last[index], xids=look.xids, lost=look.error)
        else:
            self._ecc[index] = reading.ecc_uncorrected
        if reset:
            log.info("GPU %s was reset and reads clean again", self.gpus[index].uuid)
        self._last[index] = replace(reading, xids=(), reset=False)
        return replace(reading, reset=reset)

    def _counter(self, call: str, *args: Any) -> Any:
        try:
            return getattr(self.nvml, call)(*args)
        except self.nvml.NVMLError_NotSupported:
            return 0

    def _reading(self, handle: Any) -> Reading:
        nvml = self.nvml
        remapped = self._counter("nvmlDeviceGetRemappedRows", handle) or (0, 0, 0, 0)
        return Reading(
            ecc_uncorrected=int(
                self._counter(
                    "nvmlDeviceGetTotalEccErrors", handle, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC
                )
            ),
            remapped_rows_pending=bool(remapped[2]),
            remapped_rows_failure=bool(remapped[3]),
            temperature_celsius=float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
            power_watts=nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
            power_limit_watts=nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0,
            nvlink_errors=self._nvlink_errors(handle),
        )

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

    def _recovery_action(self, handle: Any) -> int:
        """What the driver says the GPU needs (``NVML_GPU_RECOVERY_ACTION_*``); none where the driver cannot say."""
        nvml = self.nvml
        asked = getattr(nvml, "NVML_FI_DEV_GET_GPU_RECOVERY_ACTION", None)  # older nvidia-ml-py has no such field
        if asked is None:
            return NO_ACTION
        try:
            (field,) = nvml.nvmlDeviceGetFieldValues(handle, [asked])
        except (nvml.NVMLError_NotSupported, nvml.NVMLError_FunctionNotFound):
            return NO_ACTION
        return int(field.value.uiVal) if field.nvmlReturn == nvml.NVML_SUCCESS else NO_ACTION

    def throttle_reasons(self, index: int) -> int:
        return int(self._counter("nvmlDeviceGetCurrentClocksEventReasons", self._handles[self.gpus[index].uuid]))


def _unavailable(why: str) -> str:
    return (
        f"NVML is not available on this host ({why}): run the agent with --backend nvml on a GPU node with the "
        "NVIDIA driver (in Kubernetes, in the NVIDIA container runtime: the chart's agent.runtimeClassName), "
        "or with --backend simulated for a test"
    )


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
