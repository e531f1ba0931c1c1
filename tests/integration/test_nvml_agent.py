"""``gigafab agent --backend nvml`` as a real process: its reports come from NVML.

No GPU is lent here, so NVML is the stand-in ``pynvml`` (``tests/standins/pynvml.py``, first on the agent's
PYTHONPATH, over a machine the test describes and changes in a JSON file); the agent reports over gRPC with
mutual TLS to a real gateway on loopback. Without the stand-in, the real nvidia-ml-py finds no driver on this
host: the command says so and exits 1, as it would on a node without the NVIDIA driver.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from gigafab.agents.gateway import HealthGateway, serve
from gigafab.agents.ledger import Ledger, Transition
from gigafab.agents.nvml import RECHECK_SECONDS
from gigafab.agents.tls import GatewayTls

from gigafab.health.v1 import health_pb2
from gigafab.local.pki import Authority, node_identity
from tests.standins.pynvml import MACHINE_FILE, Gpu, Machine

SITE = "eemshaven"
NODE = "eemshaven-gpu-007"
STANDINS = Path(__file__).resolve().parents[1] / "standins"
GIGAFAB = Path(sys.executable).parent / "gigafab"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    """The health CA, and the node's certificate in the layout ``--pki`` reads: <node>.crt, <node>.key, ca.crt."""
    authority = Authority(tmp_path_factory.mktemp("pki"))
    authority.ensure()
    authority.issue_client(node_identity(NODE, SITE))
    return authority


def agent_command(*nodes: str, gateway: str = "127.0.0.1:9", pki: Path = Path("/nonexistent")) -> list[str]:
    node_flags = [flag for node in nodes for flag in ("--node", node)]
    return [str(GIGAFAB), "agent", "--site", SITE, *node_flags, "--gateway", gateway, "--pki", str(pki), "--backend", "nvml"]


def test_without_nvml_the_agent_exits_1_saying_so_and_what_to_do(pki: Authority) -> None:
    """The real nvidia-ml-py, on this host without the NVIDIA driver or its library."""
    done = subprocess.run(agent_command(NODE, pki=pki.directory), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    assert "NVML is not available on this host (nvmlInit: NVML Shared Library Not Found)" in done.stderr
    assert "--backend simulated" in done.stderr
    assert "Traceback" not in done.stderr


def test_nvml_with_several_nodes_is_bad_usage() -> None:
    done = subprocess.run(agent_command("n1", "n2"), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "give one --node, this node's name" in done.stderr


class Tap(HealthGateway):
    """The gateway, keeping every report it reads."""

    def __init__(self, ledger: Ledger, sink: Callable[[Sequence[Transition]], Any]) -> None:
        super().__init__(ledger, sink)
        self.received: list[health_pb2.ReportRequest] = []

    async def Report(
        self, request_iterator: AsyncIterator[health_pb2.ReportRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.ReportResponse]:
        async def kept() -> AsyncIterator[health_pb2.ReportRequest]:
            async for request in request_iterator:
                self.received.append(request)
                yield request

        async for answer in super().Report(kept(), context):
            yield answer


async def until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds:g} s: {what}"
        await asyncio.sleep(0.05)


def gpus(report: health_pb2.ReportRequest) -> list[tuple[str, str, str, str]]:
    return [(gpu.uuid, gpu.model, health_pb2.Health.Name(gpu.health), gpu.health_reason) for gpu in report.gpus]


def test_the_agent_reports_what_nvml_says_and_a_reset_gpu_recovers(pki: Authority, tmp_path: Path) -> None:
    machine = Machine([Gpu("GPU-5d1e0c1a-0000", "NVIDIA H200"), Gpu("GPU-5d1e0c1a-0001", "NVIDIA H200")])
    described = tmp_path / "machine.json"
    machine.save(described)
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(STANDINS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    environment[MACHINE_FILE] = str(described)

    async def record(transitions: Sequence[Transition]) -> None:
        return None

    async def main() -> None:
        gateway = Tap(Ledger(SITE), record)
        served = pki.issue_server("gateway", ("localhost", "127.0.0.1"))
        server, port = await serve(gateway, "127.0.0.1:0", GatewayTls(served.cert, served.key, pki.pair.cert))
        command = agent_command(NODE, gateway=f"127.0.0.1:{port}", pki=pki.directory)
        log = (tmp_path / "agent.log").open("wb")
        agent = await asyncio.create_subprocess_exec(
            *command, "--runtime", "simulated", "--interval", "0.2", env=environment, stderr=log
        )
        try:
            await until(lambda: bool(gateway.received) or agent.returncode is not None, 30, "a first report")
            assert agent.returncode is None, f"the agent exited: {(tmp_path / 'agent.log').read_text()[-2000:]}"
            assert gpus(gateway.received[-1]) == [
                ("GPU-5d1e0c1a-0000", "NVIDIA H200", "HEALTH_HEALTHY", ""),
                ("GPU-5d1e0c1a-0001", "NVIDIA H200", "HEALTH_HEALTHY", ""),
            ]
            machine.xid(1, 48)  # a double-bit ECC error on the second GPU
            machine.gpus[1].ecc_uncorrected = 1
            machine.save(described)
            await until(lambda: gpus(gateway.received[-1])[1][2] == "HEALTH_FAILED", 10, "GPU 1 Failed")
            assert gpus(gateway.received[-1])[1][3] == "XID 48"
            assert gateway.ledger.nodes[NODE].health == "Failed"
            machine.gpus[1].ecc_uncorrected = 0  # the operator resets it: the volatile count starts again
            machine.save(described)
            await until(lambda: gpus(gateway.received[-1])[1][2] == "HEALTH_HEALTHY", RECHECK_SECONDS + 10, "GPU 1 reset")
            assert gateway.ledger.nodes[NODE].health == "Healthy"
        finally:
            if agent.returncode is None:
                agent.terminate()
            await agent.wait()
            log.close()
            await server.stop(None)

    asyncio.run(main())
