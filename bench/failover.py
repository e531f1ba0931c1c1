"""Failover benchmark: GPU faults and whole sites lost, on a real local control plane.

    python bench/failover.py                      # 100 GPU faults, 10 site losses
    python bench/failover.py --faults 20 --losses 3

It starts its own plane (ports shifted by 6000, state in a temporary folder): etcd,
kube-apiserver, controller-manager, scheduler, kwok, the operator, and per site a
gateway and simulated agents in the site's network namespace, with 4 fake nodes of
8 GPUs per site; all three sites Active and certified for the tenant's data. Every
site gets ``--per-site`` critical GpuWorkloads of 2 GPUs that prefer it.

GPU faults: XID 79 on a GPU of the node a workload's pod runs on → time until a pod
of that workload runs on another node (the health plane taints the node; its pods
are evicted and started again on a healthy node of the same site). The GPU is then
reset; a node is used again once the operator trusts it again (2 s quiet period; the
faults are independent events, so the operator remembers no relapse between them:
``--relapse-memory 3600``, the operator's default, measures the flap damping instead).

Site losses: the site holding most workloads is cut off (``gigafab local cut``: its
uplink goes down, its gateway loses etcd while it and its agents keep talking) →
time until each of its workloads runs on another site, with the new epoch held until
the site's agents have fenced. Then the site is restored and becomes Healthy again
before the next loss.

Overlaps: a pod poller records, for every workload, which epochs the apiserver shows
Running; two epochs in one sample is an overlap. And a moved copy whose start
(``startsAfter`` in the FailingOver event) is not after every fence of the lost
site's nodes is an overlap too. Both must be 0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from figures import gpu_workload, quantiles, wait  # bench/, the script's folder
from gigafab.agents.control import inject
from gigafab.operator.conditions import seconds_of
from kubernetes import client, config

from gigafab.local.health import control_url, fence_log
from gigafab.local.layout import SITES, Layout, Ports
from gigafab.local.plane import Options, Plane

OFFSET = 6000
NAMESPACE = "bench-failover"
GROUP, VERSION = "gigafab.nl", "v1alpha1"


class Bench:
    def __init__(self, plane: Plane) -> None:
        self.plane = plane
        config.load_kube_config(str(plane.layout.admin_kubeconfig))
        self.core = client.CoreV1Api()
        self.custom = client.CustomObjectsApi()
        self.overlaps: list[str] = []
        self._stop = threading.Event()

    # -- setup --------------------------------------------------------------
    def setup(self, per_site: int) -> list[str]:
        for site in SITES:
            patch = {"spec": {"lifecycle": "Active", "dataClasses": ["public", "internal"], "powerBudgetKW": 100000}}
            self.plane.kubectl("patch", "site", site, "--type=merge", "-p", json.dumps(patch))
        tenant = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Tenant",
            "metadata": {"name": NAMESPACE},
            "spec": {"track": "regional", "dataClass": "internal", "quota": {"gpus": 400, "cpu": "400", "memory": "1Ti"}},
        }
        self.apply(tenant)
        wait(lambda: self._ready("tenants", NAMESPACE), 60, "the tenant Ready")
        names = []
        for site in SITES:
            for number in range(per_site):
                name = f"{site}-{number}"
                names.append(name)
                self.apply(self.workload(name, site))
        for name in names:
            wait(lambda name=name: self.phase(name) == "Running", 120, f"{name} Running")  # type: ignore[misc]
        return names

    def apply(self, manifest: dict[str, Any]) -> None:
        self.plane.apply([manifest])

    @staticmethod
    def workload(name: str, site: str) -> dict[str, Any]:
        return gpu_workload(name, NAMESPACE, [site], "critical")

    def _ready(self, plural: str, name: str) -> bool:
        body = self.custom.get_cluster_custom_object(GROUP, VERSION, plural, name)
        return any(c["type"] == "Ready" and c["status"] == "True" for c in (body.get("status") or {}).get("conditions") or [])

    def status(self, name: str) -> dict[str, Any]:
        body = self.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "gpuworkloads", name)
        return dict(body.get("status") or {})

    def phase(self, name: str) -> str:
        return str(self.status(name).get("phase"))

    def running_pods(self, name: str) -> list[client.V1Pod]:
        pods = self.core.list_namespaced_pod(NAMESPACE, label_selector=f"gigafab.nl/workload={name}").items
        return [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]

    # -- the overlap poller ---------------------------------------------------
    def poll_overlaps(self) -> None:
        while not self._stop.is_set():
            epochs: dict[str, set[str]] = {}
            for pod in self.core.list_namespaced_pod(NAMESPACE, label_selector="gigafab.nl/workload").items:
                if pod.status.phase == "Running" and not pod.metadata.deletion_timestamp:
                    labels = pod.metadata.labels
                    epochs.setdefault(labels["gigafab.nl/workload"], set()).add(labels["gigafab.nl/epoch"])
            self.overlaps += [f"{name}: epochs {sorted(seen)} running at once" for name, seen in epochs.items() if len(seen) > 1]
            time.sleep(0.1)

    # -- GPU faults ------------------------------------------------------------
    def tainted(self, node: str) -> bool:
        return any(t.key.startswith("gigafab.nl/") for t in self.core.read_node(node).spec.taints or [])

    def gpu_fault(self, name: str) -> float:
        pod = wait(lambda: next(iter(self.running_pods(name)), None), 60, f"a running pod of {name}")
        node = pod.spec.node_name
        site = pod.metadata.labels["gigafab.nl/site"]
        wait(lambda: not self.tainted(node), 60, f"{node} trusted again")
        url = control_url(self.plane.layout, site)
        started = time.monotonic()
        inject(url, {"node": node, "fault": "xid", "xid": 79, "gpu": 0})

        def moved() -> float | None:
            others = [p for p in self.running_pods(name) if p.spec.node_name != node]
            return time.monotonic() - started if others else None

        try:
            return wait(moved, 60, f"{name} running off {node}")
        finally:
            inject(url, {"node": node, "fault": "reset", "gpu": 0})

    # -- site losses -----------------------------------------------------------
    def site_loss(self, names: list[str]) -> tuple[str, list[float], float]:
        on: dict[str, list[str]] = {}
        for name in names:
            on.setdefault(str(self.status(name)["site"]), []).append(name)
        site = max(on, key=lambda s: len(on[s]))
        leaving = on[site]
        epochs = {name: int(self.status(name)["epoch"]) for name in leaving}
        cut_wall, started = time.time(), time.monotonic()
        self.cli("local", "cut", site)
        times: dict[str, float] = {}

        def all_moved() -> bool:
            for name in leaving:
                if name in times:
                    continue
                status = self.status(name)
                if status.get("site") != site and status.get("phase") == "Running" and self.running_pods(name):
                    times[name] = time.monotonic() - started
            return len(times) == len(leaving)

        wait(all_moved, 120, f"the work of {site} running elsewhere", interval=0.1)
        self.check_fencing(site, cut_wall, leaving, epochs)
        self.cli("local", "restore", site)
        restored = time.monotonic()
        wait(lambda: self._healthy(site), 120, f"{site} Healthy again", interval=0.25)
        return site, [times[name] for name in leaving], time.monotonic() - restored

    def _healthy(self, site: str) -> bool:
        body = self.custom.get_cluster_custom_object(GROUP, VERSION, "sites", site)
        return any(c["type"] == "Healthy" and c["status"] == "True" for c in (body.get("status") or {}).get("conditions") or [])

    def check_fencing(self, site: str, cut_wall: float, leaving: list[str], epochs: dict[str, int]) -> None:
        fenced: dict[str, float] = {}
        log = fence_log(self.plane.layout, site)
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            if entry["event"] == "fenced" and entry["at"] >= cut_wall:
                fenced.setdefault(entry["node"], entry["at"])
        events = self.core.list_namespaced_event(NAMESPACE).items
        for name in leaving:
            messages = [e.message for e in events if e.involved_object.name == name and e.reason == "FailingOver"]
            found = [re.search(r"epoch (\d+) on \S+, starting after (\S+Z):", m) for m in messages]
            starts = {int(m.group(1)): seconds_of(m.group(2)) for m in found if m}
            start = starts.get(epochs[name] + 1)
            if start is None:
                self.overlaps.append(f"{name}: no FailingOver event for epoch {epochs[name] + 1}")
                continue
            late = [node for node, at in fenced.items() if at >= start]
            if late or len(fenced) < 4:
                self.overlaps.append(f"{name}: started at {start} but {site} fenced {fenced}")

    def cli(self, *args: str) -> None:
        env = {**os.environ, **self.plane.layout.environment()}
        subprocess.run([sys.executable, "-m", "gigafab", *args], check=True, env=env, capture_output=True, timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", type=int, default=100)
    parser.add_argument("--losses", type=int, default=10)
    parser.add_argument("--per-site", type=int, default=3, help="critical workloads placed on each site")
    parser.add_argument("--keep", action="store_true", help="leave the plane running")
    parser.add_argument(
        "--relapse-memory",
        type=float,
        default=0.0,
        help="the operator's relapse memory in seconds (default 0: the bench's faults are independent events; "
        "with the operator's default of 3600, 100 faults on 12 nodes make every node a flapping one, trusted again "
        "only after 64 s, and the figures measure that damping instead of failover)",
    )
    args = parser.parse_args()
    os.environ["GIGAFAB_TRUST_AFTER"] = "2"
    os.environ["GIGAFAB_RELAPSE_MEMORY"] = f"{args.relapse_memory:g}"
    layout = Layout(state=Path(tempfile.mkdtemp(prefix="gigafab-failover-")), ports=Ports.shifted(OFFSET))
    plane = Plane(layout)
    began = time.monotonic()
    plane.up(Options(nodes_per_site=4, gpus_per_node=8))
    bench = Bench(plane)
    poller = threading.Thread(target=bench.poll_overlaps, daemon=True)
    try:
        names = bench.setup(args.per_site)
        poller.start()
        faults = [bench.gpu_fault(names[number % len(names)]) for number in range(args.faults)]
        print(f"GPU faults: {json.dumps(quantiles(faults))}", flush=True)
        losses, recovered = [], []
        for number in range(args.losses):
            site, times, back = bench.site_loss(names)
            losses += times
            recovered.append(back)
            print(f"site loss {number + 1}: {site}, {len(times)} workload(s) moved, slowest {max(times):.2f} s", flush=True)
        bench._stop.set()
        poller.join()
        report = {
            "nodes": 4 * len(SITES),
            "workloads": len(names),
            "gpu_fault_to_running_elsewhere": quantiles(faults),
            "site_loss_to_running_on_another_site": quantiles(losses),
            "site_losses": args.losses,
            "restore_to_healthy": quantiles(recovered),
            "relapse_memory_s": args.relapse_memory,
            "overlaps": len(bench.overlaps),
            "overlap_examples": bench.overlaps[:5],
            "wall_s": round(time.monotonic() - began, 1),
        }
        print(json.dumps(report, indent=2))
    finally:
        bench._stop.set()
        if not args.keep:
            plane.down(purge=True)


if __name__ == "__main__":
    main()
