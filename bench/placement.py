"""Placement benchmark: the pure placement function at facility scale.

    python bench/placement.py --nodes 5000 --sites 3 10 --workloads 1000

For each site count: 5,000 nodes of 8 GPUs spread over the sites (some nodes already
partly used, some unhealthy), sites with different jurisdictions, certifications,
lifecycles and power limits; 1,000 workloads of 1-8 GPUs by 1-4 replicas with mixed
data classes, preferences and tenants' allowed sites, placed one after another (each
placement uses up the GPUs and power it took, so later ones see a fuller facility).
Times every decision (``place``: every site's verdict with its reason, the choice,
the message), and separately the snapshot it needs (each site's histogram of free
GPUs per healthy node, rebuilt from all 5,000 nodes before every decision, as the
operator would from its node index), and prints p50/p99/max per site count, with how
many were placed.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import replace

from gigafab.operator.placement import SiteView, TenantView, WorkloadView, free_gpus_by_node, place

JURISDICTIONS = ["NL", "NL", "DE", "BE", "FR", "DK", "CH"]  # one outside the EU, for realism
DATA_CLASSES = ["public", "internal", "personal", "health"]


def facility(nodes: int, sites: int, rng: random.Random) -> tuple[list[SiteView], list[list[int]]]:
    free: list[list[int]] = [[] for _ in range(sites)]
    for index in range(nodes):
        used = rng.choice([0, 0, 0, 2, 4, 8])
        if rng.random() > 0.02:  # 2 % of nodes unhealthy: not counted
            free[index % sites].append(8 - used)
    views = []
    for index in range(sites):
        classes = {"public", "internal", "personal"} | ({"health"} if index % 3 == 0 else set())
        gpus = 8 * len(free[index])
        views.append(
            SiteView(
                name=f"site-{index:02d}",
                lifecycle="Draining" if index == sites - 1 and sites > 3 else "Active",
                healthy=index != 1 or sites <= 3,
                jurisdiction=JURISDICTIONS[index % len(JURISDICTIONS)],
                data_classes=frozenset(classes),
                power_limit_kw=gpus * 0.7 * rng.choice([0.6, 0.8, 1.0]),
                placed_power_kw=0.0,
                gpu_watts=700,
                free_gpus=free_gpus_by_node(free[index]),
            )
        )
    return views, free


def take(free: list[int], gpus: int, replicas: int) -> None:
    """Use ``replicas`` of ``gpus`` GPUs from the nodes' free counts (best fit per replica)."""
    for _ in range(replicas):
        best = min((count, node) for node, count in enumerate(free) if count >= gpus)[1]
        free[best] -= gpus


def run(nodes: int, sites: int, workloads: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    views, free = facility(nodes, sites, rng)
    names = [view.name for view in views]
    timings, snapshots, placed = [], [], 0
    for number in range(workloads):
        workload = WorkloadView(
            name=f"w{number}",
            gpus=rng.choice([1, 2, 4, 8]),
            replicas=rng.randint(1, 4),
            data_class=rng.choice(DATA_CLASSES),
            preferred_sites=tuple(rng.sample(names, k=min(2, len(names)))) if rng.random() < 0.3 else (),
        )
        tenant = TenantView(f"t{number % 50}", frozenset(rng.sample(names, k=2)) if number % 5 == 0 else frozenset())
        started = time.perf_counter()
        views = [replace(view, free_gpus=free_gpus_by_node(free[index])) for index, view in enumerate(views)]
        built = time.perf_counter()
        decision = place(views, workload, tenant)
        timings.append(time.perf_counter() - built)
        snapshots.append(built - started)
        assert len(decision.verdicts) == sites
        assert all(verdict.reason for verdict in decision.verdicts)
        if decision.site is not None:
            placed += 1
            index = names.index(decision.site)
            take(free[index], workload.gpus, workload.replicas)
            used_kw = views[index].placed_power_kw + workload.gpus * workload.replicas * views[index].gpu_watts / 1000
            views[index] = replace(views[index], placed_power_kw=used_kw)
    timings.sort()
    snapshots.sort()
    return {
        "nodes": nodes,
        "sites": sites,
        "workloads": workloads,
        "placed": placed,
        "pending_with_reason": workloads - placed,
        "decision_p50_ms": round(1000 * timings[len(timings) // 2], 3),
        "decision_p99_ms": round(1000 * timings[int(0.99 * len(timings))], 3),
        "decision_max_ms": round(1000 * timings[-1], 3),
        "snapshot_p50_ms": round(1000 * snapshots[len(snapshots) // 2], 3),
        "snapshot_p99_ms": round(1000 * snapshots[int(0.99 * len(snapshots))], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--sites", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--workloads", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    print(json.dumps([run(args.nodes, sites, args.workloads, args.seed) for sites in args.sites], indent=2))


if __name__ == "__main__":
    main()
