"""Health ingest benchmark: N simulated agents on real gRPC/mTLS streams at 1 Hz
against one gateway process (with a real etcd), from separate load-generator processes.

    python bench/health_ingest.py --agents 10000 --seconds 60

Every agent has its own certificate, TLS connection and stream, connects at a random
moment within ``--ramp`` seconds, and then reports every second (at a random phase)
the state of 8 healthy GPUs. The load generators are the Go
program in bench/loadgen (built once into the cache): a Python generator would need
more cores than the machine has to produce 10,000 reports/s, and would starve the
gateway it is measuring. Prints sustained reports/s, p50/p99 from a report's send
time to its state in the gateway's ledger, and the gateway's CPU (cores) and RSS over
the steady window (with its edge's, ``--edge``), and how many nodes were declared Silent in it (every agent keeps
reporting, so any is a false Silent). Runs on its own ports; leaves nothing running.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import psutil

from gigafab.local import components
from gigafab.local.layout import Layout, Ports, cache_home
from gigafab.local.pki import Authority, node_identity
from gigafab.local.processes import Supervisor
from gigafab.local.toolchain import ensure_gateway_edge, go_binary

SITE = "de-halm"
PREFIX = f"{SITE}-bench-"
LOADGEN = Path(__file__).resolve().parent / "loadgen"


def node(index: int) -> str:
    return f"{PREFIX}{index:05d}"


def loadgen() -> Path:
    """The load generator, built from bench/loadgen when its sources changed."""
    digest = hashlib.sha256(b"".join((LOADGEN / name).read_bytes() for name in ("go.mod", "go.sum", "main.go")))
    binary = cache_home() / "bin" / f"loadgen-{digest.hexdigest()[:12]}" / "loadgen"
    if not binary.exists():
        print(f"building the load generator into {binary}", file=sys.stderr)
        env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
        subprocess.run([go_binary(), "build", "-trimpath", "-o", str(binary), "."], cwd=LOADGEN, env=env, check=True)
    return binary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--ramp", type=float, default=20, help="agents connect at random moments within these seconds")
    parser.add_argument("--warmup", type=float, default=120, help="at most this long for every agent to connect")
    parser.add_argument("--generators", type=int, default=1, help="load-generator processes")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--edge", action="store_true", help="the gateway takes connections through its compiled edge")
    run(parser.parse_args())


def run(args: argparse.Namespace) -> None:
    binary = loadgen()
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
            pki.issue_client(node_identity(node(index), SITE))
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
                *edge_option(args.edge),
            ],
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(3)
            if gateway.poll() is not None:
                raise SystemExit("the gateway did not start:\n" + (root / "gateway.log").read_text()[-2000:])
            share = -(-args.agents // args.generators)
            generators = [
                start_loadgen(
                    binary,
                    port,
                    root / "pki",
                    range(first, min(first + share, args.agents)),
                    seconds=args.warmup + args.seconds + 10,
                    ramp=args.ramp,
                    gpus=args.gpus,
                )
                for first in range(0, args.agents, share)
            ]
            loads = [psutil.Process(g.pid) for g in generators]
            connected = wait_for_everyone(stats, args.agents, args.warmup)
            time.sleep(5)  # let the last connections' first writes settle
            measured = measure(psutil.Process(gateway.pid), loads, stats, args.seconds)
            for generator in generators:
                generator.terminate()
            totals = [json.loads(g.communicate(timeout=60)[0]) for g in generators]
            print(
                json.dumps(
                    {
                        "agents": args.agents,
                        "seconds": args.seconds,
                        "all_agents_connected_after_s": connected,
                        **measured,
                        "reports_sent_total": sum(t["sent"] for t in totals),
                        "streams_broken": sum(t["stream_failures"] for t in totals),
                    },
                    indent=2,
                )
            )
        finally:
            gateway.terminate()
            gateway.wait(10)
            supervisor.stop("etcd")


def start_loadgen(
    binary: Path,
    port: int,
    pki: Path,
    agents: range,
    *,
    seconds: float,
    ramp: float,
    gpus: int = 8,
    extra: Sequence[str] = (),
    errors: IO[bytes] | int = subprocess.DEVNULL,
) -> subprocess.Popen[str]:
    """A load-generator process for ``agents`` (indexes), reporting to 127.0.0.1:``port``; ``extra``
    flags are passed on, and what it says went wrong goes to ``errors``."""
    return subprocess.Popen(
        [
            str(binary),
            f"-address=127.0.0.1:{port}",
            f"-pki={pki}",
            f"-site={SITE}",
            f"-prefix={PREFIX}",
            f"-first={agents.start}",
            f"-last={agents.stop}",
            f"-gpus={gpus}",
            f"-seconds={seconds}",
            f"-ramp={ramp}s",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )


def wait_for_everyone(stats: Path, agents: int, limit: float) -> float | None:
    """Seconds until every agent is in the gateway's ledger (None: not within ``limit``)."""
    began = time.time()
    while time.time() - began < limit:
        time.sleep(1.0)
        if stats.exists() and json.loads(stats.read_text())["nodes"] >= agents:
            return round(time.time() - began, 1)
    return None


def _with_children(process: psutil.Process, read: Callable[[psutil.Process], float]) -> float:
    """``read`` summed over ``process`` and its children still running (a gateway's edge)."""
    total = 0.0
    for each in (process, *process.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += read(each)
    return total


def cpu(process: psutil.Process) -> float:
    """CPU seconds of ``process`` and of its children still running."""
    return _with_children(process, lambda each: sum(each.cpu_times()[:2]))  # user and system


def rss(process: psutil.Process) -> int:
    """Resident bytes of ``process`` and of its children still running."""
    return int(_with_children(process, lambda each: each.memory_info().rss))


def edge_option(wanted: bool) -> list[str]:
    """The gateway's ``--edge`` option when ``wanted``: its compiled edge, built into the cache if needed."""
    return [f"--edge={ensure_gateway_edge(Layout.default())}"] if wanted else []


def measure(gateway: psutil.Process, loads: list[psutil.Process], stats: Path, seconds: float) -> dict[str, object]:
    before = json.loads(stats.read_text())
    cpu_before, reports_before, at_before = cpu(gateway), before["reports"], time.time()
    load_before = sum(cpu(p) for p in loads)
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
        "latency_p99_ms_median_window": round(1000 * sorted(p99s)[len(p99s) // 2], 2) if p99s else None,
        "latency_p99_ms_worst_window": round(1000 * max(p99s), 2) if p99s else None,
        "gateway_cpu_cores": round((cpu(gateway) - cpu_before) / elapsed, 2),
        "load_generators_cpu_cores": round((sum(cpu(p) for p in loads) - load_before) / elapsed, 2),
        "gateway_rss_mb": round(rss(gateway) / 2**20, 1),
        "refused": sample["refused"],
        "nodes_in_ledger": sample["nodes"],
        "false_silent_while_measuring": sample["silenced"] - before["silenced"],
        "etcd_writes": sample["writes"],
    }


if __name__ == "__main__":
    main()
