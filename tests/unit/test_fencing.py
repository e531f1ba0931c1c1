"""Fencing: when a node stops its gigafab work by itself, how long its watchdog may wait, and what
survives a restart (``Fence``, ``record``), and the simulated runtime.

The last tests run a real agent against a real gateway over gRPC/mTLS on loopback.
``test_fencing_cri.py`` runs the CRI runtime with the real crictl, ``test_watchdog.py`` real agent
processes with the simulated watchdog.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from gigafab.agents.agent import Agent
from gigafab.agents.fencing import (
    OPERATOR_MARGIN,
    STOP_WITHIN,
    TICK,
    Fence,
    SimulatedRuntime,
    Start,
    Step,
    check_watchdog_timeout,
    watchdog_seconds,
)
from gigafab.agents.gateway import HealthGateway, serve
from gigafab.agents.keeper import FenceKeeper
from gigafab.agents.ledger import Ledger
from gigafab.agents.record import FenceRecord, RecordError, load, save, start_of
from gigafab.agents.simulated import Fault, SimulatedBackend
from gigafab.agents.tls import AgentTls, GatewayTls
from gigafab.agents.watchdog import SimulatedWatchdog, Watchdog, pet_path
from gigafab.operator.site_contact import FENCE_MARGIN

from gigafab.local.pki import Authority, node_identity

SITE = "eemshaven"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_node_fences_when_contact_has_been_lost_for_fence_after_counting_the_blind_time() -> None:
    clock = Clock()
    fence = Fence(fence_after=4.0, clock=clock)
    fence.connected()
    clock.now = 200.0
    assert fence.step().stop is None, "a live stream never fences"
    fence.disconnected()  # noticed at 200: the stream may have been dead since 198
    clock.now = 201.9
    assert fence.step().stop is None
    clock.now = 202.0
    assert fence.step().stop == "no gateway for 4 s", "fenced 4 s after the last moment the stream was known alive"
    clock.now = 202.25
    assert fence.step().stop == "no gateway for 4 s", "and kept stopped at every step"
    clock.now = 205.0
    fence.connected()
    step = fence.step()
    assert (step.stop, step.lift) == (None, True)
    assert not fence.step().lift, "lifted once"


def test_a_new_agent_that_never_reaches_a_gateway_fences_and_a_gateway_order_fences_at_once() -> None:
    clock = Clock()
    lonely = Fence(fence_after=4.0, clock=clock)
    clock.now += 3.9
    assert lonely.step().stop is None
    clock.now += 0.1
    assert lonely.step().stop == "no gateway for 4 s"
    ordered = Fence(fence_after=4.0, clock=clock)
    ordered.connected()
    ordered.ordered("gateway lost etcd")
    assert ordered.step().stop == "gateway lost etcd"


def test_the_simulated_runtime_appends_its_fences_to_a_json_lines_log(tmp_path: Path) -> None:
    log = tmp_path / "fences.jsonl"
    clock = Clock()
    runtime = SimulatedRuntime("n1", log, clock)
    runtime.fence("no gateway")
    runtime.fence("still fenced")  # idempotent while fenced
    runtime.lift()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines == [
        {"node": "n1", "event": "fenced", "at": 100.0, "reason": "no gateway"},
        {"node": "n1", "event": "lifted", "at": 100.0, "reason": ""},
    ]


# -- the watchdog's pets -------------------------------------------------------------------------


def test_a_connected_node_pets_its_watchdog_for_half_of_fence_after() -> None:
    fence = Fence(fence_after=30.0, clock=Clock())
    fence.connected()
    assert fence.step().pet == 15


def test_out_of_contact_the_pets_shrink_so_the_watchdog_runs_out_when_the_fence_falls_due_and_the_stop_had_its_second() -> None:
    clock = Clock()
    fence = Fence(fence_after=30.0, clock=clock)
    fence.connected()
    fence.disconnected()  # the stream may have been dead since 100 - 15 = 85: due at 115
    assert fence.step().pet == 15
    clock.now = 110.0
    assert fence.step().pet == pytest.approx(6.0), "a pet now holds until the fence is due, plus the second to stop"
    clock.now = 114.9
    assert fence.step().pet == pytest.approx(1.1)
    clock.now = 115.1
    step = fence.step()
    assert step.stop is not None
    assert step.pet == STOP_WITHIN, "due now: the work has one second to stop"


def test_a_stop_that_fails_withholds_the_pet_until_one_succeeds_and_a_stopped_node_pets_for_a_second() -> None:
    clock = Clock()
    fence = Fence(fence_after=4.0, clock=clock)
    fence.connected()
    assert fence.step().pet == 2
    fence.ordered("gateway lost etcd")
    clock.now += 0.01
    assert fence.step().pet == STOP_WITHIN, "the gateway's order: one second from when the agent takes it"
    fence.stopped(False)
    clock.now += TICK
    step = fence.step()
    assert (step.stop, step.pet) == ("gateway lost etcd", None), "tries again, but promises nothing"
    fence.stopped(True)
    clock.now += TICK
    assert fence.step().pet == STOP_WITHIN, "stopped: a dead agent's node must stop before the kubelet restarts the work"
    clock.now += 60
    fence.connected()
    assert fence.step().pet == 2


def test_a_first_stop_that_has_not_answered_lets_the_pet_run_out_one_second_after_the_fence_fell_due() -> None:
    clock = Clock()
    fence = Fence(fence_after=4.0, clock=clock, start=Start(fenced=True, reason="fenced before"))
    assert fence.step().pet == STOP_WITHIN
    clock.now += 0.6
    assert fence.step().pet == pytest.approx(0.4)
    clock.now += 0.5
    assert fence.step().pet is None


def test_the_watchdog_reset_the_node_so_the_agent_fences_again_and_stops_what_the_kubelet_restarted() -> None:
    clock = Clock()
    fence = Fence(fence_after=4.0, clock=clock)
    fence.connected()
    fence.reset("the watchdog stopped the node")
    step = fence.step()
    assert (step.stop, step.pet) == ("the watchdog stopped the node", STOP_WITHIN)
    fence.stopped(False)
    clock.now += 5
    fence.reset("the watchdog stopped the node again")
    assert fence.step() == Step("the watchdog stopped the node again", False, STOP_WITHIN), "a new second to stop"
    restarted = Fence(fence_after=4.0, clock=clock, start=Start(fenced=True, reason="fenced before the agent started"))
    restarted.reset("the watchdog stopped the node")
    assert restarted.step().stop == "fenced before the agent started", "one fence, told once"


@pytest.mark.parametrize(("fence_after", "interval"), [(4.0, 1.0), (30.0, 1.0), (10.0, 2.0), (2.0, 0.5)])
def test_the_default_watchdog_timeout_stops_a_dead_agents_node_before_the_operator_moves_its_work(
    fence_after: float, interval: float
) -> None:
    assert check_watchdog_timeout(watchdog_seconds(fence_after), fence_after, interval) is None


def test_a_watchdog_timeout_that_would_stop_the_node_too_late_is_refused_with_what_to_change() -> None:
    why = check_watchdog_timeout(5, fence_after=4.0, interval=1.0)
    assert why is not None
    assert "shorten --watchdog-timeout or --interval" in why
    assert check_watchdog_timeout(0.5, fence_after=4.0, interval=1.0) is not None


def test_the_agent_fits_its_promises_in_the_operators_margin() -> None:
    assert OPERATOR_MARGIN == FENCE_MARGIN
    assert STOP_WITHIN + TICK < OPERATOR_MARGIN, "a node whose stop fails is stopped by its watchdog within the margin"


# -- the record on the host ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "fenced", "lost_for"),
    [
        (None, True, 0.0),
        (FenceRecord("n1", fenced=True, reason="watchdog expired", contact_at=990.0), True, 0.0),
        (FenceRecord("n1", fenced=False, contact_at=None), True, 0.0),
        (FenceRecord("n1", fenced=False, contact_at=1000.0 - 30.0), True, 0.0),
        (FenceRecord("n1", fenced=False, contact_at=1000.0 + 5.0), True, 0.0),
        (FenceRecord("n1", fenced=False, contact_at=1000.0 - 12.5), False, 12.5),
    ],
    ids=["no record", "fenced", "never in contact", "contact too old", "contact in the future", "recent contact"],
)
def test_an_agent_starts_from_its_nodes_record(record: FenceRecord | None, fenced: bool, lost_for: float) -> None:
    start = start_of(record, now=1000.0, fence_after=30.0)
    assert (start.fenced, start.lost_for) == (fenced, lost_for)
    if fenced:
        assert start.reason


def test_a_restarted_agent_counts_its_lost_contact_on_from_the_record() -> None:
    clock = Clock()
    fence = Fence(fence_after=30.0, clock=clock, start=start_of(FenceRecord("n1", False, contact_at=975.0), 1000.0, 30.0))
    clock.now += 4.9
    assert fence.step().stop is None
    clock.now += 0.1
    assert fence.step().stop == "no gateway for 30 s", "30 s after the recorded contact, not after the restart"


def test_the_record_is_replaced_whole_and_an_unreadable_one_is_kept_aside_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "fence-n1.json"
    save(path, FenceRecord("n1", fenced=True, reason="gateway lost etcd", contact_at=12.5))
    assert load(path, "n1") == FenceRecord("n1", fenced=True, reason="gateway lost etcd", contact_at=12.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fence-n1.json"], "no temporary file left behind"
    path.write_text('{"fenced": tru')
    with pytest.raises(RecordError, match=r"fence-n1.json is unreadable .*; kept as .*fence-n1.json.unreadable"):
        load(path, "n1")
    assert (tmp_path / "fence-n1.json.unreadable").read_text() == '{"fenced": tru'
    assert load(path, "n1") is None


def test_a_record_that_cannot_be_written_is_counted_and_holds_up_neither_the_pets_nor_the_fence(tmp_path: Path) -> None:
    """The keeper's loop on its own (no gateway: contact is told by hand), with the simulated watchdog."""
    gone = tmp_path / "gone"
    gone.mkdir()

    async def main() -> None:
        runtime = SimulatedRuntime("n1")
        keeper = FenceKeeper("n1", Fence(4.0), runtime, SimulatedWatchdog(tmp_path, "n1"), gone / "fence-n1.json")
        keeper.connected()
        gone.rmdir()  # the host's folder went away
        running = asyncio.create_task(keeper.run())
        assert await until(lambda: keeper.metrics.failures["n1", "record"] >= 2, 5), "counted, and tried again"
        before = json.loads(pet_path(tmp_path, "n1").read_text())["expires"]
        assert await until(lambda: json.loads(pet_path(tmp_path, "n1").read_text())["expires"] > before, 2), "still petted"
        keeper.ordered("gateway lost etcd")
        assert await until(lambda: runtime.fenced_at is not None, 2), "and the fence goes on"
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        assert pet_path(tmp_path, "n1").exists(), "stopped while fenced: the watchdog is left armed"

    asyncio.run(main())


# -- a real agent and gateway --------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    authority = Authority(tmp_path_factory.mktemp("pki"))
    authority.ensure()
    return authority


async def until(predicate: Callable[[], object], seconds: float) -> bool:
    for _ in range(int(seconds * 20)):
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return False


@asynccontextmanager
async def gateway_on_loopback(
    pki: Authority, clock: Callable[[], float] = time.monotonic
) -> AsyncIterator[tuple[HealthGateway, int]]:
    """A real gateway on loopback (``clock``: its ledger's, e.g. the wall clock to compare with fence logs)."""

    async def record(transitions: object) -> bool:
        return True

    gateway = HealthGateway(Ledger(SITE), record, clock=clock)
    served = pki.issue_server("gateway", ("localhost", "127.0.0.1"))
    server, port = await serve(gateway, "127.0.0.1:0", GatewayTls(served.cert, served.key, pki.pair.cert))
    try:
        yield gateway, port
    finally:
        await server.stop(None)


def agent_of(pki: Authority, node: str, port: int, keeper: FenceKeeper) -> Agent:
    pair = pki.issue_client(node_identity(node, SITE))
    tls = AgentTls(pair.cert, pair.key, pki.pair.cert)
    return Agent(node, SITE, SimulatedBackend(node, 2), [f"127.0.0.1:{port}"], tls, 0.2, keeper)


@asynccontextmanager
async def connected_agent(
    pki: Authority, node: str, fence_after: float, watchdog: Watchdog | None = None
) -> AsyncIterator[tuple[HealthGateway, Agent, SimulatedRuntime]]:
    """A real gateway on loopback and a fencing agent streaming to it."""
    async with gateway_on_loopback(pki) as (gateway, port):
        runtime = SimulatedRuntime(node)
        agent = agent_of(pki, node, port, FenceKeeper(node, Fence(fence_after), runtime, watchdog))
        running = asyncio.create_task(agent.run())
        try:
            assert await until(lambda: agent.connected, 10)
            yield gateway, agent, runtime
        finally:
            running.cancel()


def test_an_agent_fences_on_its_gateways_order_and_is_lifted_when_the_gateway_has_contact_again(pki: Authority) -> None:
    async def main() -> None:
        async with connected_agent(pki, "eemshaven-gpu-000", fence_after=30.0) as (gateway, _, runtime):
            gateway.fence_reason = "gateway of eemshaven has had no contact with etcd for 3.0 s"
            assert await until(lambda: runtime.fenced_at is not None, 5), "the next report is answered with Fence"
            assert "no contact with etcd" in str(runtime.events[0]["reason"])
            gateway.fence_reason = None
            assert await until(lambda: runtime.fenced_at is None, 5), "an acknowledgement lifts the fence"

    asyncio.run(main())


def test_an_agent_whose_gateway_is_gone_fences_after_fence_after(pki: Authority) -> None:
    async def main() -> None:
        async with connected_agent(pki, "eemshaven-gpu-001", fence_after=2.0) as (_, agent, runtime):
            await asyncio.sleep(3.0)
            assert runtime.fenced_at is None, "connected: no fence however long"
            backend = agent.backend
            assert isinstance(backend, SimulatedBackend)
            backend.inject(Fault.SILENT)  # the node's link goes down
            assert await until(lambda: runtime.fenced_at is not None, 5)
            backend.inject(Fault.RESET)
            assert await until(lambda: runtime.fenced_at is None, 10), "reconnected and acknowledged: lifted"

    asyncio.run(main())


# -- the agent's flags ---------------------------------------------------------------------------


AGENT = ["agent", f"--site={SITE}", "--node=n1", "--gateway=127.0.0.1:1", "--pki=/nonexistent"]


@pytest.mark.parametrize(
    ("flags", "code", "said"),
    [
        (["--runtime=cri"], 2, "a real node's fence must outlive its agent: give --state-dir"),
        (["--watchdog=simulated"], 2, "--watchdog simulated keeps its pets in --state-dir: give one"),
        (["--watchdog=softdog"], 2, "--watchdog takes a device (e.g. /dev/watchdog), simulated or none, not 'softdog'"),
        (["--watchdog=/dev/watchdog", "--node=n2"], 2, "a node has one watchdog (/dev/watchdog): run one agent"),
        (["--watchdog=/dev/watchdog", "--watchdog-timeout=5", "--fence-after=4"], 2, "shorten --watchdog-timeout"),
        (["--runtime=cri", "--state-dir={tmp}", "--watchdog={tmp}/no-watchdog"], 1, "load softdog (`modprobe softdog`)"),
    ],
    ids=["cri without a state dir", "simulated without a state dir", "not a device", "two nodes", "too late", "no device"],
)
def test_fence_flags_that_cannot_keep_the_promise_are_refused_before_anything_starts(
    flags: list[str], code: int, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gigafab.cli import main

    assert main([*AGENT, *(flag.format(tmp=tmp_path) for flag in flags)]) == code
    error = capsys.readouterr().err
    assert error.startswith("gigafab agent: ")
    assert said in error
