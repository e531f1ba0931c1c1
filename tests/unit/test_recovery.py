"""A GPU that needs a reset is taken for reset and recovered only on a sign of a reset and once what failed it is gone."""

from __future__ import annotations

import pytest
from gigafab.agents.recovery import Awaiting, Look, watch

LOST = Look(error="NVMLError_GpuIsLost: GPU is lost", gone=True)
UNKNOWN = Look(error="NVMLError_Unknown: Unknown Error")
CLEAN = Look()


def run(looks: list[Look]) -> list[tuple[bool, bool]]:
    """Watch ``looks`` in turn (volatile ECC as each reports it); per look: awaiting a reset, reset seen."""
    awaiting: Awaiting | None = None
    ecc, seen = 0, []
    for look in looks:
        awaiting, reset = watch(awaiting, look, ecc)
        ecc = look.ecc_uncorrected if look.answered else ecc
        seen.append((awaiting is not None, reset))
    return seen


@pytest.mark.parametrize(
    ("looks", "expected"),
    [
        pytest.param([CLEAN, Look(xids=(13,)), CLEAN], [(False, False)] * 3, id="healthy, an application XID: nothing"),
        pytest.param(
            [Look(error=LOST.error, gone=True, xids=(79,)), LOST, CLEAN, CLEAN],
            [(True, False), (True, False), (False, True), (False, False)],
            id="lost from the bus, answers again: reset once",
        ),
        pytest.param([UNKNOWN, CLEAN], [(True, False), (False, True)], id="unreadable only: NVML reads it again after init"),
        pytest.param(
            [Look(xids=(74,)), CLEAN, CLEAN, Look(error="NVMLError_ResetRequired: GPU requires restart", gone=True), CLEAN],
            [(True, False), (True, False), (True, False), (True, False), (False, True)],
            id="XID 74: no sign of a reset until NVML says it needs one, then it answers",
        ),
        pytest.param(
            [Look(xids=(74,)), UNKNOWN, CLEAN],
            [(True, False), (True, False), (True, False)],
            id="XID 74: a passing NVML error is no reset",
        ),
        pytest.param(
            [Look(xids=(74,), recovery_action=1), Look(recovery_action=1), CLEAN],
            [(True, False), (True, False), (False, True)],
            id="the driver asked for a reset and asks for nothing now",
        ),
        pytest.param(
            [Look(xids=(48,), ecc_uncorrected=1), Look(ecc_uncorrected=1), Look(ecc_uncorrected=0)],
            [(True, False), (True, False), (False, True)],
            id="double-bit ECC: the volatile count starts again",
        ),
        pytest.param(
            [
                Look(ecc_uncorrected=2, remap_failure=True),
                Look(ecc_uncorrected=0, remap_failure=True),
                Look(ecc_uncorrected=0),
            ],
            [(True, False), (True, False), (False, True)],
            id="reset, but a failed row remap remains: not before it is gone",
        ),
        pytest.param(
            [Look(ecc_uncorrected=1), Look(ecc_uncorrected=0, recovery_action=2), Look(ecc_uncorrected=0)],
            [(True, False), (True, False), (False, True)],
            id="reset, but the driver asks for a reboot: not before it asks nothing",
        ),
        pytest.param(
            [LOST, Look(xids=(79,))], [(True, False), (True, False)], id="answers again with a new XID that needs a reset"
        ),
    ],
)
def test_a_gpu_is_reset_only_on_a_sign_of_it_and_once_what_failed_it_is_gone(
    looks: list[Look], expected: list[tuple[bool, bool]]
) -> None:
    assert run(looks) == expected
