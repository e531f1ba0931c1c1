"""The gateway's ledger writes transitions only, refuses what it must, and notices silence."""

from __future__ import annotations

import pytest
from gigafab.agents.ledger import FAILED, HEALTHY, SILENT, GpuReport, Ledger, Refused, Transition

OK = [GpuReport(0, HEALTHY), GpuReport(1, HEALTHY)]


def test_first_report_records_every_gpu_and_the_node() -> None:
    ledger = Ledger("de-halm")
    transitions = ledger.observe("n1", "de-halm", 1, OK, now=0.0)
    assert [(t.gpu, t.after) for t in transitions] == [(0, HEALTHY), (1, HEALTHY), (None, HEALTHY)]


def test_steady_healthy_reports_write_nothing() -> None:
    ledger = Ledger("de-halm")
    ledger.observe("n1", "de-halm", 1, OK, now=0.0)
    assert all(ledger.observe("n1", "de-halm", seq, OK, now=float(seq)) == [] for seq in range(2, 50))


def test_a_failed_gpu_fails_its_node_and_recovers_both() -> None:
    ledger = Ledger("de-halm")
    ledger.observe("n1", "de-halm", 1, OK, now=0.0)
    failed = ledger.observe("n1", "de-halm", 2, [GpuReport(0, FAILED, "XID 79"), GpuReport(1, HEALTHY)], now=1.0)
    assert failed == [Transition("n1", 0, HEALTHY, FAILED, "XID 79"), Transition("n1", None, HEALTHY, FAILED, "GPU 0: XID 79")]
    back = ledger.observe("n1", "de-halm", 3, OK, now=2.0)
    assert [(t.gpu, t.before, t.after) for t in back] == [(0, FAILED, HEALTHY), (None, FAILED, HEALTHY)]


@pytest.mark.parametrize(("site", "sequence", "reason"), [("niemeyer", 5, "wrong_site"), ("de-halm", 1, "replayed_sequence")])
def test_refusals_name_their_reason_and_change_nothing(site: str, sequence: int, reason: str) -> None:
    ledger = Ledger("de-halm")
    ledger.observe("n1", "de-halm", 1, OK, now=0.0)
    with pytest.raises(Refused) as refused:
        ledger.observe("n1", site, sequence, [GpuReport(0, FAILED)], now=1.0)
    assert refused.value.reason == reason
    assert ledger.nodes["n1"].gpus == {0: HEALTHY, 1: HEALTHY}


def test_silence_is_noticed_once_and_a_report_ends_it() -> None:
    ledger = Ledger("de-halm", silent_after=3.0)
    ledger.observe("n1", "de-halm", 1, OK, now=0.0)
    assert ledger.sweep(now=2.9) == []
    assert [t.after for t in ledger.sweep(now=3.1)] == [SILENT]
    assert ledger.sweep(now=10.0) == []
    assert [t.after for t in ledger.observe("n1", "de-halm", 2, OK, now=11.0)] == [HEALTHY]


def test_restored_state_writes_no_false_transition() -> None:
    ledger = Ledger("de-halm")
    ledger.restore("n1", HEALTHY, {0: HEALTHY, 1: HEALTHY}, now=0.0)
    assert ledger.observe("n1", "de-halm", 1, OK, now=0.5) == []
