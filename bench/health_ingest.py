"""Health ingest benchmark: N simulated agents on real gRPC/mTLS streams at 1 Hz
against one gateway process (with a real etcd), from separate load-generator processes.

    python bench/health_ingest.py --agents 10000 --seconds 60

Every agent has its own certificate, connection and stream, and reports every second
(at a random phase). Prints sustained reports/s, p50/p99 from a report's send time to
its state in the gateway's ledger, and the gateway's CPU (cores) and RSS over the
steady window. Runs on its own ports; leaves nothing running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psutil

from gigafab.health.v1 import health_pb2, health_pb2_grpc
from gigafab.local import components
from gigafab.local.layout import Layout, Ports
from gigafab.local.pki import Authority, ClientIdentity
from gigafab.local.processes import Supervisor

SITE = "de-halm"


def node(index: int) -> str:
    return f"{SITE}-bench-{index:05d}"


async def one_agent(index: int, port: int, pki: Path, stop_at: float, gpus: int) -> int:
    name = node(index)
    credentials = grpc.ssl_channel_credentials(
        (pki / "ca.crt").read_bytes(), (pki / f"{name}.key").read_bytes(), (pki / f"{name}.crt").read_bytes()
    )
    template = health_pb2.ReportRequest(
        node=health_pb2.NodeIdentity(node=name, site=SITE, agent_version="bench"),
        gpus=[health_pb2.GpuState(index=i, uuid=f"GPU-{name}-{i}", health=health_pb2.HEALTH_HEALTHY) for i in range(gpus)],
    )
    sent = 0

    async def reports():  # type: ignore[no-untyped-def]
        nonlocal sent
        await asyncio.sleep(random.random())
        sequence = time.time_ns() // 1000
        while time.time() < stop_at:
            sequence += 1
            template.sequence = sequence
            template.sent_at.FromNanoseconds(time.time_ns())
            sent += 1
            yield template
            await asyncio.sleep(1.0)

    async with grpc.aio.secure_channel(
        f"127.0.0.1:{port}", credentials, options=[("grpc.ssl_target_name_override", "localhost")]
    ) as channel:
        stub = health_pb2_grpc.HealthServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            async for _ in stub.Report(reports()):
                pass
        except grpc.aio.AioRpcError as failure:
            print(f"{name}: {failure.code().name}", file=sys.stderr)
    return sent


async def worker(first: int, last: int, port: int, pki: Path, stop_at: float, gpus: int) -> None:
    sent = await asyncio.gather(*(one_agent(i, port, pki, stop_at, gpus) for i in range(first, last)))
    print(json.dumps({"sent": sum(sent)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=20, help="seconds to connect everyone before measuring")
    parser.add_argument("--generators", type=int, default=2, help="load-generator processes")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--worker", nargs=4, metavar=("FIRST", "LAST", "PORT", "STOP_AT"), help=argparse.SUPPRESS)
    parser.add_argument("--pki", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        first, last, port, stop_at = args.worker
        asyncio.run(worker(int(first), int(last), int(port), args.pki, float(stop_at), args.gpus))
        return
    run(args)


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        layout = Layout(state=root / "plane", ports=Ports.shifted(5000))
        supervisor = Supervisor(layout.pids, layout.logs)
        supervisor.start(components.etcd(layout))
        pki = Authority(root / "pki", "bench-ca")
        pki.ensure()
        served = pki.issue_server("gateway", ("localhost", "127.0.0.1"))
        started = time.monotonic()
        for index in range(args.agents):
            pki.issue_client(ClientIdentity(node(index), node(index)))
        print(f"issued {args.agents} agent certificates in {time.monotonic() - started:.0f}s", file=sys.stderr)
        port, stats = layout.ports.gateways, root / "stats.json"
        gateway = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gigafab",
                "gateway",
                f"--site={SITE}",
                f"--listen=127.0.0.1:{port}",
                f"--cert={served.cert}",
                f"--key={served.key}",
                f"--ca={pki.pair.cert}",
                f"--etcd=127.0.0.1:{layout.ports.etcd_client}",
                f"--stats-file={stats}",
            ],
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(3)
            if gateway.poll() is not None:
                raise SystemExit("the gateway did not start:\n" + (root / "gateway.log").read_text()[-2000:])
            stop_at = time.time() + args.warmup + args.seconds + 2
            share = -(-args.agents // args.generators)
            generators = [
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        str(first),
                        str(min(first + share, args.agents)),
                        str(port),
                        str(stop_at),
                        f"--pki={root / 'pki'}",
                        f"--gpus={args.gpus}",
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
                for first in range(0, args.agents, share)
            ]
            time.sleep(args.warmup)
            measured = measure(psutil.Process(gateway.pid), stats, args.seconds)
            sent = sum(json.loads(g.communicate(timeout=120)[0])["sent"] for g in generators)
            print(json.dumps({"agents": args.agents, "seconds": args.seconds, **measured, "reports_sent_total": sent}, indent=2))
        finally:
            gateway.terminate()
            gateway.wait(10)
            supervisor.stop("etcd")


def measure(gateway: psutil.Process, stats: Path, seconds: float) -> dict[str, object]:
    cpu_before, reports_before, at_before = sum(gateway.cpu_times()[:2]), json.loads(stats.read_text())["reports"], time.time()
    p50s: list[float] = []
    p99s: list[float] = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        time.sleep(2.0)
        sample = json.loads(stats.read_text())
        if sample["latency_p50"] is not None:
            p50s.append(sample["latency_p50"])
            p99s.append(sample["latency_p99"])
    sample = json.loads(stats.read_text())
    elapsed = time.time() - at_before
    return {
        "reports_per_second": round((sample["reports"] - reports_before) / elapsed, 1),
        "latency_p50_ms": round(1000 * sorted(p50s)[len(p50s) // 2], 2) if p50s else None,
        "latency_p99_ms_worst_window": round(1000 * max(p99s), 2) if p99s else None,
        "gateway_cpu_cores": round((sum(gateway.cpu_times()[:2]) - cpu_before) / elapsed, 2),
        "gateway_rss_mb": round(gateway.memory_info().rss / 2**20, 1),
        "refused": sample["refused"],
        "nodes_in_ledger": sample["nodes"],
        "etcd_writes": sample["writes"],
    }


if __name__ == "__main__":
    main()
