"""The operator killed and restarted converges, with no duplicate objects."""

from __future__ import annotations

import signal

from gigafab.local import components
from tests.e2e.conftest import Kubectl, tenant
from tests.e2e.test_tenants import ready


def managed_objects(kubectl: Kubectl, namespace: str) -> list[str]:
    names = []
    for kind in ("resourcequotas", "limitranges", "networkpolicies", "rolebindings"):
        items = kubectl.get(kind, "-n", namespace, "-l", "app.kubernetes.io/managed-by=gigafab")["items"]
        names.extend(f"{kind}/{item['metadata']['name']}" for item in items)
    return sorted(names)


def test_sigkill_and_restart_converges_without_duplicates(kubectl: Kubectl, unique: str) -> None:
    plane = kubectl.plane
    kubectl.apply(tenant(unique, members=[{"name": "a", "role": "admin"}]))
    ready(kubectl, unique)
    before = managed_objects(kubectl, unique)

    pid = plane.supervisor.pid_of("gigafab-operator")
    assert pid is not None
    import os

    os.kill(pid, signal.SIGKILL)
    plane.supervisor.stop("gigafab-operator")  # reaps it and clears its pid file
    # while it is down: a new tenant, and a managed object deleted by hand
    kubectl.apply(tenant(f"{unique}-late"))
    kubectl.run("delete", "networkpolicy", "gigafab-default-deny", "-n", unique)
    plane.supervisor.start(components.operator(plane.layout))

    ready(kubectl, f"{unique}-late")

    def converged() -> None:
        assert managed_objects(kubectl, unique) == before

    from tests.e2e.conftest import eventually

    eventually(converged)
    assert len(before) == len(set(before)) == 5
