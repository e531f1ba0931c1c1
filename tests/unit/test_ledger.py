"""The gateway's ledger writes transitions only, refuses what it must, and notices silence."""

from __future__ import annotations

import pytest
from gigafab.agents.ledger import (
    FAILED,
    HEALTHY,
    SEQUENCE_AHEAD_ALLOWED_US,
    SILENT,
    Delays,
    GpuReport,
    Lag,
    Ledger,
    Refused,
    Transition,
    check_sequence,
)

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


def test_a_sequence_is_refused_only_when_further_ahead_of_the_clock_than_any_agent_can_be() -> None:
    wall = 1_760_000_000_000_000  # microseconds since 1970, as agents number their reports
    check_sequence("n1", wall + SEQUENCE_AHEAD_ALLOWED_US, wall)  # a node whose clock is 5 minutes fast
    check_sequence("n1", 1, wall)  # far behind is the ledger's to judge (replay), not this
    for sequence in (wall + SEQUENCE_AHEAD_ALLOWED_US + 1, 2**64 - 1):
        with pytest.raises(Refused) as refused:
            check_sequence("n1", sequence, wall)
        assert refused.value.reason == "implausible_sequence"
        assert "is the node's clock right?" in str(refused.value)


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


def test_a_repeated_report_is_heard_without_a_transition_and_a_change_is_not() -> None:
    ledger = Ledger("de-halm")
    assert not ledger.heard("n1", "de-halm", 1, (1, 1), now=0.0)  # never seen: observe it
    ledger.observe("n1", "de-halm", 1, OK, now=0.0, signature=(1, 1))
    assert ledger.heard("n1", "de-halm", 2, (1, 1), now=1.0)
    assert (ledger.nodes["n1"].sequence, ledger.nodes["n1"].seen) == (2, 1.0)
    assert not ledger.heard("n1", "de-halm", 3, (3, 1), now=2.0)
    assert not ledger.heard("n1", "niemeyer", 3, (1, 1), now=2.0)
    with pytest.raises(Refused) as replay:
        ledger.heard("n1", "de-halm", 2, (1, 1), now=2.0)
    assert replay.value.reason == "replayed_sequence"


def test_a_silent_node_is_never_just_heard() -> None:
    ledger = Ledger("de-halm", silent_after=3.0)
    ledger.observe("n1", "de-halm", 1, OK, now=0.0, signature=(1, 1))
    ledger.sweep(now=4.0)
    assert not ledger.heard("n1", "de-halm", 2, (1, 1), now=5.0)
    assert [t.after for t in ledger.observe("n1", "de-halm", 2, OK, now=5.0)] == [HEALTHY]


def test_a_report_waiting_behind_the_record_of_the_last_shows_the_node_alive_and_changes_nothing_else() -> None:
    ledger = Ledger("de-halm", silent_after=3.0)
    ledger.observe("n1", "de-halm", 1, OK, now=0.0)
    ledger.observe("n2", "de-halm", 1, OK, now=0.0)
    ledger.waiting("n1", now=2.0)
    assert [t.node for t in ledger.sweep(now=4.0)] == ["n2"], "n1 sent a report at 2.0 that waits to be taken"
    assert ledger.nodes["n1"].sequence == 1, "nothing of the waiting report is taken"
    assert [t.node for t in ledger.sweep(now=5.5)] == ["n1"]
    ledger.waiting("n1", now=6.0)
    assert ledger.nodes["n1"].health == SILENT, "a Silent node stays Silent until a report of it is taken"
    assert ledger.sweep(now=20.0) == []


def test_a_gateway_behind_with_reading_does_not_blame_the_nodes_for_it() -> None:
    ledger = Ledger("de-halm", silent_after=3.0)
    ledger.observe("n1", "de-halm", 1, OK, now=0.0)
    assert ledger.sweep(now=4.0, behind=1.5) == [], "its report of t=1 may still wait to be read"
    assert [t.after for t in ledger.sweep(now=4.6, behind=1.5)] == [SILENT]


def test_lag_is_the_most_a_timer_was_late_recently_and_is_forgotten_a_second_per_second() -> None:
    lag = Lag()
    assert lag.late(0.0, now=0.0) == 0.0
    assert lag.late(2.0, now=1.0) == 2.0
    assert lag.late(0.01, now=1.5) == 1.5, "half a second later, half a second of it is forgotten"
    assert lag.late(0.7, now=2.0) == 1.0
    assert lag.late(0.0, now=10.0) == 0.0
    assert lag.late(-0.01, now=10.1) == 0.0, "a timer that ran early is no lag"


def test_delays_are_the_lower_median_of_one_report_per_node_and_are_forgotten_when_taken() -> None:
    delays = Delays()
    assert delays.take() == 0.0, "no report read: nothing known"
    for node, seconds in [("a", 8.0), ("b", 7.5), ("c", 0.01), ("b", 8.2)]:
        delays.note(node, seconds)
    assert delays.take() == 8.0, "b's latest counts, once: the median of 0.01, 8.0 and 8.2"
    assert delays.take() == 0.0, "taken: forgotten"
    delays.note("a", 0.02)
    delays.note("b", 0.03)
    assert delays.take() == 0.02, "of two, the lower"
    delays.note("c", -0.5)
    assert delays.take() == 0.0, "an agent's clock ahead of the gateway's is no delay"


def test_one_node_with_a_wrong_clock_cannot_hold_back_the_silence_of_others() -> None:
    delays = Delays()
    for sequence in range(1_000):  # it reports fast, each report claiming to be an hour old
        delays.note("liar", 3_600.0 + sequence)
    for node in ("a", "b"):
        delays.note(node, 0.01)
    assert delays.take() == 0.01


def test_sweep_finds_exactly_the_quiet_nodes_whatever_order_they_last_spoke_in() -> None:
    ledger = Ledger("de-halm", silent_after=3.0)
    for index, name in enumerate(["a", "b", "c", "d"]):
        ledger.observe(name, "de-halm", 1, OK, now=float(index), signature=(1, 1))
    assert ledger.heard("a", "de-halm", 2, (1, 1), now=4.0)  # a spoke last now
    assert sorted(t.node for t in ledger.sweep(now=5.5)) == ["b", "c"]
    assert [t.node for t in ledger.sweep(now=7.5)] == ["d", "a"]
    assert ledger.sweep(now=100.0) == []


def test_a_node_restored_as_silent_stays_silent_until_it_reports() -> None:
    ledger = Ledger("de-halm", silent_after=3.0)
    ledger.restore("n1", SILENT, {0: HEALTHY}, now=0.0)
    assert ledger.sweep(now=10.0) == []
    assert not ledger.heard("n1", "de-halm", 1, (1,), now=11.0)
    assert [t.after for t in ledger.observe("n1", "de-halm", 1, [GpuReport(0, HEALTHY)], now=11.0)] == [HEALTHY]


def test_a_node_whose_stream_ended_is_allowed_the_time_new_connections_wait() -> None:
    """Its new connection may wait to be taken: not blamed for that, but for nothing more."""
    ledger = Ledger("de-halm", silent_after=3.0)
    for name in ("gone", "quiet"):
        ledger.observe(name, "de-halm", 1, OK, now=0.0, signature=(1, 1))
    ledger.closed("gone")
    silent = ledger.sweep(now=3.5, reconnecting=5.0)
    assert [(t.node, t.before, t.after) for t in silent] == [("quiet", HEALTHY, SILENT)], "an open stream gets no allowance"
    assert ledger.sweep(now=7.9, reconnecting=5.0) == []
    assert [t.node for t in ledger.sweep(now=8.1, reconnecting=5.0)] == ["gone"]


def test_without_connections_waiting_a_node_whose_stream_ended_is_silent_as_any() -> None:
    ledger = Ledger("de-halm", silent_after=3.0)
    ledger.observe("gone", "de-halm", 1, OK, now=0.0, signature=(1, 1))
    ledger.closed("gone")
    assert [t.after for t in ledger.sweep(now=3.1)] == [SILENT]
    assert ledger.sweep(now=30.0, reconnecting=20.0) == [], "once"


def test_a_node_back_on_a_new_stream_is_swept_as_one_that_talks() -> None:
    ledger = Ledger("de-halm", silent_after=3.0)
    ledger.observe("n1", "de-halm", 1, OK, now=0.0, signature=(1, 1))
    ledger.closed("n1")
    assert ledger.heard("n1", "de-halm", 2, (1, 1), now=2.0)
    ledger.closed("n1")  # the old stream's end noticed late: the node is talking again at its next report
    assert ledger.heard("n1", "de-halm", 3, (1, 1), now=3.0)
    assert ledger.sweep(now=5.9, reconnecting=60.0) == []
    assert [t.node for t in ledger.sweep(now=6.1, reconnecting=60.0)] == ["n1"], "talking again: no allowance"


def test_a_changed_report_on_a_new_stream_brings_the_node_back_too() -> None:
    ledger = Ledger("de-halm", silent_after=3.0)
    ledger.observe("n1", "de-halm", 1, OK, now=0.0, signature=(1, 1))
    ledger.closed("n1")
    failed = ledger.observe("n1", "de-halm", 2, [GpuReport(0, FAILED), GpuReport(1, HEALTHY)], now=1.0, signature=(3, 1))
    assert [t.after for t in failed] == [FAILED, FAILED]
    assert [t.node for t in ledger.sweep(now=4.1, reconnecting=60.0)] == ["n1"]


def test_a_silent_node_whose_stream_ends_stays_silent_once() -> None:
    ledger = Ledger("de-halm", silent_after=3.0)
    ledger.observe("n1", "de-halm", 1, OK, now=0.0)
    assert len(ledger.sweep(now=3.1)) == 1
    ledger.closed("n1")
    assert ledger.sweep(now=100.0) == []
