"""The reconnection storm benchmark's figures (pure): rates, windows and the verdict."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))
from health_ingest import node
from reconnect_storm import (
    Sample,
    keeps_up,
    latency_windows,
    per_second,
    rates,
    reconnections,
    refusals,
    silent_nodes,
    within,
    worst,
)


def samples(*points: tuple[float, float]) -> list[Sample]:
    """Samples at (time, reports so far)."""
    return [Sample(at, 0.0, 0, reports, 0.0) for at, reports in points]


def test_per_second_is_the_rate_between_the_first_and_the_last_sample() -> None:
    assert per_second(samples((10.0, 0), (11.0, 400), (14.0, 4000)), "reports") == 1000.0
    assert per_second(samples((10.0, 5)), "reports") is None


def test_rates_span_at_least_a_second_each_and_find_the_dip() -> None:
    look = samples((0.0, 0), (0.5, 500), (1.0, 1000), (1.5, 1200), (2.0, 1400), (2.5, 1900))
    found = rates(look, "reports")
    assert found == [1000.0, 700.0, 400.0, 700.0]
    assert min(found) == 400.0


def test_within_takes_the_samples_around_a_window() -> None:
    look = samples((0.0, 0), (1.0, 1), (2.0, 2), (3.0, 3), (4.0, 4))
    assert [s.at for s in within(look, 1.5, 2.5)] == [1.0, 2.0, 3.0]
    assert [s.at for s in within(look, -1.0, 9.0)] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_reconnections_count_agents_past_the_bound_as_never_back() -> None:
    figures = reconnections({"cycled": 4, "handshook": [0.1, 0.2, 0.3], "back": [0.2, 0.3, 0.5, 70.0]}, bound=60)
    assert figures["back"] == 3
    assert figures["never_back"] == 1
    assert figures["all_back_after_s"] is None
    assert figures["back_after"] == {"p50_s": 0.3, "p99_s": 0.5, "max_s": 0.5}


def test_all_back_after_is_the_last_agent_back() -> None:
    figures = reconnections({"cycled": 2, "handshook": [0.1, 0.2], "back": [0.25, 1.5]}, bound=60)
    assert figures["all_back_after_s"] == 1.5


def test_latency_windows_are_those_that_overlap_the_storm() -> None:
    documents = [{"at": at, "latency_p99": at / 1000} for at in (10.0, 12.0, 14.0, 16.0)] + [{"at": 18.0, "latency_p99": None}]
    assert latency_windows(documents, 12.5, 14.5) == pytest.approx([0.014, 0.016])


def test_refusals_are_the_new_ones_by_reason() -> None:
    assert refusals({"malformed": 2}, {"malformed": 5, "replayed_sequence": 1, "wrong_site": 0}) == {
        "malformed": 3,
        "replayed_sequence": 1,
    }


@pytest.mark.parametrize(("never_back", "false_silent", "verdict"), [(0, 0, True), (1, 0, False), (0, 2, False)])
def test_the_gateway_keeps_up_only_when_everyone_came_back_and_nobody_went_silent(
    never_back: int, false_silent: int, verdict: bool
) -> None:
    assert keeps_up(never_back, false_silent) is verdict


def test_worst_ignores_unknown_figures() -> None:
    assert worst([0.5, None, 2.0]) == 2.0
    assert worst([0.5, None, 2.0], highest=False) == 0.5
    assert worst([None]) is None


def test_silent_nodes_are_told_apart_by_whether_they_reconnected() -> None:
    records = [{"node": node(index), "health": "Silent"} for index in (3, 3, 7, 9500, 9999)]
    assert silent_nodes(records, first_storming=9000) == {"silent_nodes_reconnecting": 2, "silent_nodes_steady": 2}
