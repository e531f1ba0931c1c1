"""`gigafab why`: a table a person can read, data a script can trust, exit codes that say which."""

from __future__ import annotations

from gigafab.why import PENDING, PLACED, exit_code, report, table


def body(status: dict[str, object]) -> dict[str, object]:
    return {"metadata": {"name": "scan", "namespace": "umcg"}, "status": status}


PENDING_STATUS = {
    "phase": "Pending",
    "conditions": [{"type": "Placed", "status": "False", "message": "fits on no site; nearest: niemeyer"}],
    "verdicts": [
        {"site": "niemeyer", "verdict": "NotHealthy", "reason": "site is not Healthy"},
        {"site": "de-halm", "verdict": "NotCertified", "reason": "not certified for health data"},
    ],
}


def test_a_pending_workload_shows_every_site_with_its_reason() -> None:
    said = report(body(PENDING_STATUS))
    text = table(said)
    assert text.splitlines()[0] == "gpuworkload/scan in umcg: Pending, nowhere"
    assert "fits on no site; nearest: niemeyer" in text
    rows = text.splitlines()[3:]
    assert rows[0].split() == ["SITE", "VERDICT", "REASON"]
    assert rows[1].split()[:2] == ["niemeyer", "NotHealthy"]
    assert rows[2].split()[:2] == ["de-halm", "NotCertified"]
    assert exit_code(said) == PENDING


def test_a_placed_workload_names_its_site_and_epoch() -> None:
    said = report(body({"phase": "Placed", "site": "niemeyer", "epoch": 2, "verdicts": []}))
    assert "Placed, on niemeyer (epoch 2)" in table(said)
    assert exit_code(said) == PLACED


def test_a_workload_not_yet_judged_says_so() -> None:
    said = report(body({}))
    assert said["phase"] == "Unjudged"
    assert "not judged" in said["message"]
    assert exit_code(said) == PENDING
