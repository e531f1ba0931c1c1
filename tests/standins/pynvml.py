"""A stand-in for NVIDIA's ``pynvml`` (the nvidia-ml-py package) over a described machine: no GPU is lent here.

The NVML backend (``agents/nvml.py``) is tested through the Python boundary it uses on a real node: the
functions below have pynvml's names and arguments, and raise pynvml's own error classes with its constants
(the real module lends them). Behind them is a ``Machine``: its GPUs, their counters, XID events, a GPU
lost from the bus, the driver's recovery action, and resets.

What real NVML does, as far as the backend relies on it: calls before ``nvmlInit`` (or after the last
``nvmlShutdown``) fail with ``NVMLError_Uninitialized``; a lost GPU answers ``NVMLError_GpuIsLost``; an
event set sees only events raised after it was created, for the GPUs registered with it; a GPU cannot be
reset while any NVML client is attached (``nvidia-smi -r``: "In use by another client"); a reset clears
the GPU's volatile ECC counts, applies pending row remaps and answers again. Handles from before the last
``nvmlShutdown`` fail with ``NVMLError_InvalidArgument`` here (what real NVML does with them is not
documented: the backend must not use them).

In a test process, ``load(machine)`` gives a module of its own. For a ``gigafab agent`` process, put this
folder first on PYTHONPATH and the path of a JSON file (``Machine.save``) in ``$GIGAFAB_NVML_MACHINE``:
every call reads the file again, so a test changes the machine under the running agent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

MACHINE_FILE = "GIGAFAB_NVML_MACHINE"


def _real_pynvml() -> ModuleType:
    """The real pynvml: imported as such in a test process; loaded under another name where this file stands in for it."""
    if __name__ != "pynvml":
        import pynvml

        return pynvml
    here = Path(__file__).resolve().parent
    for entry in sys.path:
        candidate = Path(entry or ".").resolve() / "pynvml.py"
        if candidate.parent != here and candidate.is_file():
            spec = importlib.util.spec_from_file_location("_real_pynvml", candidate)
            assert spec is not None
            assert spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            return module
    raise ImportError("the pynvml stand-in lends its constants and errors from the real pynvml (nvidia-ml-py): install it")


_real = _real_pynvml()
globals().update({name: value for name, value in vars(_real).items() if name.startswith(("NVML", "nvmlEventType", "c_nvml"))})
NVMLError = _real.NVMLError


@dataclass
class Gpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    temperature: int = 45
    power_mw: int = 300_000
    limit_mw: int = 700_000
    ecc_uncorrected: int = 0
    """Volatile uncorrected ECC errors."""
    remapped: list[int] | None = field(default_factory=lambda: [0, 0, 0, 0])
    """Row remaps: correctable, uncorrectable, pending, failure (None: not supported)."""
    nvlink: dict[str, int] = field(default_factory=lambda: {"0": 0, "1": 0})
    lost: bool = False
    recovery_action: int | None = 0
    """``NVML_GPU_RECOVERY_ACTION_*`` (None: a driver that does not have the field)."""


@dataclass
class Machine:
    gpus: list[Gpu]
    driver: bool = True
    """False: no NVIDIA driver loaded (``nvmlInit`` fails)."""
    events: list[list[int]] = field(default_factory=list)
    """XID events raised, in order: [GPU index, XID]."""

    def xid(self, gpu: int, code: int) -> None:
        """The driver reports XID ``code`` on GPU ``gpu`` (79 also loses the GPU from the bus)."""
        self.events.append([gpu, code])
        if code == 79:
            self.gpus[gpu].lost = True

    def save(self, path: Path) -> None:
        """Write the machine to ``path`` whole (a running agent never reads half of it)."""
        written = path.with_suffix(".new")
        written.write_text(json.dumps(asdict(self)))
        written.replace(path)

    @classmethod
    def load(cls, path: Path) -> Machine:
        data = json.loads(path.read_text())
        return cls([Gpu(**gpu) for gpu in data.pop("gpus")], **data)


MACHINE: Machine | None = None
"""The machine of a test process (``load``); else ``$GIGAFAB_NVML_MACHINE`` is read at every call."""


@dataclass
class Attachment:
    clients: int = 0
    """``nvmlInit`` calls not yet matched by ``nvmlShutdown``: while above zero, NVML is attached to the GPUs."""
    generation: int = 0
    """How many times NVML was initialised from nothing: handles carry the one they were made in."""


ATTACHED = Attachment()
calls: list[str] = []


def machine() -> Machine:
    return MACHINE if MACHINE is not None else Machine.load(Path(os.environ[MACHINE_FILE]))


def reset(gpu: int) -> None:
    """``nvidia-smi -r -i <gpu>``: refused while an NVML client is attached, as the real one is."""
    if ATTACHED.clients:
        raise RuntimeError(f"GPU {gpu}: In use by another client")
    target = machine().gpus[gpu]
    target.lost, target.ecc_uncorrected = False, 0
    if target.remapped is not None:
        target.remapped[2] = 0  # pending remaps are applied at the reset
    if target.recovery_action is not None:
        target.recovery_action = 0


def _error(kind: int) -> Exception:
    error: Exception = _real.NVMLError(kind)  # pynvml makes it the code's own subclass (NVMLError_GpuIsLost, ...)
    return error


@dataclass(frozen=True)
class Handle:
    index: int
    generation: int


@dataclass
class EventSet:
    cursor: int
    registered: set[int] = field(default_factory=set)
    freed: bool = False


def _called(name: str) -> None:
    calls.append(name)
    if not ATTACHED.clients:
        raise _error(_real.NVML_ERROR_UNINITIALIZED)


def _gpu(handle: Handle) -> Gpu:
    if handle.generation != ATTACHED.generation:
        raise _error(_real.NVML_ERROR_INVALID_ARGUMENT)
    gpu = machine().gpus[handle.index]
    if gpu.lost:
        raise _error(_real.NVML_ERROR_GPU_IS_LOST)
    return gpu


def nvmlInit() -> None:
    calls.append("nvmlInit")
    if not machine().driver:
        raise _error(_real.NVML_ERROR_DRIVER_NOT_LOADED)
    if not ATTACHED.clients:
        ATTACHED.generation += 1
    ATTACHED.clients += 1


def nvmlShutdown() -> None:
    _called("nvmlShutdown")
    ATTACHED.clients -= 1


def nvmlDeviceGetCount() -> int:
    _called("nvmlDeviceGetCount")
    return len(machine().gpus)


def nvmlDeviceGetHandleByIndex(index: int) -> Handle:
    _called("nvmlDeviceGetHandleByIndex")
    handle = Handle(index, ATTACHED.generation)
    _gpu(handle)
    return handle


def nvmlDeviceGetHandleByUUID(uuid: str | bytes) -> Handle:
    _called("nvmlDeviceGetHandleByUUID")
    wanted = uuid.decode() if isinstance(uuid, bytes) else uuid
    for index, gpu in enumerate(machine().gpus):
        if gpu.uuid == wanted:
            handle = Handle(index, ATTACHED.generation)
            _gpu(handle)
            return handle
    raise _error(_real.NVML_ERROR_NOT_FOUND)


def nvmlDeviceGetUUID(handle: Handle) -> str:
    _called("nvmlDeviceGetUUID")
    return _gpu(handle).uuid


def nvmlDeviceGetName(handle: Handle) -> str:
    _called("nvmlDeviceGetName")
    return _gpu(handle).name


def nvmlEventSetCreate() -> EventSet:
    _called("nvmlEventSetCreate")
    return EventSet(cursor=len(machine().events))


def nvmlEventSetFree(events: EventSet) -> None:
    _called("nvmlEventSetFree")
    events.freed = True


def nvmlDeviceRegisterEvents(handle: Handle, kinds: int, events: EventSet) -> None:
    _called("nvmlDeviceRegisterEvents")
    _gpu(handle)
    events.registered.add(handle.index)


def nvmlEventSetWait_v2(events: EventSet, timeout_ms: int) -> Any:
    _called("nvmlEventSetWait_v2")
    raised = machine().events
    while events.cursor < len(raised):
        gpu, xid = raised[events.cursor]
        events.cursor += 1
        if gpu in events.registered:
            return SimpleNamespace(
                device=Handle(gpu, ATTACHED.generation), eventType=_real.nvmlEventTypeXidCriticalError, eventData=xid
            )
    raise _error(_real.NVML_ERROR_TIMEOUT)


def nvmlDeviceGetTemperature(handle: Handle, sensor: int) -> int:
    _called("nvmlDeviceGetTemperature")
    return _gpu(handle).temperature


def nvmlDeviceGetPowerUsage(handle: Handle) -> int:
    _called("nvmlDeviceGetPowerUsage")
    return _gpu(handle).power_mw


def nvmlDeviceGetEnforcedPowerLimit(handle: Handle) -> int:
    _called("nvmlDeviceGetEnforcedPowerLimit")
    return _gpu(handle).limit_mw


def nvmlDeviceGetTotalEccErrors(handle: Handle, kind: int, counter: int) -> int:
    _called("nvmlDeviceGetTotalEccErrors")
    return _gpu(handle).ecc_uncorrected


def nvmlDeviceGetRemappedRows(handle: Handle) -> tuple[int, int, int, int]:
    _called("nvmlDeviceGetRemappedRows")
    remapped = _gpu(handle).remapped
    if remapped is None:
        raise _error(_real.NVML_ERROR_NOT_SUPPORTED)
    correctable, uncorrectable, pending, failure = remapped
    return correctable, uncorrectable, pending, failure


def nvmlDeviceGetCurrentClocksEventReasons(handle: Handle) -> int:
    _called("nvmlDeviceGetCurrentClocksEventReasons")
    _gpu(handle)
    return 0x4


def nvmlDeviceGetNvLinkErrorCounter(handle: Handle, link: int, kind: int) -> int:
    _called("nvmlDeviceGetNvLinkErrorCounter")
    links = _gpu(handle).nvlink
    if str(link) not in links:
        raise _error(_real.NVML_ERROR_INVALID_ARGUMENT)
    return links[str(link)]


def nvmlDeviceGetFieldValues(handle: Handle, field_ids: list[int]) -> Any:
    _called("nvmlDeviceGetFieldValues")
    gpu = _gpu(handle)
    values = (_real.c_nvmlFieldValue_t * len(field_ids))()
    for value, field_id in zip(values, field_ids, strict=True):
        value.fieldId = field_id
        if field_id == _real.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION and gpu.recovery_action is not None:
            value.valueType, value.value.uiVal = _real.NVML_VALUE_TYPE_UNSIGNED_INT, gpu.recovery_action
        else:
            value.nvmlReturn = _real.NVML_ERROR_NOT_SUPPORTED
    return values


def load(of: Machine) -> ModuleType:
    """This stand-in as a module of its own, over ``of``: one per test, so no state leaks between tests."""
    spec = importlib.util.spec_from_file_location(f"pynvml_standin_{id(of)}", __file__)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    module.MACHINE = of
    return module
