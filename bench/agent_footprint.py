"""Agent footprint: one `gigafab agent` process, one node with 8 simulated GPUs,
reporting at 1 Hz to the running local plane's de-halm gateway.

    gigafab local up && python bench/agent_footprint.py --seconds 60

Prints the agent process's RSS and its CPU use (share of one core) over the window,
after a 5 s warm-up.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import psutil

from gigafab.local.health import gateway_port
from gigafab.local.pki import Authority, node_identity
from gigafab.local.plane import Plane

NODE, SITE = "de-halm-footprint", "de-halm"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    plane = Plane()
    pki_dir = plane.layout.pki / "health"
    Authority(pki_dir, "gigafab-health-ca").issue_client(node_identity(NODE, SITE))
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gigafab",
            "agent",
            f"--site={SITE}",
            f"--node={NODE}",
            f"--gateway=127.0.0.1:{gateway_port(plane.layout, SITE)}",
            f"--pki={pki_dir}",
            "--gpus=8",
            "--interval=1",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        process = psutil.Process(agent.pid)
        time.sleep(5)
        cpu_before, started = sum(process.cpu_times()[:2]), time.monotonic()
        peak = 0
        while time.monotonic() - started < args.seconds:
            time.sleep(1)
            peak = max(peak, process.memory_info().rss)
        cpu = (sum(process.cpu_times()[:2]) - cpu_before) / (time.monotonic() - started)
        print(
            json.dumps(
                {
                    "gpus": 8,
                    "seconds": args.seconds,
                    "rss_mb_peak": round(peak / 2**20, 1),
                    "cpu_percent_of_a_core": round(100 * cpu, 2),
                },
                indent=2,
            )
        )
    finally:
        agent.terminate()
        agent.wait(10)


if __name__ == "__main__":
    main()
