"""Onboarding benchmark: apply N Tenants to the running local plane and time them to Ready.

    gigafab local up          # the plane, with its operator
    python bench/onboarding.py --tenants 1000

Prints the seconds from the first create until every Tenant is Ready, the create
rate, and the operator's resident memory (before and peak, sampled every 100 ms).
The tenants are deleted afterwards unless --keep is given.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil
from kubernetes import client, config, watch

from gigafab.local.plane import Plane

GROUP, VERSION, PLURAL = "gigafab.nl", "v1alpha1", "tenants"
LABEL = "gigafab.nl/bench"
TRACKS = ("euro-hpc", "national", "regional")


def tenant(index: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {
            "name": f"bench-{index:05d}",
            "labels": {LABEL: "onboarding"},
            "annotations": {"gigafab.nl/allow-delete-with-running-work": "true"},
        },
        "spec": {
            "track": TRACKS[index % 3],
            "members": [{"kind": "User", "name": f"user-{index}", "role": "admin"}],
            "quota": {"gpus": 8, "cpu": "32", "memory": "128Gi"},
        },
    }


class PeakRss(threading.Thread):
    """Samples a process's resident memory until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.1):
            self.peak = max(self.peak, self.process.memory_info().rss)


def is_ready(item: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (item.get("status") or {}).get("conditions") or [])


class ReadyWatch(threading.Thread):
    """Watches the benchmark's Tenants (one stream, no polling) and notes which are Ready."""

    def __init__(self, api: client.CustomObjectsApi, expected: int, timeout: float) -> None:
        super().__init__(daemon=True)
        self.api, self.expected, self.timeout = api, expected, timeout
        self.ready: set[str] = set()
        self.done = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while len(self.ready) < self.expected and time.monotonic() < deadline:  # a watch may end early: resume
            stream = watch.Watch()
            for event in stream.stream(
                self.api.list_cluster_custom_object, GROUP, VERSION, PLURAL, label_selector=LABEL, timeout_seconds=60
            ):
                if is_ready(event["object"]):
                    self.ready.add(event["object"]["metadata"]["name"])
                if len(self.ready) >= self.expected:
                    stream.stop()
        self.done.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--keep", action="store_true", help="leave the tenants in place")
    args = parser.parse_args()

    plane = Plane()
    pid = plane.supervisor.pid_of("gigafab-operator")
    if pid is None:
        raise SystemExit("the local plane's operator is not running: start it with `gigafab local up`")
    config.load_kube_config(str(plane.layout.admin_kubeconfig))
    api = client.CustomObjectsApi()
    remove_bench_tenants(api, args.timeout)  # left over from an earlier --keep run
    memory = PeakRss(pid)
    before = memory.peak
    memory.start()

    watcher = ReadyWatch(api, args.tenants, args.timeout)
    watcher.start()
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: api.create_cluster_custom_object(GROUP, VERSION, PLURAL, tenant(i)), range(args.tenants)))
    created = time.monotonic() - started
    watcher.done.wait(args.timeout)
    elapsed = time.monotonic() - started
    ready = len(watcher.ready)
    memory.halt.set()
    memory.join()
    print(
        json.dumps(
            {
                "tenants": args.tenants,
                "ready": ready,
                "seconds_to_all_ready": round(elapsed, 1),
                "create_seconds": round(created, 1),
                "operator_rss_before_mb": round(before / 2**20, 1),
                "operator_rss_peak_mb": round(memory.peak / 2**20, 1),
            },
            indent=2,
        )
    )
    if not args.keep:
        remove_bench_tenants(api, args.timeout)


def remove_bench_tenants(api: client.CustomObjectsApi, timeout: float) -> None:
    """Delete this benchmark's tenants and wait until they and every tenant namespace are gone."""
    api.delete_collection_cluster_custom_object(GROUP, VERSION, PLURAL, label_selector=LABEL)
    deadline = time.monotonic() + timeout
    core = client.CoreV1Api()
    while time.monotonic() < deadline and (
        api.list_cluster_custom_object(GROUP, VERSION, PLURAL, label_selector=LABEL)["items"]
        or core.list_namespace(label_selector="gigafab.nl/tenant").items  # the namespaces go after their tenant
    ):
        time.sleep(2)


if __name__ == "__main__":
    main()
