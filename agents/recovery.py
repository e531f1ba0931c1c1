"""When a GPU that needs a reset has had one: a pure function of what the NVML backend saw.

A GPU fails for good (``classify``: sticky until a reset) on an XID that needs a reset, a new uncorrected
ECC error, a failed row remap, or when NVML cannot read it at all. NVIDIA's own device plugin keeps such a
GPU unhealthy until the plugin restarts (NVIDIA/k8s-device-plugin#234). The NVML backend instead watches
for the reset and reports it once (``Reading.reset``), after which the operator's quiet period still
applies before the node is trusted again.

Only these are taken for a reset, since a GPU that merely answers again may still be faulty:

- NVML found the GPU lost, needing a reset, or absent, or found no driver loaded (``GONE``: errors that only
  a reset, a reload of the driver or a reboot clear), and now reads it again;
- its volatile uncorrected ECC count is below the count it had when it failed: volatile counters start
  again from zero when the driver loads the GPU afresh (NVML's ``nvmlEccCounterType_t``), which a reset does;
- the driver asked for a reset or a reboot (``NVML_FI_DEV_GET_GPU_RECOVERY_ACTION``, where the driver
  has it) and now asks for nothing.

A GPU that failed only because NVML could not read it (no XID, counter or flag said anything) has
recovered once NVML, initialised again, reads it: that error was NVML's to clear.

And what failed it must be gone: NVML reads the GPU, no row remap failed, the driver asks for no recovery
action, and the look brought no new XID or uncorrected error that needs a reset. A GPU failed by an XID
alone on a driver that sets no recovery action shows none of these signs when it is reset between two
looks; it stays Failed until its agent restarts (docs/runbooks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from gigafab.agents.classify import DEGRADED_XIDS, FAILED_XIDS

RESET_XIDS = FAILED_XIDS | DEGRADED_XIDS
"""XIDs whose verdict lasts until a reset (``classify``)."""
NO_ACTION = 0
"""``NVML_GPU_RECOVERY_ACTION_NONE``: the GPU can be used as it is (also what a driver without the field reads as)."""
RESET_ACTIONS = frozenset({1, 2, 4, 6, 7})
"""Recovery actions that a reset or a reboot fulfils: ``NVML_GPU_RECOVERY_ACTION_GPU_RESET`` (1), ``NODE_REBOOT``
(2), ``DRAIN_AND_RESET`` (4), ``BUS_RESET`` (6), ``SYSTEM_REBOOT`` (7). ``DRAIN_P2P`` (3) and
``RECOVER_IMEX_DOMAIN`` (5) ask for other things."""


@dataclass(frozen=True)
class Look:
    """What one look through NVML saw of a GPU."""

    error: str = ""
    """Why NVML could not read it; empty when it answered."""
    gone: bool = False
    """The error is one that only a reset, a driver reload or a reboot clears (lost, reset required, absent)."""
    xids: tuple[int, ...] = ()
    ecc_uncorrected: int = 0
    """Volatile uncorrected ECC errors (since the driver last loaded the GPU)."""
    remap_failure: bool = False
    recovery_action: int = NO_ACTION

    @property
    def answered(self) -> bool:
        return not self.error


@dataclass(frozen=True)
class Awaiting:
    """A GPU that needs a reset, and what has been seen of one so far."""

    unreadable_only: bool
    """It failed only because NVML could not read it."""
    ecc_uncorrected: int
    """The highest volatile uncorrected ECC count it had since it failed."""
    asked: bool = False
    """The driver asked for a reset or a reboot."""
    gone: bool = False
    """NVML found it lost, needing a reset or absent (or no driver) since it failed."""


def _needs_reset(look: Look, ecc_before: int) -> set[str]:
    """What in ``look`` makes the GPU need a reset (empty: nothing)."""
    needs = set() if look.answered else {"unreadable"}
    if set(look.xids) & RESET_XIDS:
        needs.add("xid")
    if look.answered and look.ecc_uncorrected > ecc_before:
        needs.add("ecc")
    if look.answered and look.remap_failure:
        needs.add("remap")
    return needs


def watch(awaiting: Awaiting | None, look: Look, ecc_before: int) -> tuple[Awaiting | None, bool]:
    """The GPU's state after ``look`` (None: it needs no reset) and whether ``look`` shows it reset and
    recovered (to be reported once). ``ecc_before``: its volatile uncorrected count at the look before."""
    needs = _needs_reset(look, ecc_before)
    asked = look.answered and look.recovery_action in RESET_ACTIONS
    if awaiting is None:
        if not needs:
            return None, False
        return Awaiting(needs == {"unreadable"}, max(look.ecc_uncorrected, ecc_before), asked, look.gone), False
    unreadable_only = awaiting.unreadable_only and needs <= {"unreadable"}
    if not look.answered:
        return Awaiting(unreadable_only, awaiting.ecc_uncorrected, awaiting.asked, awaiting.gone or look.gone), False
    reset = (
        awaiting.gone or look.ecc_uncorrected < awaiting.ecc_uncorrected or (awaiting.asked and look.recovery_action == NO_ACTION)
    )
    cleared = not needs and look.recovery_action == NO_ACTION
    if cleared and (reset or awaiting.unreadable_only):
        return None, True
    return Awaiting(
        unreadable_only,
        max(awaiting.ecc_uncorrected, look.ecc_uncorrected),
        awaiting.asked or asked,
        awaiting.gone,
    ), False
