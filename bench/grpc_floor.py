"""The floor under the health gateway: what grpc.aio alone costs at N agents.

    python bench/grpc_floor.py --agents 10000 --seconds 30

Serves the gateway's ``Report`` method with a handler that only counts frames (no
decoding, no answer, no etcd), with the gateway's server options and mTLS, and
drives it with the same Go load generator as bench/health_ingest.py. Prints
frames/s and the server's CPU (cores) and RSS once every agent is connected. The
difference to health_ingest.py's figure is the gateway's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gigafab.agents.gateway import SERVER_OPTIONS
from health_ingest import SITE, cpu, loadgen, node, start_loadgen

from gigafab.local.pki import Authority, node_identity

PORT = 26900


def serve(pki: Path, counter: Path) -> None:
    """The server process: count frames, write the count to ``counter`` every second."""
    frames = 0

    async def report(requests: AsyncIterator[bytes], _: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        nonlocal frames
        async for _frame in requests:
            frames += 1
        return
        yield b""  # a stream handler

    async def main() -> None:
        server = grpc.aio.server(options=SERVER_OPTIONS)
        handler = grpc.stream_stream_rpc_method_handler(report)
        methods = grpc.method_handlers_generic_handler("gigafab.health.v1.HealthService", {"Report": handler})
        server.add_generic_rpc_handlers((methods,))
        credentials = grpc.ssl_server_credentials(
            [((pki / "gateway.key").read_bytes(), (pki / "gateway.crt").read_bytes())], (pki / "ca.crt").read_bytes(), True
        )
        server.add_secure_port(f"127.0.0.1:{PORT}", credentials)
        await server.start()
        while True:
            await asyncio.sleep(1.0)
            counter.write_text(str(frames))

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--ramp", type=float, default=20)
    parser.add_argument("--serve", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    binary = loadgen()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        pki = Authority(root / "pki", "bench-ca")
        pki.ensure()
        pki.issue_server("gateway", ("localhost", "127.0.0.1"))
        for index in range(args.agents):
            pki.issue_client(node_identity(node(index), SITE))
        counter = root / "frames"
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(root / "pki"), str(counter)])
        time.sleep(2)
        generator = start_loadgen(
            binary, PORT, root / "pki", range(args.agents), seconds=args.ramp + 20 + args.seconds + 10, ramp=args.ramp
        )
        try:
            time.sleep(args.ramp + 20)  # everyone connected and past the first report
            process = psutil.Process(server.pid)
            frames_before, cpu_before, began = int(counter.read_text()), cpu(process), time.time()
            time.sleep(args.seconds)
            elapsed = time.time() - began
            frames = int(counter.read_text()) - frames_before
            print(
                json.dumps(
                    {
                        "agents": args.agents,
                        "frames_per_second": round(frames / elapsed, 1),
                        "server_cpu_cores": round((cpu(process) - cpu_before) / elapsed, 2),
                        "server_rss_mb": round(process.memory_info().rss / 2**20, 1),
                    },
                    indent=2,
                )
            )
        finally:
            generator.terminate()
            generator.communicate(timeout=30)
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
