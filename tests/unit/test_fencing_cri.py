"""Fencing a real node: the real crictl (cri-tools, built from its Go module) against a real CRI endpoint,
Kubernetes' own fake CRI runtime (``k8s.io/cri-client/pkg/fake``, hack/kube/cmd/fake-cri) on a unix socket.

Sandboxes are started with ``crictl runp``, with and without the label ``gigafab.nl/workload``; a fence
must stop exactly the labelled ones (``crictl pods`` shows them NotReady). A runtime that is gone (its
socket moved away) makes a stop fail: the agent goes on, counts it, withholds its watchdog's pet and
stops the work once the runtime is back, in process and as a real ``gigafab agent`` process.
The last test keeps a stand-in crictl, for what the fake runtime cannot do (answer garbage).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from gigafab.agents.cri import CriError, CriRuntime
from gigafab.agents.fencing import STOP_WITHIN, Fence
from gigafab.agents.keeper import FenceKeeper
from gigafab.agents.watchdog import SimulatedWatchdog, pet_path
from prometheus_client.parser import text_string_to_metric_families

from gigafab.local.layout import Layout
from gigafab.local.pki import Authority, node_identity
from gigafab.local.toolchain import ensure_crictl, ensure_fake_cri
from tests.unit.test_fencing import SITE, agent_of, gateway_on_loopback, pki, until

__all__ = ["pki"]  # the fixture, shared with test_fencing

READY, NOT_READY = "SANDBOX_READY", "SANDBOX_NOTREADY"
GIGAFAB = {"gigafab.nl/workload": "cohort", "gigafab.nl/epoch": "1"}


@pytest.fixture(scope="session")
def crictl() -> Path:
    return ensure_crictl(Layout.default())


@pytest.fixture(scope="session")
def fake_cri() -> Path:
    return ensure_fake_cri(Layout.default())


class Cri:
    """A fake CRI runtime on a unix socket, driven with the real crictl."""

    def __init__(self, crictl: Path, folder: Path) -> None:
        self.crictl, self.folder = crictl, folder
        self.socket = folder / "cri.sock"
        self.endpoint = f"unix://{self.socket}"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.crictl), f"--runtime-endpoint={self.endpoint}", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)

    def runp(self, name: str, labels: dict[str, str]) -> str:
        """Start a pod sandbox as the kubelet would; its ID."""
        config = self.folder / f"{name}.json"
        metadata = {"name": name, "namespace": "tenant-a", "uid": f"uid-{name}", "attempt": 0}
        config.write_text(json.dumps({"metadata": metadata, "labels": labels}))
        started = self.run("runp", str(config))
        assert started.returncode == 0, started.stderr
        return started.stdout.strip()

    def states(self) -> dict[str, str]:
        listed = self.run("pods", "--output=json")
        assert listed.returncode == 0, listed.stderr
        return {item["metadata"]["name"]: item["state"] for item in json.loads(listed.stdout)["items"]}

    @contextmanager
    def gone(self) -> Iterator[None]:
        """The runtime cannot be reached (its socket moved away), then is back with its sandboxes."""
        away = self.folder / "away.sock"
        self.socket.rename(away)
        try:
            yield
        finally:
            away.rename(self.socket)


@pytest.fixture
def cri(crictl: Path, fake_cri: Path) -> Iterator[Cri]:
    folder = Path(tempfile.mkdtemp(prefix="cri-"))  # a unix socket's path must stay short
    runtime = Cri(crictl, folder)
    process = subprocess.Popen([str(fake_cri), runtime.endpoint], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("serving")
        yield runtime
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def test_the_real_crictl_refuses_a_label_without_a_value_which_is_why_fencing_filters_by_itself(cri: Cri) -> None:
    refused = cri.run("pods", "--label", "gigafab.nl/workload")
    assert refused.returncode == 1
    assert "incorrectly specified label" in refused.stderr


def test_fencing_stops_exactly_the_ready_gigafab_sandboxes_through_the_real_crictl(
    cri: Cri, crictl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTAINER_RUNTIME_ENDPOINT", cri.endpoint)  # as the chart tells crictl where the runtime is
    cri.runp("cohort-0", GIGAFAB)
    cri.runp("ledger-0", {"gigafab.nl/workload": "ledger"})
    cri.runp("web", {"app": "web"})
    runtime = CriRuntime(str(crictl))
    runtime.fence("no gateway for 30 s")
    assert cri.states() == {"cohort-0": NOT_READY, "ledger-0": NOT_READY, "web": READY}
    cri.runp("cohort-1", GIGAFAB)  # the kubelet, cut off too, starts the work again
    runtime.fence("no gateway for 30 s")
    assert cri.states() == {"cohort-0": NOT_READY, "ledger-0": NOT_READY, "web": READY, "cohort-1": NOT_READY}
    assert sorted(runtime.stopped) == sorted(f"{name}_tenant-a_uid-{name}_0" for name in ("cohort-0", "ledger-0", "cohort-1"))


def test_a_stop_without_a_runtime_fails_with_what_crictl_said_and_works_once_it_is_back(
    cri: Cri, crictl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTAINER_RUNTIME_ENDPOINT", cri.endpoint)
    cri.runp("cohort-0", GIGAFAB)
    runtime = CriRuntime(str(crictl))
    with cri.gone(), pytest.raises(CriError, match=r"crictl pods --state=ready --output=json failed \(exit 1\): .*cri.sock"):
        runtime.fence("no gateway")
    runtime.fence("no gateway")
    assert cri.states() == {"cohort-0": NOT_READY}


def test_an_agent_ordered_to_fence_while_its_runtime_is_gone_lives_on_counts_it_withholds_its_pet_and_fences_once_back(
    cri: Cri, crictl: Path, pki: Authority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTAINER_RUNTIME_ENDPOINT", cri.endpoint)
    node = "eemshaven-gpu-010"
    cri.runp("cohort-0", GIGAFAB)

    async def main() -> None:
        async with gateway_on_loopback(pki) as (gateway, port):
            keeper = FenceKeeper(node, Fence(30.0), CriRuntime(str(crictl)), SimulatedWatchdog(tmp_path, node))
            agent = agent_of(pki, node, port, keeper)
            running = asyncio.create_task(agent.run())
            assert await until(lambda: agent.connected, 10)
            with cri.gone():
                gateway.fence_reason = "gateway of eemshaven has had no contact with etcd for 28.5 s"
                ordered_at = time.time()
                assert await until(lambda: keeper.metrics.failures[node, "stop"] >= 3, 15), "counted, and tried again"
                assert not running.done(), "the agent lives on"
                assert agent.connected, "and keeps its stream"
                assert keeper.metrics.watchdog[node] == 0, "the pet is withheld"
                expires = json.loads(pet_path(tmp_path, node).read_text())["expires"]
                assert expires <= ordered_at + STOP_WITHIN + 0.5, "the watchdog stops the node a second after the order"
            assert await until(lambda: cri.states() == {"cohort-0": NOT_READY}, 10), "stopped once the runtime is back"
            assert await until(lambda: keeper.metrics.watchdog[node] == STOP_WITHIN, 5), "and petted again"
            gateway.fence_reason = None
            assert await until(lambda: not keeper.metrics.fenced[node], 10)
            running.cancel()

    asyncio.run(main())


def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_gigafab_agent_process_whose_runtime_fails_on_a_fence_order_lives_on_and_serves_the_failures_as_metrics(
    cri: Cri, crictl: Path, pki: Authority, tmp_path: Path
) -> None:
    node = "eemshaven-gpu-011"
    pki.issue_client(node_identity(node, SITE))
    cri.runp("cohort-0", GIGAFAB)
    port = free_port()
    failures = ("gigafab_agent_fence_failures_total", (("node", node), ("stage", "stop")))
    fenced = ("gigafab_agent_fenced", (("node", node),))

    async def main() -> None:
        async with gateway_on_loopback(pki) as (gateway, gateway_port):
            agent = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "gigafab", "agent", f"--site={SITE}", f"--node={node}"),
                *(f"--gateway=127.0.0.1:{gateway_port}", f"--pki={pki.directory}", "--runtime=cri", f"--crictl={crictl}"),
                *(f"--state-dir={tmp_path}", "--watchdog=none", f"--metrics-address=127.0.0.1:{port}", "--fence-after=30"),
                env={**os.environ, "CONTAINER_RUNTIME_ENDPOINT": cri.endpoint},
            )
            try:
                assert await until(lambda: node in gateway.ledger.nodes, 20), "connected"
                with cri.gone():
                    gateway.fence_reason = "gateway of eemshaven has had no contact with etcd for 28.5 s"
                    assert await until(lambda: metrics(port).get(failures, 0) >= 2, 20)
                    assert agent.returncode is None, "the agent lives on"
                    assert metrics(port)[fenced] == 1
                assert await until(lambda: cri.states() == {"cohort-0": NOT_READY}, 10)
            finally:
                agent.terminate()
                assert await agent.wait() == 0, "a clean stop"
        record = json.loads((tmp_path / f"fence-{node}.json").read_text())
        assert record["fenced"] is True, "its fence is kept on the host for the next agent"

    asyncio.run(main())


class GarbledCrictl:
    """Stands in for crictl where the fake runtime cannot go: an answer that is not crictl's JSON."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, command: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(command))
        return subprocess.CompletedProcess(command, 0, "Segmentation fault\n", "")


def test_an_answer_that_is_not_crictls_json_is_a_failed_stop_that_says_what_came_back() -> None:
    runtime = CriRuntime("crictl", GarbledCrictl())
    with pytest.raises(CriError, match=r"crictl pods answered what is not its JSON .*Segmentation fault"):
        runtime.fence("no gateway")
