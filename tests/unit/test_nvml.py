"""The NVML backend against NVML's Python function boundary: a stand-in ``pynvml`` module with pynvml's
functions, constants and error classes (``tests/standins/pynvml.py``; no GPU is lent here), and the real
pynvml where it can run: on this host without a driver, as on a GPU node whose driver is missing."""

from __future__ import annotations

from types import ModuleType

import pytest
from gigafab.agents.classify import Health, Verdict, classify
from gigafab.agents.nvml import RECHECK_SECONDS, NvmlBackend, NvmlUnavailable

from tests.standins import pynvml as standin
from tests.standins.pynvml import Gpu, Machine


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def backend_of(machine: Machine, clock: Clock | None = None) -> tuple[NvmlBackend, ModuleType]:
    nvml = standin.load(machine)
    return NvmlBackend(nvml, clock or Clock()), nvml


def verdicts(backend: NvmlBackend) -> list[Health]:
    return [classify(Verdict(), reading).health for reading in backend.read()]


class Node:
    """The agent's side of a backend: readings classified, verdicts kept, as ``Agent.sample`` does."""

    def __init__(self, backend: NvmlBackend, clock: Clock) -> None:
        self.backend, self.clock = backend, clock
        self.verdicts = [Verdict() for _ in backend.gpus]
        self.resets = 0

    def look(self) -> list[Health]:
        """A read ``RECHECK_SECONDS`` after the last: while a GPU awaits its reset, NVML is looked at again."""
        self.clock.now += RECHECK_SECONDS
        readings = self.backend.read()
        self.resets += sum(reading.reset for reading in readings)
        self.verdicts = [classify(verdict, reading) for verdict, reading in zip(self.verdicts, readings, strict=True)]
        return [verdict.health for verdict in self.verdicts]


def test_healthy_gpus_read_healthy_with_units_converted() -> None:
    backend, _ = backend_of(Machine([Gpu("GPU-a"), Gpu("GPU-b")]))
    readings = backend.read()
    assert [gpu.uuid for gpu in backend.gpus] == ["GPU-a", "GPU-b"]
    assert [gpu.model for gpu in backend.gpus] == ["NVIDIA H100 80GB HBM3"] * 2
    assert (readings[0].power_watts, readings[0].power_limit_watts, readings[0].temperature_celsius) == (300.0, 700.0, 45.0)
    assert verdicts(backend) == [Health.HEALTHY, Health.HEALTHY]


@pytest.mark.parametrize(
    ("gpu", "xid", "expected"),
    [
        (Gpu("GPU-b"), 79, Health.FAILED),
        (Gpu("GPU-b"), 63, Health.DEGRADED),
        (Gpu("GPU-b"), 13, Health.HEALTHY),
        (Gpu("GPU-b", ecc_uncorrected=1), None, Health.FAILED),
        (Gpu("GPU-b", remapped=[0, 1, 0, 1]), None, Health.FAILED),
        (Gpu("GPU-b", remapped=[0, 0, 1, 0]), None, Health.DEGRADED),
        (Gpu("GPU-b", temperature=93), None, Health.DEGRADED),
        (Gpu("GPU-b", power_mw=900_000), None, Health.DEGRADED),
        (Gpu("GPU-b", nvlink={"0": 2, "1": 1}), None, Health.DEGRADED),
        (Gpu("GPU-b", lost=True), None, Health.FAILED),
    ],
)
def test_each_nvml_signal_reaches_the_right_verdict(gpu: Gpu, xid: int | None, expected: Health) -> None:
    machine = Machine([Gpu("GPU-a"), Gpu("GPU-b")])
    backend, _ = backend_of(machine)
    machine.gpus[1] = gpu
    if xid is not None:
        machine.xid(1, xid)
    assert verdicts(backend) == [Health.HEALTHY, expected]


def test_xid_events_are_drained_and_reported_once() -> None:
    machine = Machine([Gpu("GPU-a")])
    backend, _ = backend_of(machine)
    machine.xid(0, 63)
    machine.xid(0, 94)
    assert backend.read()[0].xids == (63, 94)
    assert backend.read()[0].xids == ()


def test_unsupported_counters_read_as_zero() -> None:
    backend, _ = backend_of(Machine([Gpu("GPU-a", remapped=None, recovery_action=None)]))
    assert backend.read()[0].remapped_rows_failure is False
    assert backend.throttle_reasons(0) == 0x4


def test_a_gpu_lost_from_the_bus_is_failed_until_reset_and_the_agent_never_stands_in_the_way_of_the_reset() -> None:
    """XID 79: the GPU falls off the bus and NVML answers ``GpuIsLost``. The backend lets go of NVML between
    looks, so the operator's ``nvidia-smi -r`` is not refused as "in use"; once the GPU answers again, it is
    reported reset once, and NVML is held again with its XID events."""
    machine = Machine([Gpu("GPU-a"), Gpu("GPU-b")])
    clock = Clock()
    backend, nvml = backend_of(machine, clock)
    node = Node(backend, clock)
    with pytest.raises(RuntimeError, match="In use"):
        nvml.reset(1)  # what the operator meets while an NVML client is attached: NVML's own rule
    machine.xid(1, 79)
    assert node.look() == [Health.HEALTHY, Health.FAILED]
    assert "GpuIsLost" in node.verdicts[1].reason
    assert nvml.ATTACHED.clients == 0, "NVML let go after the look"
    calls = len(nvml.calls)
    for _ in range(3):
        clock.now += RECHECK_SECONDS / 4
        assert [classify(verdict, reading).health for verdict, reading in zip(node.verdicts, backend.read(), strict=True)] == [
            Health.HEALTHY,
            Health.FAILED,
        ]
    assert len(nvml.calls) == calls, "between looks, the last readings are repeated without NVML"
    assert node.look() == [Health.HEALTHY, Health.FAILED], "still lost: still Failed"
    nvml.reset(1)
    assert node.look() == [Health.HEALTHY, Health.HEALTHY]
    assert node.resets == 1
    assert node.look() == [Health.HEALTHY, Health.HEALTHY]
    assert node.resets == 1, "a reset is reported once"
    assert nvml.ATTACHED.clients == 1, "no GPU awaits a reset: NVML is held again"
    machine.xid(0, 48)
    assert node.look() == [Health.FAILED, Health.HEALTHY], "and its XID events are seen again"


def test_a_double_bit_ecc_error_is_failed_until_the_reset_restarts_the_volatile_count() -> None:
    machine = Machine([Gpu("GPU-a")])
    clock = Clock()
    backend, nvml = backend_of(machine, clock)
    node = Node(backend, clock)
    machine.xid(0, 48)
    machine.gpus[0].ecc_uncorrected = 1
    assert node.look() == [Health.FAILED]
    assert node.look() == [Health.FAILED], "no sign of a reset: the count is what it was"
    machine.gpus[0].remapped = [0, 1, 0, 1]
    nvml.reset(0)
    assert node.look() == [Health.FAILED], "reset, but its row remap failed: not recovered"
    assert node.resets == 0
    machine.gpus[0].remapped = [0, 1, 0, 0]
    assert node.look() == [Health.HEALTHY]
    assert node.resets == 1


def test_the_drivers_recovery_action_says_when_an_xid_needs_a_reset_and_when_it_had_one() -> None:
    machine = Machine([Gpu("GPU-a")])
    clock = Clock()
    backend, nvml = backend_of(machine, clock)
    node = Node(backend, clock)
    machine.xid(0, 95)
    machine.gpus[0].recovery_action = nvml.NVML_GPU_RECOVERY_ACTION_GPU_RESET
    assert node.look() == [Health.FAILED]
    assert node.look() == [Health.FAILED]
    nvml.reset(0)
    assert node.look() == [Health.HEALTHY]
    assert node.resets == 1


def test_an_xid_alone_on_a_driver_without_recovery_action_stays_failed_after_an_unseen_reset() -> None:
    """Nothing NVML says shows that reset: the GPU stays Failed (restart the agent; docs/runbooks.md)."""
    machine = Machine([Gpu("GPU-a", recovery_action=None)])
    clock = Clock()
    backend, nvml = backend_of(machine, clock)
    node = Node(backend, clock)
    machine.xid(0, 74)
    assert node.look() == [Health.FAILED]
    nvml.reset(0)
    assert node.look() == [Health.FAILED]
    assert node.resets == 0


def test_a_driver_unloaded_under_the_agent_fails_every_gpu_until_it_is_loaded_again() -> None:
    machine = Machine([Gpu("GPU-a"), Gpu("GPU-b")])
    clock = Clock()
    backend, _ = backend_of(machine, clock)
    node = Node(backend, clock)
    machine.xid(1, 74)
    assert node.look() == [Health.HEALTHY, Health.FAILED]
    machine.driver = False  # the operator reloads the driver: NVML let go, so it could be unloaded
    assert node.look() == [Health.FAILED, Health.FAILED]
    assert "DriverNotLoaded" in node.verdicts[0].reason
    machine.driver = True  # loaded again: every GPU initialised afresh
    assert node.look() == [Health.HEALTHY, Health.HEALTHY]
    assert node.resets == 2


def test_without_nvml_on_this_host_the_backend_says_so_and_what_to_do() -> None:
    """The real pynvml, on this host without the NVIDIA driver or its library."""
    with pytest.raises(NvmlUnavailable) as missing:
        NvmlBackend()
    message = str(missing.value)
    assert "NVML is not available on this host (nvmlInit: NVML Shared Library Not Found)" in message
    assert "--backend simulated" in message


def test_no_driver_or_a_gpu_lost_at_start_is_refused_with_the_reason() -> None:
    with pytest.raises(NvmlUnavailable, match="nvmlInit: Driver Not Loaded"):
        backend_of(Machine([Gpu("GPU-a")], driver=False))
    with pytest.raises(NvmlUnavailable, match=r"GPU 1 of this host \(NVMLError_GpuIsLost"):
        backend_of(Machine([Gpu("GPU-a"), Gpu("GPU-b", lost=True)]))
