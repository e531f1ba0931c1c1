"""Site status comes from the nodes of its zone."""

from __future__ import annotations

from tests.e2e.conftest import Kubectl, condition, eventually


def test_site_counts_nodes_and_gpus_of_its_zone(kubectl: Kubectl) -> None:
    def counted() -> None:
        status = kubectl.get("site", "de-halm")["status"]
        assert (status["nodes"], status["nodesReady"], status["gpus"], status["gpusHealthy"]) == (2, 2, 16, 16)
        assert condition(kubectl.get("site", "de-halm"), "Ready")["status"] == "True"

    eventually(counted)


def test_planned_site_is_not_ready(kubectl: Kubectl) -> None:
    def planned() -> None:
        ready = condition(kubectl.get("site", "eemshaven"), "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "Planned")

    eventually(planned)


def test_site_without_nodes_says_so(kubectl: Kubectl) -> None:
    kubectl.apply(
        {
            "apiVersion": "gigafab.nl/v1alpha1",
            "kind": "Site",
            "metadata": {"name": "groningen-2"},
            "spec": {"jurisdiction": "NL", "powerBudgetKW": 500},
        }
    )

    def empty() -> None:
        site = kubectl.get("site", "groningen-2")
        ready = condition(site, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "NoNodes")
        assert site["status"]["zone"] == "groningen-2"
        assert ready["observedGeneration"] == site["metadata"]["generation"]

    eventually(empty)
