"""One real control plane for the whole session: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok and the operator, as a user runs them.

It runs beside any demo plane: its own state directory and ports shifted by 1000
(``GIGAFAB_E2E_PORT_OFFSET`` moves it elsewhere, so two sessions can run side by side).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import yaml

from gigafab.local.layout import Layout, Ports
from gigafab.local.plane import Options, Plane

T = TypeVar("T")


@dataclass
class Kubectl:
    """kubectl against the test plane, as the admin or as someone else."""

    plane: Plane

    def run(
        self, *args: str, as_user: str | None = None, groups: tuple[str, ...] = (), check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.plane.layout.binary("kubectl")), f"--kubeconfig={self.plane.layout.admin_kubeconfig}"]
        if as_user:
            argv.append(f"--as={as_user}")
            argv.extend(f"--as-group={group}" for group in groups)
        answer = subprocess.run([*argv, *args], check=False, capture_output=True, text=True, input=stdin, timeout=120)
        if check and answer.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {answer.stderr}")
        return answer

    def apply(
        self, *objects: dict[str, Any], check: bool = True, as_user: str | None = None, groups: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        return self.run("apply", "-f", "-", stdin=yaml.safe_dump_all(objects), check=check, as_user=as_user, groups=groups)

    def create(
        self,
        *objects: dict[str, Any],
        check: bool = True,
        as_user: str | None = None,
        groups: tuple[str, ...] = (),
        dry_run: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl create``; ``dry_run``: on the server (admission runs, nothing is stored)."""
        where = ("--dry-run=server",) if dry_run else ()
        return self.run(
            "create", *where, "-f", "-", stdin=yaml.safe_dump_all(objects), check=check, as_user=as_user, groups=groups
        )

    def get(self, *args: str) -> Any:
        answer = self.run("get", *args, "-o", "json", check=False)
        if answer.returncode != 0:
            return None
        return json.loads(answer.stdout)

    def can(
        self, verb: str, resource: str, namespace: str, user: str, groups: tuple[str, ...] = (), subresource: str = ""
    ) -> bool:
        """``kubectl auth can-i``; a subresource goes in ``subresource`` (``resource/name`` names an object)."""
        extra = (f"--subresource={subresource}",) if subresource else ()
        answer = self.run("auth", "can-i", verb, resource, *extra, "-n", namespace, as_user=user, groups=groups, check=False)
        return answer.stdout.strip() == "yes"


class PodPoller:
    """Reads the workload pods (``where``: kubectl's ``-n NS`` or ``-A``) every ``every`` seconds in a
    thread, for the length of a ``with`` block, and hands each reading to ``take``."""

    every = 0.5

    def __init__(self, kubectl: Kubectl, *where: str) -> None:
        self.kubectl, self.where = kubectl, where
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self: P) -> P:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(self.every):
            pods = self.kubectl.get("pods", *self.where, "-l", "gigafab.nl/workload")
            if pods is not None:  # None: the apiserver did not answer (a chaos test may have stopped it)
                self.take(pods["items"])

    def take(self, pods: list[dict[str, Any]]) -> None:
        raise NotImplementedError


P = TypeVar("P", bound=PodPoller)


def eventually(check: Callable[[], T], timeout: float = 60.0, interval: float = 0.5) -> T:
    """Retry ``check`` until it stops raising AssertionError (a bounded wait, not a timing test)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(interval)


@pytest.fixture(scope="session")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    os.environ["GIGAFAB_RETRY_SECONDS"] = "2"
    os.environ["GIGAFAB_TRUST_AFTER"] = "2"
    layout = Layout(
        state=tmp_path_factory.mktemp("plane"), ports=Ports.shifted(int(os.environ.get("GIGAFAB_E2E_PORT_OFFSET", "1000")))
    )
    local = Plane(layout)
    local.up(Options(nodes_per_site=2, gpus_per_node=8, samples=True, tenants=False))
    yield local
    local.down()


@pytest.fixture(scope="session")
def kubectl(plane: Plane) -> Kubectl:
    return Kubectl(plane)


@pytest.fixture
def unique() -> str:
    return "t" + uuid.uuid4().hex[:7]


@pytest.fixture
def workloads_removed(kubectl: Kubectl, unique: str) -> Iterator[None]:
    """Each test's GpuWorkloads go when it ends: the sites' GPUs are shared by the whole session."""
    yield
    kubectl.run("delete", "gpuworkloads", "--all", "-n", unique, "--wait=false", check=False)


def tenant(name: str, **spec: Any) -> dict[str, Any]:
    body = {"track": "regional", "quota": {"gpus": 4, "cpu": "8", "memory": "32Gi"}}
    body.update(spec)
    return {"apiVersion": "gigafab.nl/v1alpha1", "kind": "Tenant", "metadata": {"name": name}, "spec": body}


def destination(name: str, jurisdiction: str, cidr: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "gigafab.nl/v1alpha1",
        "kind": "EgressDestination",
        "metadata": {"name": name},
        "spec": {"jurisdiction": jurisdiction, "cidrs": [cidr], **spec},
    }


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    assert obj is not None, "object not found"
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item["type"] == kind:
            return dict(item)
    raise AssertionError(f"no {kind} condition yet on {obj['metadata']['name']}")


def quotas(kubectl: Kubectl, site: str, wanted: dict[str, int]) -> None:
    """Every track's ClusterQueue holds ``wanted`` nominal GPUs on ``site``."""
    found = {}
    for track in wanted:
        queue = kubectl.get("clusterqueues.v1beta2.kueue.x-k8s.io", track)
        flavors = {f["name"]: f for f in queue["spec"]["resourceGroups"][0]["flavors"]}
        assert site in flavors, f"no flavor {site} in ClusterQueue {track} yet"
        found[track] = int(flavors[site]["resources"][0]["nominalQuota"])
    assert found == wanted


def gpu_pod(name: str, namespace: str, gpus: int = 1) -> dict[str, Any]:
    """A pod on a fake node asking for ``gpus`` GPUs (none at all: no GPU resource named)."""
    resources = {"requests": {"nvidia.com/gpu": gpus}, "limits": {"nvidia.com/gpu": gpus}} if gpus else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "containers": [
                {
                    "name": "train",
                    "image": "registry.example/train:1",
                    "resources": resources,
                }
            ],
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }
