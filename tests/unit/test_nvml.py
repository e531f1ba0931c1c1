"""The NVML backend against NVML's Python function boundary: a stand-in ``pynvml``
module with the same functions, constants and errors (no GPU is lent here)."""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

import pynvml
import pytest
from gigafab.agents.classify import Health, Verdict, classify
from gigafab.agents.nvml import NvmlBackend


@dataclass
class FakeGpu:
    uuid: str
    temperature: int = 45
    power_mw: int = 300_000
    limit_mw: int = 700_000
    ecc_uncorrected: int = 0
    remapped: tuple[int, int, int, int] = (0, 0, 0, 0)
    nvlink: dict[int, int] = field(default_factory=lambda: {0: 0, 1: 0})


def fake_nvml(gpus: list[FakeGpu], events: list[tuple[int, int]]) -> types.ModuleType:
    """A module exposing the pynvml functions the backend calls; ``events`` are (gpu, xid)."""
    module = types.ModuleType("pynvml")
    for name in (
        "NVMLError",
        "NVMLError_Timeout",
        "NVMLError_NotSupported",
        "NVML_TEMPERATURE_GPU",
        "NVML_MEMORY_ERROR_TYPE_UNCORRECTED",
        "NVML_VOLATILE_ECC",
        "nvmlEventTypeXidCriticalError",
        "NVML_NVLINK_MAX_LINKS",
        "NVML_NVLINK_ERROR_DL_CRC_FLIT",
        "NVML_NVLINK_ERROR_DL_REPLAY",
        "NVML_NVLINK_ERROR_DL_RECOVERY",
    ):
        setattr(module, name, getattr(pynvml, name))  # the real constants and error classes
    calls: list[str] = []
    module.calls = calls  # type: ignore[attr-defined]

    def record(name: str, function: Any) -> None:
        def wrapper(*args: Any) -> Any:
            calls.append(name)
            return function(*args)

        setattr(module, name, wrapper)

    def nvlink(handle: int, link: int, kind: int) -> int:
        if link not in gpus[handle].nvlink:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gpus[handle].nvlink[link]

    def wait(_set: object, _timeout: int) -> Any:
        if not events:
            raise pynvml.NVMLError_Timeout()
        gpu, xid = events.pop(0)
        return types.SimpleNamespace(device=gpu, eventData=xid)

    def remapped(handle: int) -> tuple[int, int, int, int]:
        if gpus[handle].remapped is None:
            raise pynvml.NVMLError_NotSupported()
        return gpus[handle].remapped

    for name, function in {
        "nvmlInit": lambda: None,
        "nvmlDeviceGetCount": lambda: len(gpus),
        "nvmlDeviceGetHandleByIndex": lambda index: index,
        "nvmlDeviceGetUUID": lambda handle: gpus[handle].uuid.encode(),
        "nvmlDeviceGetName": lambda handle: "NVIDIA H100 80GB HBM3",
        "nvmlEventSetCreate": lambda: "event-set",
        "nvmlDeviceRegisterEvents": lambda handle, kinds, events_set: None,
        "nvmlEventSetWait_v2": wait,
        "nvmlDeviceGetTemperature": lambda handle, sensor: gpus[handle].temperature,
        "nvmlDeviceGetPowerUsage": lambda handle: gpus[handle].power_mw,
        "nvmlDeviceGetEnforcedPowerLimit": lambda handle: gpus[handle].limit_mw,
        "nvmlDeviceGetTotalEccErrors": lambda handle, kind, counter: gpus[handle].ecc_uncorrected,
        "nvmlDeviceGetRemappedRows": remapped,
        "nvmlDeviceGetCurrentClocksEventReasons": lambda handle: 0x4,
        "nvmlDeviceGetNvLinkErrorCounter": nvlink,
    }.items():
        record(name, function)
    return module


def verdicts(backend: NvmlBackend) -> list[Health]:
    return [classify(Verdict(), reading).health for reading in backend.read()]


def test_healthy_gpus_read_healthy_with_units_converted() -> None:
    backend = NvmlBackend(fake_nvml([FakeGpu("GPU-a"), FakeGpu("GPU-b")], []))
    readings = backend.read()
    assert [gpu.uuid for gpu in backend.gpus] == ["GPU-a", "GPU-b"]
    assert (readings[0].power_watts, readings[0].power_limit_watts, readings[0].temperature_celsius) == (300.0, 700.0, 45.0)
    assert verdicts(backend) == [Health.HEALTHY, Health.HEALTHY]


@pytest.mark.parametrize(
    ("gpu", "events", "expected"),
    [
        (FakeGpu("GPU-b"), [(1, 79)], Health.FAILED),
        (FakeGpu("GPU-b"), [(1, 63)], Health.DEGRADED),
        (FakeGpu("GPU-b"), [(1, 13)], Health.HEALTHY),
        (FakeGpu("GPU-b", ecc_uncorrected=1), [], Health.FAILED),
        (FakeGpu("GPU-b", remapped=(0, 1, 0, 1)), [], Health.FAILED),
        (FakeGpu("GPU-b", remapped=(0, 0, 1, 0)), [], Health.DEGRADED),
        (FakeGpu("GPU-b", temperature=93), [], Health.DEGRADED),
        (FakeGpu("GPU-b", power_mw=900_000), [], Health.DEGRADED),
        (FakeGpu("GPU-b", nvlink={0: 2, 1: 1}), [], Health.DEGRADED),
    ],
)
def test_each_nvml_signal_reaches_the_right_verdict(gpu: FakeGpu, events: list[tuple[int, int]], expected: Health) -> None:
    backend = NvmlBackend(fake_nvml([FakeGpu("GPU-a"), gpu], events))
    assert verdicts(backend) == [Health.HEALTHY, expected]


def test_xid_events_are_drained_and_reported_once() -> None:
    nvml = fake_nvml([FakeGpu("GPU-a")], [(0, 79), (0, 48)])
    backend = NvmlBackend(nvml)
    assert backend.read()[0].xids == (79, 48)
    assert backend.read()[0].xids == ()


def test_unsupported_counters_read_as_zero() -> None:
    gpu = FakeGpu("GPU-a")
    gpu.remapped = None  # type: ignore[assignment]
    backend = NvmlBackend(fake_nvml([gpu], []))
    assert backend.read()[0].remapped_rows_failure is False
    assert backend.throttle_reasons(0) == 0x4
