"""The watchdog that stops a node when its agent cannot, and the fence that outlives the agent.

Real processes: a ``gigafab agent`` and the simulated watchdog (``gigafab watchdog``), with a real
gateway on loopback. A killed (SIGKILL) or frozen (SIGSTOP) agent's node is stopped by the watchdog
before the operator would start its work elsewhere; an agent restarted without a gateway starts
fenced, or counts its lost contact on from the record. The Linux watchdog itself cannot run here
(this kernel has the watchdog core but no driver, and no modules to load): its ioctl number is
checked against the kernel's own header, and its use of the device against a stand-in.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from gigafab.agents.fencing import OPERATOR_MARGIN, STOP_WITHIN
from gigafab.agents.record import FenceRecord, load, record_path, save
from gigafab.agents.watchdog import (
    EXPIRED_REASON,
    MAGIC_CLOSE,
    WDIOC_SETTIMEOUT,
    LinuxWatchdog,
    SimulatedWatchdog,
    WatchdogError,
    expired_path,
    look,
    pet_path,
)

from gigafab.local.pki import Authority, node_identity
from tests.unit.test_fencing import SITE, gateway_on_loopback, pki, until

__all__ = ["pki"]

FENCE_AFTER = 4.0


def test_the_ioctl_number_is_that_of_the_kernels_header(tmp_path: Path) -> None:
    source = tmp_path / "numbers.c"
    source.write_text(
        '#include <stdio.h>\n#include <linux/watchdog.h>\nint main(void) { printf("%lu\\n", (unsigned long)WDIOC_SETTIMEOUT); }\n'
    )
    subprocess.run(["cc", "-o", str(tmp_path / "numbers"), str(source)], check=True)
    printed = subprocess.run([str(tmp_path / "numbers")], capture_output=True, text=True, check=True).stdout.split()
    assert [int(number) for number in printed] == [WDIOC_SETTIMEOUT]


class Device:
    """Stands in for /dev/watchdog (no driver here): the fd is a file, the ioctls are recorded."""

    def __init__(self, path: Path, grants: dict[int, int] | None = None) -> None:
        self.path, self.grants = path, grants or {}
        self.timeouts: list[int] = []

    def open(self, _: Path) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def ioctl(self, fd: int, request: int, argument: bytes) -> bytes:
        assert request == WDIOC_SETTIMEOUT
        (asked,) = struct.unpack("i", argument)
        self.timeouts.append(asked)
        return struct.pack("i", self.grants.get(asked, asked))


def test_the_linux_watchdog_checks_the_device_takes_one_second_sets_timeouts_as_asked_and_disarms_only_when_told(
    tmp_path: Path,
) -> None:
    device = Device(tmp_path / "watchdog")
    watchdog = LinuxWatchdog(Path("/dev/watchdog"), 15, device.ioctl, device.open)
    assert device.timeouts == [1, 15], "armed: a fenced node's one second is checked at once"
    assert watchdog.pet(15.0)
    assert device.path.read_bytes() == b"\0", "the same timeout: a write pets it"
    assert watchdog.pet(6.7)
    assert device.timeouts[-1] == 6, "a shorter one: rounded down, never up"
    assert not watchdog.pet(0.9), "under a second: no pet, the last one stands"
    assert device.timeouts == [1, 15, 6]
    watchdog.close(disarm=False)
    assert not device.path.read_bytes().endswith(MAGIC_CLOSE), "closed without V: still armed"
    LinuxWatchdog(Path("/dev/watchdog"), 15, device.ioctl, device.open).close(disarm=True)
    assert device.path.read_bytes().endswith(MAGIC_CLOSE)


def test_a_missing_watchdog_or_one_that_cannot_take_a_second_is_refused_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(WatchdogError, match=r"no watchdog at .*nothing: load softdog \(`modprobe softdog`\)"):
        LinuxWatchdog(tmp_path / "nothing", 15)
    coarse = Device(tmp_path / "watchdog", grants={1: 2})
    with pytest.raises(WatchdogError, match="took a timeout of 2 s when asked for 1 s"):
        LinuxWatchdog(Path("/dev/watchdog"), 15, coarse.ioctl, coarse.open)
    assert coarse.path.read_bytes().endswith(MAGIC_CLOSE), "refused, and left disarmed"


def test_the_simulated_watchdog_records_one_fence_when_a_pet_runs_out_marks_the_record_and_tells_the_agent(
    tmp_path: Path,
) -> None:
    log = tmp_path / "fences.jsonl"
    save(record_path(tmp_path, "n1"), FenceRecord("n1", fenced=False, contact_at=50.0))
    watchdog = SimulatedWatchdog(tmp_path, "n1", clock=lambda: 100.0)
    assert watchdog.pet(2.0)
    assert look(tmp_path, log, now=102.0) == [], "not yet"
    assert look(tmp_path, log, now=102.1) == ["n1"]
    assert look(tmp_path, log, now=110.0) == [], "once"
    assert [json.loads(line) for line in log.read_text().splitlines()] == [
        {"node": "n1", "event": "fenced", "at": 102.1, "reason": EXPIRED_REASON}
    ]
    assert load(record_path(tmp_path, "n1"), "n1") == FenceRecord("n1", True, EXPIRED_REASON, 50.0), "as after a reboot"
    assert watchdog.reset()
    assert not watchdog.reset(), "the agent hears of it once"
    watchdog.pet(2.0)
    watchdog.close(disarm=True)
    assert look(tmp_path, log, now=200.0) == [], "disarmed: nothing runs out"
    assert not pet_path(tmp_path, "n1").exists()
    assert not expired_path(tmp_path, "n1").exists()


# -- real processes ------------------------------------------------------------------------------


def gigafab(*args: str) -> list[str]:
    return [sys.executable, "-m", "gigafab", *args]


@asynccontextmanager
async def simulated_watchdog(state: Path) -> AsyncIterator[Path]:
    """``gigafab watchdog`` over ``state``; yields the fence log."""
    log = state / "fences.jsonl"
    process = await asyncio.create_subprocess_exec(*gigafab("watchdog", f"--state-dir={state}", f"--fence-log={log}"))
    try:
        yield log
    finally:
        process.terminate()
        await process.wait()


async def start_agent(pki: Authority, node: str, state: Path, gateway_port: int, *extra: str) -> asyncio.subprocess.Process:
    pki.issue_client(node_identity(node, SITE))
    return await asyncio.create_subprocess_exec(
        *gigafab("agent", f"--site={SITE}", f"--node={node}", f"--gateway=127.0.0.1:{gateway_port}", f"--pki={pki.directory}"),
        *(f"--state-dir={state}", f"--fence-log={state / 'fences.jsonl'}", f"--fence-after={FENCE_AFTER:g}", "--interval=1"),
        *extra,
    )


def fences(log: Path, node: str, reason: str | None = None) -> list[dict[str, object]]:
    entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [e for e in entries if e["node"] == node and e["event"] == "fenced" and reason in (None, e["reason"])]


def in_contact(state: Path, node: str) -> bool:
    record = load(record_path(state, node), node)
    return record is not None and not record.fenced and record.contact_at is not None


async def killed_or_frozen(pki: Authority, state: Path, node: str, sig: signal.Signals) -> None:
    async with gateway_on_loopback(pki, clock=time.time) as (gateway, port), simulated_watchdog(state) as log:
        agent = await start_agent(pki, node, state, port, "--watchdog=simulated")
        try:
            assert await until(lambda: in_contact(state, node), 20), "connected, its start-up fence lifted"
            await asyncio.sleep(2 * STOP_WITHIN)  # a steady state: pets hold for the whole watchdog timeout
            agent.send_signal(sig)
            assert await until(lambda: fences(log, node, EXPIRED_REASON), 10), "the watchdog stopped the node"
            stopped = float(str(fences(log, node, EXPIRED_REASON)[0]["at"]))
            deadline = gateway.ledger.nodes[node].seen + FENCE_AFTER + OPERATOR_MARGIN
            assert stopped < deadline, "before the operator would move the node's work"
            record = load(record_path(state, node), node)
            assert record is not None
            assert (record.fenced, record.reason) == (True, EXPIRED_REASON)
            if sig is signal.SIGSTOP:
                agent.send_signal(signal.SIGCONT)
                assert await until(lambda: fences(log, node, "the watchdog stopped the node"), 10), "back, fenced"
                assert await until(lambda: in_contact(state, node), 10), "and lifted by its gateway"
        finally:
            if agent.returncode is None:
                agent.kill()
            await agent.wait()


def test_the_watchdog_stops_the_node_of_a_killed_agent_before_the_operator_would_move_its_work(
    pki: Authority, tmp_path: Path
) -> None:
    asyncio.run(killed_or_frozen(pki, tmp_path, "eemshaven-gpu-020", signal.SIGKILL))


def test_the_watchdog_stops_the_node_of_a_frozen_agent_which_comes_back_fenced_until_its_gateway_lifts_it(
    pki: Authority, tmp_path: Path
) -> None:
    asyncio.run(killed_or_frozen(pki, tmp_path, "eemshaven-gpu-021", signal.SIGSTOP))


def test_an_agent_restarted_without_a_gateway_starts_fenced_when_it_was_and_else_counts_from_its_last_contact(
    pki: Authority, tmp_path: Path
) -> None:
    fenced_node, contact_node = "eemshaven-gpu-022", "eemshaven-gpu-023"
    log = tmp_path / "fences.jsonl"

    async def main() -> None:
        async with gateway_on_loopback(pki) as (gateway, port):
            ordered = await start_agent(pki, fenced_node, tmp_path, port, "--watchdog=none")
            assert await until(lambda: in_contact(tmp_path, fenced_node), 20)
            gateway.fence_reason = "gateway of eemshaven has had no contact with etcd for 2.5 s"
            assert await until(lambda: fences(log, fenced_node, f"gateway: {gateway.fence_reason}"), 10)
            ordered.kill()
            await ordered.wait()
            gateway.fence_reason = None
            steady = await start_agent(pki, contact_node, tmp_path, port, "--watchdog=none")
            assert await until(lambda: in_contact(tmp_path, contact_node), 20)
            steady.kill()
            await steady.wait()
        killed_at = time.time()
        await asyncio.sleep(2.0)  # no gateway any more, and the agents come back
        started_at = time.time()
        restarted = [await start_agent(pki, node, tmp_path, port, "--watchdog=none") for node in (fenced_node, contact_node)]

        def since_restart(node: str) -> list[dict[str, object]]:
            return [entry for entry in fences(log, node) if float(str(entry["at"])) >= started_at]

        try:
            assert await until(lambda: since_restart(fenced_node), 5)
            again = since_restart(fenced_node)[0]
            assert str(again["reason"]).startswith("fenced before the agent started: gateway: ")
            assert float(str(again["at"])) - started_at < FENCE_AFTER / 2, "at once, not after fence_after"
            record = load(record_path(tmp_path, contact_node), contact_node)
            assert record is not None
            assert record.contact_at is not None
            assert await until(lambda: since_restart(contact_node), 10)
            fenced_at = float(str(since_restart(contact_node)[0]["at"]))
            assert fenced_at <= record.contact_at + FENCE_AFTER + 0.5, "counted from its last contact, not from its restart"
            assert record.contact_at <= killed_at
        finally:
            for agent in restarted:
                agent.terminate()
                await agent.wait()

    asyncio.run(main())
