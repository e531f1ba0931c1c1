"""Kubernetes quantities ("64", "500m", "512Gi") as exact decimals."""

from __future__ import annotations

from decimal import Decimal

from kubernetes.utils import parse_quantity


def quantity(value: str | int) -> Decimal:
    """The value of a quantity; raises ValueError for one that is not."""
    return Decimal(parse_quantity(value))  # type: ignore[no-untyped-call]
