"""EgressDestination: a named set of networks outside the cluster that tenants may reach."""

from __future__ import annotations

import enum
import ipaddress
from typing import Annotated, ClassVar

from pydantic import AfterValidator, Field

from gigafab.api.v1alpha1.common import (
    AGE_COLUMN,
    ApiModel,
    Conditions,
    CountryCode,
    CrdKind,
    cel,
    condition_column,
    conditions_field,
    unique_by,
    unique_items,
)

CIDR_MESSAGE = "each entry of cidrs must be a CIDR such as 192.0.2.0/24 or 2001:db8::/32"
CIDR_RULE = cel("isCIDR(self)", CIDR_MESSAGE)
SHORTEST_IPV4_PREFIX = 16
"""The broadest IPv4 network one entry may name: a /16 (65,536 addresses). A destination is a service
(an object store, a model registry), and a service's published ranges are /16 to /24 (a cloud region
publishes many such ranges: list those of the service, up to 64 entries). A broader entry is nearly
always a mistake that opens a provider's whole allocation, or the internet (0.0.0.0/0), on every port."""
SHORTEST_IPV6_PREFIX = 32
"""The broadest IPv6 network one entry may name: a /32, what a registry allocates to a whole provider;
a cloud region's service ranges are /36 to /64."""
BREADTH_MESSAGE = (
    f"each entry of cidrs must be no broader than /{SHORTEST_IPV4_PREFIX} (IPv4) or /{SHORTEST_IPV6_PREFIX} (IPv6): "
    "name the networks of the destination itself, not a whole provider or the internet"
)
BREADTH_RULE = cel(
    f"!isCIDR(self) || cidr(self).prefixLength() >= "
    f"(cidr(self).ip().family() == 4 ? {SHORTEST_IPV4_PREFIX} : {SHORTEST_IPV6_PREFIX})",
    BREADTH_MESSAGE,
)


class Protocol(enum.StrEnum):
    """Transport protocol of a port: TCP, UDP or SCTP."""

    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


def _check_cidr(value: str) -> str:
    """Accept what CEL's isCIDR accepts (Go's netip.ParsePrefix, less IPv4-mapped IPv6), no broader than
    the shortest prefix of its family (BREADTH_RULE)."""
    address, slash, length = value.partition("/")
    if not slash or not (length.isascii() and length.isdigit()) or length != str(int(length)):
        raise ValueError(CIDR_MESSAGE)
    try:
        ipaddress.ip_network(value, strict=False)
        parsed = ipaddress.ip_address(address)
    except ValueError as error:
        raise ValueError(CIDR_MESSAGE) from error
    if isinstance(parsed, ipaddress.IPv6Address) and (parsed.scope_id or parsed.ipv4_mapped):
        raise ValueError(CIDR_MESSAGE)
    shortest = SHORTEST_IPV4_PREFIX if parsed.version == 4 else SHORTEST_IPV6_PREFIX
    if int(length) < shortest:
        raise ValueError(BREADTH_MESSAGE)
    return value


Cidr = Annotated[
    str,
    AfterValidator(_check_cidr),
    Field(max_length=64, json_schema_extra={"x-kubernetes-validations": [CIDR_RULE, BREADTH_RULE]}),
]


class EgressPort(ApiModel):
    """One destination port, with its protocol."""

    port: int = Field(ge=1, le=65535, description="Port number, 1 to 65535.")
    protocol: Protocol = Field(default=Protocol.TCP, description="TCP, UDP or SCTP.")


class EgressDestinationSpec(ApiModel):
    """Desired state of an EgressDestination: the networks, their jurisdiction and ports."""

    cidrs: Annotated[list[Cidr], AfterValidator(unique_items)] = Field(
        min_length=1,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Networks of the destination as CIDRs, such as 192.0.2.0/24 or 2001:db8::/32; none broader "
        f"than /{SHORTEST_IPV4_PREFIX} (IPv4) or /{SHORTEST_IPV6_PREFIX} (IPv6). The operator refuses a destination "
        "in the EU whose networks overlap those of a destination outside it, and leaves the cluster's own networks out "
        "of every NetworkPolicy.",
    )
    jurisdiction: CountryCode = Field(
        description="Country whose law applies where the destination processes data, as an "
        "ISO 3166-1 alpha-2 code in upper case, such as NL or DE.",
    )
    ports: Annotated[list[EgressPort], AfterValidator(unique_by(lambda p: f"{p.port}/{p.protocol}"))] = Field(
        default_factory=list,
        max_length=32,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["port", "protocol"],
        },
        description="Ports that may be reached on the destination. Empty or absent means all ports.",
    )
    description: str | None = Field(
        default=None,
        max_length=1024,
        description='What this destination is, for people, such as "SURF object store".',
    )


class EgressDestinationStatus(ApiModel):
    """Observed state of an EgressDestination, written by the operator."""

    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation of the spec last acted upon.",
    )
    conditions: Conditions = conditions_field("Observations of the destination's state, such as Accepted.")


class EgressDestination(ApiModel):
    """An EgressDestination object as a whole (``spec`` and ``status``); ``crd`` describes its CRD."""

    crd: ClassVar[CrdKind] = CrdKind(
        kind="EgressDestination",
        plural="egressdestinations",
        singular="egressdestination",
        scope="Cluster",
        short_names=("egd",),
        categories=("gigafab",),
        spec_model=EgressDestinationSpec,
        status_model=EgressDestinationStatus,
        printer_columns=(
            {
                "name": "Jurisdiction",
                "type": "string",
                "jsonPath": ".spec.jurisdiction",
            },
            {"name": "CIDRs", "type": "string", "jsonPath": ".spec.cidrs"},
            condition_column("Accepted"),
            AGE_COLUMN,
        ),
        description="An EgressDestination names networks outside the cluster, with the "
        "jurisdiction they are in, that tenants may be allowed to reach.",
    )

    spec: EgressDestinationSpec
    status: EgressDestinationStatus = Field(default_factory=EgressDestinationStatus)
