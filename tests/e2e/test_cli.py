"""``gigafab status`` against the real plane, as a script would call it."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from gigafab.local.plane import Plane

from .conftest import Kubectl, eventually


def gigafab(plane: Plane, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "gigafab", *args, "--kubeconfig", str(plane.layout.admin_kubeconfig)]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)


def test_status_json_says_what_the_sites_say_and_its_exit_code_follows_the_problems(plane: Plane, kubectl: Kubectl) -> None:
    def agrees() -> dict[str, Any]:
        answer = gigafab(plane, "status", "-o", "json")
        said = json.loads(answer.stdout)
        assert answer.returncode == (3 if said["problems"] else 0), answer.stderr
        niemeyer = next(row for row in said["sites"] if row["name"] == "niemeyer")
        observed = kubectl.get("site", "niemeyer")["status"]
        assert (niemeyer["gpus"], niemeyer["gpusHealthy"], niemeyer["nodes"]) == (
            observed["gpus"],
            observed["gpusHealthy"],
            observed["nodes"],
        )
        assert niemeyer["powerLimitKW"] == kubectl.get("site", "niemeyer")["spec"]["powerBudgetKW"]
        return said

    said = eventually(agrees, timeout=60)
    assert {row["name"] for row in said["sites"]} >= {"niemeyer", "de-halm", "eemshaven"}
    eemshaven = next(row for row in said["sites"] if row["name"] == "eemshaven")
    assert eemshaven["lifecycle"] == "Planned"
    assert not any("eemshaven" in problem for problem in said["problems"])


def test_status_table_has_the_three_sections(plane: Plane) -> None:
    answer = gigafab(plane, "status")
    assert answer.returncode in (0, 3), answer.stderr
    headers = [line.split()[:2] for line in answer.stdout.splitlines() if line.startswith(("SITE ", "TENANT ", "NAMESPACE "))]
    assert headers == [["SITE", "LIFECYCLE"], ["TENANT", "TRACK"], ["NAMESPACE", "WORKLOAD"]]
