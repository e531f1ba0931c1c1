"""Whether a destination's jurisdiction keeps data under European law."""

from __future__ import annotations

from gigafab.operator.conditions import Condition

from gigafab.api.v1alpha1.common import EU_MEMBER_STATES


def egress_acceptance(jurisdiction: str) -> Condition:
    """Accepted only for EU member states; the reason says why, for the audit trail."""
    if jurisdiction in EU_MEMBER_STATES:
        return Condition("Accepted", True, "EUJurisdiction", f"{jurisdiction} is an EU member state")
    return Condition(
        "Accepted",
        False,
        "OutsideEU",
        f"{jurisdiction} is not an EU member state: tenant traffic may only reach European "
        "destinations, so no NetworkPolicy will ever allow this destination",
    )
