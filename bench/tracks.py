"""Allocation-tracks benchmark: three tracks competing for one site, through Kueue, on a real plane.

    python bench/tracks.py                                  # 10 reclaims, 120 s of contention, 5 cap cuts
    python bench/tracks.py --finish-every 1                 # harsher churn: a workload finishes every second
    python bench/tracks.py --reclaims 3 --contention 60 --caps 2

It starts its own plane (ports shifted by 7000, state in a temporary folder): etcd,
kube-apiserver, controller-manager, scheduler, Kueue, kwok and the operator, with the
default AllocationPolicy (euro-hpc 50 %, national 25 %, regional 25 % with priority), and
the health plane: a node counts toward the quotas only once its agent has vouched for it.
The work runs on Niemeyer: 2 fake nodes of 8 GPUs, so Kueue's nominal quotas there are
euro-hpc 8, national 4, regional 4 GPUs. One tenant per track may use Niemeyer only
(the power tenant also De Halm, where shed work can go). Every workload asks 2 GPUs.

1. Reclaim: the national tenant borrows the idle euro-hpc share (6 workloads, 12
   GPUs); then the euro-hpc tenant submits 4 workloads (8 GPUs) → time until all 4
   run (Kueue preempts two borrowers). The euro-hpc work is removed between rounds.
2. Contention: each track keeps 8 workloads (16 GPUs) submitted, three times what
   the site holds; every ``--finish-every`` seconds (2) one running workload, chosen
   at random, finishes and its tenant submits another at once (so a workload runs
   about half a minute). GPUs running per track are sampled every 0.5 s; each track's
   share of the GPU-time delivered is compared with its guarantee, and the GPU-time
   delivered with the site's capacity (GPUs idle while finished work is replaced).
3. Power: 16 GPUs placed on Niemeyer (11.2 kW at 700 W per GPU), a mix of critical,
   standard and preemptible work; the cap is lowered to 6 kW → time until the placed
   draw (``status.powerDrawKW``) and the draw of the pods actually running on
   Niemeyer's nodes are both within the cap.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from figures import gpu_workload, quantiles, wait  # bench/, the script's folder
from kubernetes import client, config

from gigafab.local.layout import Layout, Ports
from gigafab.local.plane import Options, Plane

OFFSET = 7000
GROUP, VERSION = "gigafab.nl", "v1alpha1"
SITE = "niemeyer"
TRACKS = {"euro-hpc": "bench-euro", "national": "bench-national", "regional": "bench-regional"}
GUARANTEE = {"euro-hpc": 50.0, "national": 25.0, "regional": 25.0}
POWER_TENANT = "bench-power"
WATTS = 700


class Bench:
    def __init__(self, plane: Plane) -> None:
        self.plane = plane
        config.load_kube_config(str(plane.layout.admin_kubeconfig))
        self.core = client.CoreV1Api()
        self.custom = client.CustomObjectsApi()
        self.serial = 0

    # -- setup ------------------------------------------------------------------
    def setup(self) -> None:
        for track, name in TRACKS.items():
            self.tenant(name, track, [SITE])
        self.tenant(POWER_TENANT, "regional", [SITE, "de-halm"])
        for name in [*TRACKS.values(), POWER_TENANT]:
            wait(lambda name=name: self.ready(name), 60, f"tenant {name} Ready")  # type: ignore[misc]
        wait(self.queues_ready, 60, "Kueue's ClusterQueues for Niemeyer")

    def tenant(self, name: str, track: str, sites: list[str]) -> None:
        quota = {"gpus": 64, "cpu": "64", "memory": "256Gi"}
        spec = {"track": track, "dataClass": "internal", "allowedSites": sites, "quota": quota}
        self.apply({"apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant", "metadata": {"name": name}, "spec": spec})

    def ready(self, tenant: str) -> bool:
        body = self.custom.get_cluster_custom_object(GROUP, VERSION, "tenants", tenant)
        return any(c["type"] == "Ready" and c["status"] == "True" for c in (body.get("status") or {}).get("conditions") or [])

    def queues_ready(self) -> bool:
        queue = self.custom.get_cluster_custom_object("kueue.x-k8s.io", "v1beta2", "clusterqueues", "euro-hpc")
        flavors = queue["spec"]["resourceGroups"][0]["flavors"]
        return any(f["name"] == SITE and int(f["resources"][0]["nominalQuota"]) == 8 for f in flavors)

    def apply(self, manifest: dict[str, Any]) -> None:
        self.plane.apply([manifest])

    # -- workloads ----------------------------------------------------------------
    def submit(self, namespace: str, prefix: str, criticality: str = "standard", sites: list[str] | None = None) -> str:
        self.serial += 1
        name = f"{prefix}-{self.serial}"
        body = gpu_workload(name, namespace, sites or [SITE], criticality)
        self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "gpuworkloads", body)
        return name

    def remove(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "gpuworkloads", name)

    def clear(self, namespace: str) -> None:
        self.plane.kubectl("delete", "gpuworkloads", "--all", "-n", namespace, "--wait=true")
        wait(lambda: not self.pods(namespace, running_only=False), 120, f"the pods of {namespace} gone")

    def phases(self, namespace: str) -> dict[str, tuple[str, str]]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "gpuworkloads")["items"]
        statuses = {w["metadata"]["name"]: w.get("status") or {} for w in items}
        return {name: (str(status.get("phase")), str(status.get("site"))) for name, status in statuses.items()}

    def pods(self, namespace: str, running_only: bool = True) -> list[client.V1Pod]:
        pods = self.core.list_namespaced_pod(namespace, label_selector="gigafab.nl/workload").items
        if not running_only:
            return list(pods)
        return [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]

    def running(self, namespace: str, names: list[str]) -> bool:
        phases = self.phases(namespace)
        return all(phases.get(name, ("", ""))[0] == "Running" for name in names)

    # -- 1. reclaim ------------------------------------------------------------------
    def reclaims(self, rounds: int) -> list[float]:
        national, euro = TRACKS["national"], TRACKS["euro-hpc"]
        borrowers = [self.submit(national, "nat") for _ in range(6)]
        wait(lambda: self.running(national, borrowers), 120, "the national borrowers running")
        times = []
        for _ in range(rounds):
            wait(lambda: self.running(national, borrowers), 120, "the national borrowers running again")
            started = time.monotonic()
            owners = [self.submit(euro, "eu") for _ in range(4)]
            wait(lambda owners=owners: self.running(euro, owners), 60, "the euro-hpc share taken back")  # type: ignore[misc]
            times.append(time.monotonic() - started)
            print(f"  reclaim: {times[-1]:.2f} s", file=sys.stderr)
            self.clear(euro)
        self.clear(national)
        return times

    # -- 2. contention ---------------------------------------------------------------
    def contention(
        self, seconds: float, finish_every: float, per_track: int = 8, warmup: float = 20.0
    ) -> dict[str, dict[str, float]]:
        rng = random.Random(6)
        for track, namespace in TRACKS.items():
            for _ in range(per_track):
                self.submit(namespace, track[:3])
        gpu_seconds = dict.fromkeys(TRACKS, 0.0)
        started = time.monotonic()
        last_sample = last_finish = started
        finished = 0
        while (now := time.monotonic()) - started < warmup + seconds:
            if now - last_finish >= finish_every:
                last_finish = now
                track = rng.choice(list(TRACKS))
                namespace = TRACKS[track]
                running = [name for name, (phase, _) in self.phases(namespace).items() if phase == "Running"]
                if running:
                    self.remove(namespace, rng.choice(running))  # it finishes; its tenant submits the next
                    self.submit(namespace, track[:3])
                    finished += 1
            now = time.monotonic()
            if now - started >= warmup:
                counts = {track: 2 * len(self.pods(namespace)) for track, namespace in TRACKS.items()}
                for track, gpus in counts.items():
                    gpu_seconds[track] += gpus * (now - last_sample)
            last_sample = now
            time.sleep(0.5)
        total = sum(gpu_seconds.values()) or 1.0
        report = {}
        for track in TRACKS:
            share = 100 * gpu_seconds[track] / total
            off = round(share - GUARANTEE[track], 2)
            report[track] = {"share_pct": round(share, 2), "guarantee_pct": GUARANTEE[track], "off_pts": off}
        capacity = 16 * seconds
        report["_"] = {
            "finished_and_resubmitted": finished,
            "window_s": seconds,
            "gpu_time_delivered_pct_of_capacity": round(100 * total / capacity, 2),
        }
        for namespace in TRACKS.values():
            self.clear(namespace)
        return report

    # -- 3. power --------------------------------------------------------------------
    def power_cut(self, cap_kw: int) -> tuple[float, float]:
        namespace = POWER_TENANT
        mix = ["critical"] * 2 + ["standard"] * 4 + ["preemptible"] * 2
        names = [self.submit(namespace, "pw", criticality, sites=[SITE, "de-halm"]) for criticality in mix]
        wait(lambda: all(p == ("Running", SITE) for p in self.phases(namespace).values()), 120, "16 GPUs running on Niemeyer")
        nodes = {n.metadata.name for n in self.core.list_node(label_selector=f"topology.kubernetes.io/zone={SITE}").items}
        started = time.monotonic()
        self.plane.kubectl("patch", "site", SITE, "--type=merge", "-p", json.dumps({"spec": {"powerCapKW": cap_kw}}))

        def placed_within() -> float | None:
            site = self.custom.get_cluster_custom_object(GROUP, VERSION, "sites", SITE)
            return time.monotonic() - started if float(site["status"].get("powerDrawKW", 1e9)) <= cap_kw else None

        def running_within() -> float | None:
            gpus = sum(2 for pod in self.pods(namespace) if pod.spec.node_name in nodes)
            return time.monotonic() - started if gpus * WATTS / 1000 <= cap_kw else None

        placed = wait(placed_within, 60, "the placed draw within the cap", interval=0.05)
        running = wait(running_within, 60, "the running draw within the cap", interval=0.05)
        print(f"  cap {cap_kw} kW: placed draw within {placed:.2f} s, running draw within {running:.2f} s", file=sys.stderr)
        self.plane.kubectl("patch", "site", SITE, "--type=json", "-p", '[{"op": "remove", "path": "/spec/powerCapKW"}]')
        del names
        self.clear(namespace)
        return placed, running


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reclaims", type=int, default=10)
    parser.add_argument("--contention", type=float, default=120.0, help="seconds of contention measured (after 20 s warm-up)")
    parser.add_argument("--finish-every", type=float, default=2.0, help="seconds between finishing workloads")
    parser.add_argument("--caps", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gigafab-bench-tracks-") as state:
        plane = Plane(Layout(state=Path(state), ports=Ports.shifted(OFFSET)))
        plane.up(Options(nodes_per_site=2, gpus_per_node=8, samples=True, tenants=False))
        try:
            bench = Bench(plane)
            bench.setup()
            reclaim = bench.reclaims(args.reclaims)
            shares = bench.contention(args.contention, args.finish_every)
            caps = [bench.power_cut(6) for _ in range(args.caps)]
        finally:
            plane.down()
    report = {
        "reclaim_lent_share": {**quantiles(reclaim), "goal_s": 10},
        "gpu_time_share_under_contention": {**shares, "goal_pts": 2},
        "power_cap_lowered_placed_draw_within": {**quantiles([c[0] for c in caps]), "goal_s": 30},
        "power_cap_lowered_running_draw_within": {**quantiles([c[1] for c in caps]), "goal_s": 30},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
