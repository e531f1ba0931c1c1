"""Which health records the operator believes, what it keeps of a node across a restart, and how
often it tells about refusals: the pure parts (``health_records``, ``health_history``,
``health_refusals.EventBudget``)."""

from __future__ import annotations

import json

import pytest
from gigafab.agents.records import node_key
from gigafab.operator.health_history import HISTORY, annotation, applied_from
from gigafab.operator.health_records import Record, Refusal, Refused, gateway_site, membership, read
from gigafab.operator.health_refusals import EventBudget
from gigafab.operator.node_health import FAILED, HEALTHY, Applied

from gigafab.api.labels import SITE_NODE_LABEL


def value(**fields: object) -> bytes:
    document = {"node": "n1", "site": "niemeyer", "health": "Degraded", "gpus": {"0": "Healthy", "1": "Degraded"}}
    return json.dumps({**document, **fields}).encode()


def test_site_and_node_come_from_the_key() -> None:
    found = read(node_key("niemeyer", "n1"), value(reason="GPU 1: XID 63", lastReportAt=12.5))
    assert found == Record("niemeyer", "n1", "Degraded", "GPU 1: XID 63", healthy_gpus=1, last_report=12.5)


@pytest.mark.parametrize(
    ("key", "raw", "reason"),
    [
        (node_key("niemeyer", "n1"), value(node="n2"), Refusal.KEY_MISMATCH),
        (node_key("niemeyer", "n1"), value(site="de-halm"), Refusal.KEY_MISMATCH),
        (node_key("niemeyer", "n1"), json.dumps({"node": "n1", "health": "Failed"}).encode(), Refusal.KEY_MISMATCH),
        (node_key("niemeyer", "n1"), b"{", Refusal.MALFORMED),
        (node_key("niemeyer", "n1"), b"[1]", Refusal.MALFORMED),
        (node_key("niemeyer", "n1"), value(health="Broken"), Refusal.MALFORMED),
        (node_key("niemeyer", "n1"), value(gpus=["Healthy"]), Refusal.MALFORMED),
        (node_key("niemeyer", "n1"), value(lastReportAt="yesterday"), Refusal.MALFORMED),
        (node_key("niemeyer", "N1"), value(node="N1"), Refusal.MALFORMED),  # not a Node name: never in an API path
        (node_key("niemeyer", "n1/status"), value(node="n1/status"), Refusal.MALFORMED),
        (b"/gigafab/health/v1/sites/niemeyer/other", value(), Refusal.MALFORMED),
    ],
)
def test_a_record_is_refused_with_a_reason(key: bytes, raw: bytes, reason: Refusal) -> None:
    found = read(key, raw)
    assert isinstance(found, Refused)
    assert found.reason is reason
    assert found.key == key.decode()


def test_a_long_hostile_value_is_cut_short_in_the_message() -> None:
    found = read(node_key("niemeyer", "n1"), value(node="x" * 10_000))
    assert isinstance(found, Refused)
    assert len(found.message) < 300


def test_a_record_applies_only_to_a_node_labelled_for_the_keys_site() -> None:
    record = Record("niemeyer", "n1", "Silent", "", 0, None)
    assert membership(record, {SITE_NODE_LABEL: "niemeyer"}) is None
    for labels, reason in (
        (None, Refusal.UNKNOWN_NODE),
        ({}, Refusal.UNLABELLED_NODE),
        ({"topology.kubernetes.io/zone": "niemeyer"}, Refusal.UNLABELLED_NODE),  # a kubelet may set the zone itself
        ({SITE_NODE_LABEL: "de-halm"}, Refusal.NODE_OF_ANOTHER_SITE),
    ):
        refused = membership(record, labels)
        assert refused is not None
        assert (refused.reason, refused.site, refused.node) == (reason, "niemeyer", "n1")
        assert refused.key == "/gigafab/health/v1/sites/niemeyer/nodes/n1"


def test_gateway_keys_are_told_apart_from_records() -> None:
    assert gateway_site("/gigafab/health/v1/sites/niemeyer/gateway") == "niemeyer"
    assert gateway_site("/gigafab/health/v1/sites/niemeyer/nodes/gateway") is None
    assert gateway_site("/gigafab/health/v1/sites/a/b/gateway") is None


@pytest.mark.parametrize(
    "applied",
    [
        Applied(),
        Applied(FAILED, "GPU 3: XID 79", better_since=100.0, better_health=HEALTHY, relapses=3, trusted_at=40.0),
        Applied(HEALTHY, "all GPUs healthy", relapses=1, trusted_at=90.5),
    ],
)
def test_the_history_survives_a_restart_on_another_monotonic_clock(applied: Applied) -> None:
    written = annotation(applied, wall_offset=1_700_000_000.0)
    # the next process: its monotonic clock is 1,699,990,000 s behind wall time, not 1,700,000,000
    restored = applied_from({HISTORY: written}, wall_offset=1_699_990_000.0)
    shift = 10_000.0
    assert restored == Applied(
        applied.health,
        applied.reason,
        better_since=None if applied.better_since is None else applied.better_since + shift,
        better_health=applied.better_health,
        relapses=applied.relapses,
        trusted_at=None if applied.trusted_at is None else applied.trusted_at + shift,
    )


@pytest.mark.parametrize(
    "raw",
    ["", "{", "[]", '{"health": "Fine"}', '{"health": "Failed", "betterHealth": "Fine", "betterSince": 1}', '{"reason": "x"}'],
)
def test_a_history_that_cannot_be_read_is_none(raw: str) -> None:
    assert applied_from({HISTORY: raw}, 0.0) is None
    assert applied_from({}, 0.0) is None


def test_refusal_events_are_rate_limited_per_site_and_reason_and_in_all() -> None:
    budget = EventBudget(every=60.0, per_window=3)
    assert budget.allow("niemeyer", "malformed", 0.0) == 1
    assert budget.allow("niemeyer", "malformed", 1.0) is None
    assert budget.allow("niemeyer", "malformed", 2.0) is None
    assert budget.allow("niemeyer", "key_mismatch", 3.0) == 1
    assert budget.allow("a", "malformed", 4.0) == 1
    assert budget.allow("b", "malformed", 5.0) is None, "three events a minute in all"
    assert budget.allow("niemeyer", "malformed", 61.0) == 3, "it stands for the two held back"
    assert budget.allow("b", "malformed", 66.0) == 2
