"""GpuWorkloads on the real plane: placed only where their data may go, run there as a Job,
and Pending with every site's reason where nothing fits."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import Kubectl, condition, eventually, tenant

TOLERATE_FAKE_NODES = [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]


def workload(name: str, namespace: str, gpus: int = 2, **spec: Any) -> dict[str, Any]:
    containers = [{"name": "train", "image": "registry.example/train:1"}]
    template = {"spec": {"containers": containers, "tolerations": TOLERATE_FAKE_NODES}}
    return {
        "apiVersion": "gigafab.nl/v1alpha1",
        "kind": "GpuWorkload",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"gpus": gpus, "template": template, **spec},
    }


def tenant_ready(kubectl: Kubectl, name: str) -> None:
    assert condition(kubectl.get("tenant", name), "Ready")["status"] == "True"


def test_health_data_work_lands_on_the_certified_site_and_runs_there(kubectl: Kubectl, unique: str) -> None:
    kubectl.apply(tenant(unique, dataClass="health", quota={"gpus": 8, "cpu": "8", "memory": "32Gi"}))
    eventually(lambda: tenant_ready(kubectl, unique))
    kubectl.apply(workload("scan-model", unique))

    def placed() -> dict[str, Any]:
        body = kubectl.get("gpuworkload", "scan-model", "-n", unique)
        assert body["status"]["phase"] == "Placed"
        return dict(body)

    body = eventually(placed)
    assert (body["status"]["site"], body["status"]["epoch"]) == ("niemeyer", 1)
    verdicts = {v["site"]: v["verdict"] for v in body["status"]["verdicts"]}
    # other tests of the session may have added sites; the three of the facility must read so
    assert {site: verdicts[site] for site in ("niemeyer", "de-halm", "eemshaven")} == {
        "niemeyer": "Fits",
        "de-halm": "NotCertified",
        "eemshaven": "NotCertified",
    }
    job = kubectl.get("job", "scan-model-e1", "-n", unique)
    assert job["metadata"]["ownerReferences"][0]["kind"] == "GpuWorkload"
    assert job["spec"]["template"]["metadata"]["labels"]["gigafab.nl/epoch"] == "1"

    def running_on_niemeyer() -> None:
        pods = kubectl.get("pods", "-n", unique, "-l", "gigafab.nl/workload=scan-model")["items"]
        assert pods
        nodes = {pod["spec"].get("nodeName", "") for pod in pods}
        assert all(node.startswith("niemeyer-") for node in nodes), nodes

    eventually(running_on_niemeyer)


def test_work_that_fits_nowhere_stays_pending_and_says_why(kubectl: Kubectl, unique: str) -> None:
    kubectl.apply(tenant(unique, allowedSites=["eemshaven"]))  # eemshaven is only Planned
    eventually(lambda: tenant_ready(kubectl, unique))
    kubectl.apply(workload("waits", unique, gpus=1))

    def pending() -> dict[str, Any]:
        body = kubectl.get("gpuworkload", "waits", "-n", unique)
        assert body["status"]["phase"] == "Pending"
        return dict(body)

    body = eventually(pending)
    placed = condition(body, "Placed")
    assert (placed["status"], placed["reason"]) == ("False", "NoSiteFits")
    assert "eemshaven" in placed["message"]
    verdicts = {v["site"]: v["verdict"] for v in body["status"]["verdicts"]}
    assert verdicts["eemshaven"] == "NotActive"
    assert verdicts["niemeyer"] == verdicts["de-halm"] == "NotAllowedForTenant"
    assert "Fits" not in verdicts.values()
    events = kubectl.get("events", "-n", unique, "--field-selector", "involvedObject.name=waits")["items"]
    assert any(event["reason"] == "NoSiteFits" and event["type"] == "Warning" for event in events)
    assert kubectl.run("get", "job", "-n", unique, "-o", "name", check=False).stdout.strip() == ""
