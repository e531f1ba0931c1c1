"""Fault detection benchmark on the running local plane (`gigafab local up`).

    python bench/fault_detect.py --faults 120 --silences 24

For each fault: a fault that fails a GPU (XID 79, 48, 64, 74, 95, an ECC double-bit
error or a row-remap failure, in turn) into a simulated GPU (in turn) of a fake node
(round robin over every node with an agent) → time until the node's health is Failed
in etcd, and until the Node carries the `gigafab.nl/gpu-failed` taint. Then the GPU
is reset and the benchmark waits for the taint to go (the operator's quiet period)
before the node is used again. Then silences: an agent goes quiet at a random moment
of its report interval → time until Silent in etcd, measured from that moment and
from the first report that did not come (its last report, from the Silent record's
``lastReportAt``, plus the 1 s interval). Prints p50/p99 of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from typing import Any

import aetcd
from gigafab.agents.control import inject
from gigafab.agents.records import PREFIX, node_key
from kubernetes import client, config

from gigafab.local.health import control_url
from gigafab.local.layout import Layout
from gigafab.local.plane import Plane

FAILING: list[dict[str, Any]] = [
    {"fault": "xid", "xid": 79},
    {"fault": "xid", "xid": 48},
    {"fault": "ecc-double-bit"},
    {"fault": "xid", "xid": 64},
    {"fault": "row-remap-failure"},
    {"fault": "xid", "xid": 74},
    {"fault": "xid", "xid": 95},
]
GPUS = 8
INTERVAL = 1.0
"""The simulated agents' report interval in the local plane."""


async def agent_nodes(etcd: aetcd.Client) -> list[tuple[str, str]]:
    """(site, node) of every node whose agent is talking to its gateway."""
    documents = [json.loads(item.value) for item in await etcd.get_prefix(PREFIX.encode()) if b"/nodes/" in item.key]
    return sorted((document["site"], document["node"]) for document in documents if document["health"] != "Silent")


def quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(1000 * ordered[len(ordered) // 2], 1),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
        "n": len(ordered),
    }


async def health_in_etcd(etcd: aetcd.Client, site: str, node: str) -> str:
    item = await etcd.get(node_key(site, node))
    return json.loads(item.value)["health"] if item else ""


def tainted(core: client.CoreV1Api, node: str, key: str = "gigafab.nl/gpu-failed") -> bool:
    return any(t.key == key for t in core.read_node(node).spec.taints or [])


async def one_fault(
    etcd: aetcd.Client, core: client.CoreV1Api, layout: Layout, site: str, node: str, number: int, timeout: float
) -> tuple[float, float]:
    url = control_url(layout, site)
    gpu = number % GPUS
    started = time.monotonic()
    inject(url, {"node": node, "gpu": gpu, **FAILING[number % len(FAILING)]})
    in_etcd = tainted_at = None
    while time.monotonic() - started < timeout and (in_etcd is None or tainted_at is None):
        if in_etcd is None and await health_in_etcd(etcd, site, node) == "Failed":
            in_etcd = time.monotonic() - started
        if tainted_at is None and await asyncio.to_thread(tainted, core, node):
            tainted_at = time.monotonic() - started
        await asyncio.sleep(0.01)
    inject(url, {"node": node, "fault": "reset", "gpu": gpu})
    if in_etcd is None or tainted_at is None:
        raise SystemExit(f"fault on {node} not seen within {timeout}s")
    return in_etcd, tainted_at


async def silence(etcd: aetcd.Client, layout: Layout, site: str, node: str, timeout: float) -> tuple[float, float]:
    """Seconds from the agent going quiet, and from its first missed report, to Silent in etcd."""
    url = control_url(layout, site)
    await asyncio.sleep(random.random())  # a random moment of the agent's 1 s report interval
    started, wall = time.monotonic(), time.time()
    inject(url, {"node": node, "fault": "silent"})
    while time.monotonic() - started < timeout:
        item = await etcd.get(node_key(site, node))
        document = json.loads(item.value) if item else {}
        if document.get("health") == "Silent":
            elapsed = time.monotonic() - started
            inject(url, {"node": node, "fault": "reset", "gpu": 0})
            missed = document["lastReportAt"] + INTERVAL  # the report that did not come
            return elapsed, elapsed - (missed - wall)
        await asyncio.sleep(0.01)
    raise SystemExit(f"silence of {node} not seen within {timeout}s")


async def run(faults: int, silences: int, timeout: float) -> None:
    plane = Plane()
    config.load_kube_config(str(plane.layout.admin_kubeconfig))
    core = client.CoreV1Api()
    etcd = aetcd.Client(host="127.0.0.1", port=plane.layout.ports.etcd_client)
    to_etcd: list[float] = []
    to_taint: list[float] = []
    silent: list[float] = []
    silent_from_missed: list[float] = []
    try:
        nodes = await agent_nodes(etcd)
        for number in range(faults):
            site, node = nodes[number % len(nodes)]
            while await asyncio.to_thread(tainted, core, node):  # still in its quiet period from the last round
                await asyncio.sleep(0.5)
            etcd_seconds, taint_seconds = await one_fault(etcd, core, plane.layout, site, node, number, timeout)
            to_etcd.append(etcd_seconds)
            to_taint.append(taint_seconds)
        for number in range(silences):
            site, node = nodes[number % len(nodes)]
            quiet, missed = await silence(etcd, plane.layout, site, node, timeout)
            silent.append(quiet)
            silent_from_missed.append(missed)
            while await health_in_etcd(etcd, site, node) == "Silent":  # until it talks again
                await asyncio.sleep(0.1)
    finally:
        await etcd.close()
    print(
        json.dumps(
            {
                "nodes": len(nodes),
                "fault_to_etcd": quantiles(to_etcd),
                "fault_to_node_taint": quantiles(to_taint),
                "silence_to_silent_in_etcd": quantiles(silent),
                "first_missed_report_to_silent_in_etcd": quantiles(silent_from_missed),
            },
            indent=2,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", type=int, default=120)
    parser.add_argument("--silences", type=int, default=24)
    parser.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args()
    asyncio.run(run(args.faults, args.silences, args.timeout))


if __name__ == "__main__":
    main()
