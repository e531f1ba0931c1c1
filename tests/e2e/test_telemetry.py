"""Metrics on the real plane: the operator's endpoint says what the Sites' status says, counts its
reconciles and times every placement; a site gateway's endpoint counts its agents' reports."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gigafab.local.components import operator_metrics_url
from gigafab.local.health import metrics_url
from tests.e2e.conftest import Kubectl, condition, eventually, tenant
from tests.e2e.test_workloads import workload

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
    except OSError as unreachable:  # e.g. a gateway still starting after another test restored its site
        raise AssertionError(f"{url} does not answer: {unreachable}") from unreachable
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (metric, found), value in samples.items() if metric == name and wanted <= set(found))


def site_status(kubectl: Kubectl, name: str) -> dict[str, Any]:
    return dict(kubectl.get("site", name)["status"])


def test_the_operator_exports_healthy_gpus_power_and_reconciles_of_every_site(kubectl: Kubectl) -> None:
    url = operator_metrics_url(kubectl.plane.layout)

    def healthy_gpus_as_in_status() -> None:
        status = site_status(kubectl, "niemeyer")
        assert scrape(url)[("gigafab_site_healthy_gpus", (("site", "niemeyer"),))] == status["gpusHealthy"]

    eventually(healthy_gpus_as_in_status)

    def power_as_in_status() -> None:
        samples = scrape(url)
        for site in ("niemeyer", "de-halm", "eemshaven"):
            status, spec = site_status(kubectl, site), kubectl.get("site", site)["spec"]
            assert samples[("gigafab_site_power_draw_kw", (("site", site),))] == status.get("powerDrawKW", 0)
            assert samples[("gigafab_site_power_cap_kw", (("site", site),))] == min(
                spec["powerBudgetKW"], spec.get("powerCapKW", spec["powerBudgetKW"])
            )

    eventually(power_as_in_status)
    samples = scrape(url)
    assert total(samples, "gigafab_reconcile_duration_seconds_count", kind="Site") > 0
    assert total(samples, "gigafab_reconcile_duration_seconds_count", kind="Site", handler="site_power") > 0


@pytest.mark.usefixtures("workloads_removed")
def test_a_new_workload_is_timed_as_a_placement_and_its_power_is_exported(kubectl: Kubectl, unique: str) -> None:
    url = operator_metrics_url(kubectl.plane.layout)
    kubectl.apply(tenant(unique, dataClass="health", quota={"gpus": 8, "cpu": "8", "memory": "32Gi"}))

    def tenant_ready() -> None:
        assert condition(kubectl.get("tenant", unique), "Ready")["status"] == "True"

    eventually(tenant_ready)
    before = total(scrape(url), "gigafab_placement_duration_seconds_count")
    kubectl.apply(workload("metered", unique, gpus=2))

    def placed() -> None:
        body = kubectl.get("gpuworkload", "metered", "-n", unique)
        assert body is not None, "not created yet"
        assert (body.get("status") or {}).get("site") == "niemeyer", "not placed on niemeyer yet"

    eventually(placed)
    after = scrape(url)
    assert total(after, "gigafab_placement_duration_seconds_count") > before
    assert total(after, "gigafab_placement_duration_seconds_count", outcome="placed") > 0

    def power_drawn_on_niemeyer() -> None:
        draw = scrape(url).get(("gigafab_site_power_draw_kw", (("site", "niemeyer"),)), 0.0)
        assert draw > 0, "no power drawn on niemeyer yet"
        assert draw == site_status(kubectl, "niemeyer").get("powerDrawKW")

    eventually(power_drawn_on_niemeyer)


def test_a_site_gateway_counts_its_agents_reports(kubectl: Kubectl) -> None:
    url = metrics_url(kubectl.plane.layout, "niemeyer")
    site = (("site", "niemeyer"),)
    first = eventually(lambda: scrape(url))
    assert first[("gigafab_gateway_reports_total", site)] > 0
    assert first[("gigafab_gateway_connected_agents", site)] > 0
    assert first[("gigafab_gateway_lag_seconds", site)] >= 0
    assert first[("gigafab_gateway_waiting_connections", site)] >= 0
    assert ("gigafab_gateway_rejected_calls_total", (("reason", "identity_mismatch"), *site)) in first

    def more_reports() -> None:
        assert scrape(url)[("gigafab_gateway_reports_total", site)] > first[("gigafab_gateway_reports_total", site)]

    eventually(more_reports)
