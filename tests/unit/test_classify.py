"""GPU health classification follows NVIDIA's XID guidance; Failed ends only by a reset."""

from __future__ import annotations

import pytest
from gigafab.agents.classify import APPLICATION_XIDS, Health, Reading, Verdict, classify


@pytest.mark.parametrize(
    ("reading", "health"),
    [
        *[(Reading(xids=(xid,)), Health.FAILED) for xid in (48, 64, 74, 79, 95)],
        *[(Reading(xids=(xid,)), Health.DEGRADED) for xid in (63, 94)],
        *[(Reading(xids=(xid,)), Health.HEALTHY) for xid in sorted(APPLICATION_XIDS)],
        (Reading(ecc_uncorrected=1), Health.FAILED),
        (Reading(remapped_rows_failure=True), Health.FAILED),
        (Reading(remapped_rows_pending=True), Health.DEGRADED),
        (Reading(temperature_celsius=95), Health.DEGRADED),
        (Reading(power_watts=900, power_limit_watts=700), Health.DEGRADED),
        (Reading(nvlink_errors=3), Health.DEGRADED),
        (Reading(xids=(63, 79)), Health.FAILED),
        (Reading(lost="NVMLError_GpuIsLost: GPU is lost"), Health.FAILED),
        (Reading(), Health.HEALTHY),
    ],
)
def test_one_reading(reading: Reading, health: Health) -> None:
    assert classify(Verdict(), reading).health is health


def test_failed_stays_failed_until_reset() -> None:
    failed = classify(Verdict(), Reading(xids=(79,)))
    quiet = classify(classify(failed, Reading()), Reading())
    assert (quiet.health, quiet.reason) == (Health.FAILED, "XID 79")
    assert classify(quiet, Reading(reset=True)).health is Health.HEALTHY


def test_a_gpu_nvml_cannot_read_stays_failed_until_reset_with_the_error_as_reason() -> None:
    lost = classify(Verdict(), Reading(lost="NVMLError_GpuIsLost: GPU is lost"))
    assert (lost.health, lost.reason) == (Health.FAILED, "unreadable through NVML: NVMLError_GpuIsLost: GPU is lost")
    assert classify(lost, Reading()).health is Health.FAILED
    assert classify(lost, Reading(reset=True)).health is Health.HEALTHY


def test_ecc_counts_are_compared_with_the_last_reading() -> None:
    failed = classify(Verdict(), Reading(ecc_uncorrected=2))
    after_reset = classify(failed, Reading(ecc_uncorrected=2, reset=True))
    assert after_reset.health is Health.HEALTHY
    assert classify(after_reset, Reading(ecc_uncorrected=2)).health is Health.HEALTHY
    assert classify(after_reset, Reading(ecc_uncorrected=3)).health is Health.FAILED


def test_passing_conditions_clear_but_xid_degradation_does_not() -> None:
    hot = classify(Verdict(), Reading(temperature_celsius=95))
    assert classify(hot, Reading()).health is Health.HEALTHY
    xid63 = classify(Verdict(), Reading(xids=(63,)))
    assert classify(xid63, Reading()).health is Health.DEGRADED


def test_worst_reason_wins() -> None:
    verdict = classify(Verdict(), Reading(xids=(63,), temperature_celsius=95, ecc_uncorrected=1))
    assert (verdict.health, verdict.reason) == (Health.FAILED, "uncorrected (double-bit) ECC error")


def test_health_numbers_match_the_protocol() -> None:
    from gigafab.health.v1 import health_pb2

    for health in Health:
        assert health_pb2.Health.Value(f"HEALTH_{health.name}") == health.value
