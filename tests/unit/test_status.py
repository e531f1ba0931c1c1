"""``gigafab status``: what it reports and the exit code scripts rely on."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gigafab import status
from gigafab.cli import main


def site(name: str, lifecycle: str = "Active", ready: str = "True", healthy: str = "True", **observed: Any) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": ready}, {"type": "Healthy", "status": healthy}]
    spec = {"lifecycle": lifecycle, "powerBudgetKW": 4000, "powerCapKW": 3000}
    body = {"nodes": 2, "nodesReady": 2, "gpus": 16, "gpusHealthy": 15, "powerDrawKW": 5.6, "conditions": conditions, **observed}
    return {"metadata": {"name": name}, "spec": spec, "status": body}


def workload(name: str, phase: str | None, where: str | None = None) -> dict[str, Any]:
    spec = {"gpus": 2, "replicas": 3, "criticality": "critical"}
    return {"metadata": {"name": name, "namespace": "umcg"}, "spec": spec, "status": {"phase": phase, "site": where, "epoch": 2}}


TENANT = {
    "metadata": {"name": "umcg"},
    "spec": {"track": "regional", "quota": {"gpus": 8}},
    "status": {"namespaces": ["umcg", "umcg-research"], "gpusUsed": 6, "conditions": [{"type": "Ready", "status": "True"}]},
}


def test_a_well_facility_reports_every_row_and_exits_0() -> None:
    said = status.report(
        [site("niemeyer"), site("eemshaven", lifecycle="Planned", ready="False")],
        [TENANT],
        [workload("cohort", "Running", "niemeyer")],
    )
    assert [row["name"] for row in said["sites"]] == ["eemshaven", "niemeyer"]
    niemeyer = said["sites"][1]
    assert (niemeyer["gpusHealthy"], niemeyer["gpus"], niemeyer["powerDrawKW"], niemeyer["powerLimitKW"]) == (15, 16, 5.6, 3000)
    assert said["tenants"][0] == {
        "name": "umcg",
        "track": "regional",
        "namespaces": ["umcg", "umcg-research"],
        "gpusUsed": 6,
        "gpuQuota": 8,
        "ready": "True",
    }
    assert said["workloads"][0]["gpus"] == 6
    assert said["problems"] == []
    assert status.exit_code(said) == status.WELL


@pytest.mark.parametrize(
    ("sites", "workloads", "problem"),
    [
        ([site("niemeyer", healthy="False")], [], "site niemeyer is not Healthy"),
        ([site("de-halm", ready="False")], [], "site de-halm is not Ready"),
        ([site("niemeyer")], [workload("cohort", "FailingOver")], "gpuworkload umcg/cohort is FailingOver"),
        ([site("niemeyer")], [workload("cohort", "Pending")], "gpuworkload umcg/cohort is Pending"),
    ],
)
def test_what_needs_a_look_exits_3(sites: list[dict[str, Any]], workloads: list[dict[str, Any]], problem: str) -> None:
    said = status.report(sites, [], workloads)
    assert said["problems"] == [problem]
    assert status.exit_code(said) == status.ATTENTION
    assert problem in status.tables(said)


def test_a_draining_site_that_is_not_ready_is_no_problem() -> None:
    assert status.report([site("eemshaven", lifecycle="Draining", ready="False")], [], [])["problems"] == []


def test_tables_for_people() -> None:
    text = status.tables(status.report([site("niemeyer")], [TENANT], [workload("cohort", "Running", "niemeyer")]))
    lines = text.splitlines()
    assert lines[0].split() == ["SITE", "LIFECYCLE", "READY", "HEALTHY", "NODES", "GPUS", "DRAW-KW", "LIMIT-KW"]
    assert lines[1].split() == ["niemeyer", "Active", "True", "True", "2/2", "15/16", "5.6", "3000"]
    assert "umcg,umcg-research" in text
    assert ["umcg", "cohort", "critical", "6", "Running", "niemeyer", "2"] in [line.split() for line in lines]


def test_an_unreachable_cluster_exits_1_with_the_reason(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "x"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    assert main(["status", "--kubeconfig", str(config), "-o", "json"]) == status.UNREADABLE
    assert "cannot read the cluster" in capsys.readouterr().err


def test_bad_usage_exits_2() -> None:
    with pytest.raises(SystemExit) as usage:
        main(["status", "-o", "yaml"])
    assert usage.value.code == 2
