"""Pieces shared by the kinds of gigafab.nl/v1alpha1: base model, enums, conditions, types.

The models here are the single source of the public API: the CRD YAML is generated from them
(see ``gigafab.api.crdgen``) and the operator parses ``spec`` and ``status`` with them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired, Self, TypedDict, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

T = TypeVar("T")
H = TypeVar("H", bound=Hashable)

DNS1123_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""A DNS-1123 label (RFC 1123): lower-case alphanumerics and '-', at most 63 characters."""
DNS1123_LABEL_MAX_LENGTH = 63
DNS1123_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""A DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253 characters."""
DNS1123_SUBDOMAIN_MAX_LENGTH = 253

# fmt: off
# All officially assigned ISO 3166-1 alpha-2 codes (249), in alphabetical order.
ISO_3166_ALPHA2: tuple[str, ...] = (
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU",
    "AW", "AX", "AZ", "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL",
    "BM", "BN", "BO", "BQ", "BR", "BS", "BT", "BV", "BW", "BY", "BZ", "CA", "CC",
    "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU", "CV",
    "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE", "EG",
    "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD",
    "GE", "GF", "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT",
    "GU", "GW", "GY", "HK", "HM", "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM",
    "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM", "JO", "JP", "KE", "KG", "KH",
    "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC", "LI", "LK",
    "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH",
    "MK", "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW",
    "MX", "MY", "MZ", "NA", "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR",
    "NU", "NZ", "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM", "PN", "PR",
    "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW", "SA", "SB", "SC",
    "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL",
    "TM", "TN", "TO", "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY",
    "UZ", "VA", "VC", "VE", "VG", "VI", "VN", "VU", "WF", "WS", "YE", "YT", "ZA",
    "ZM", "ZW",
)

# The 27 member states of the European Union, by ISO code (Greece is GR, not EL).
EU_MEMBER_STATES: frozenset[str] = frozenset(
    {
        "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR",
        "HR", "HU", "IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO",
        "SE", "SI", "SK",
    }
)
# fmt: on

JURISDICTION_MESSAGE = "jurisdiction must be an ISO 3166-1 alpha-2 country code in upper case, such as NL or DE"
# Kubernetes resource.Quantity grammar: signed number, then a binary-SI, decimal-SI or exponent.
QUANTITY_PATTERN = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$"


class DataClass(enum.StrEnum):
    """Sensitivity class of data: public, internal, personal (GDPR) or health (GDPR art. 9)."""

    PUBLIC = "public"
    INTERNAL = "internal"
    PERSONAL = "personal"
    HEALTH = "health"


class ConditionStatus(enum.StrEnum):
    """Status of a condition: True, False or Unknown."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


def conditions_field(description: str) -> Any:
    """The ``status.conditions`` field of every kind: Kubernetes conditions, one per type."""
    return Field(
        default_factory=list, max_length=CONDITIONS_MAX_ITEMS, json_schema_extra=CONDITIONS_EXTRA, description=description
    )


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, Any]:
    """One entry of ``x-kubernetes-validations``: a CEL rule checked by the apiserver."""
    entry: dict[str, Any] = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def unique_items(values: list[H]) -> list[H]:
    """Reject a list that repeats an item (the CRD declares it ``x-kubernetes-list-type: set``)."""
    _reject_duplicates(values)
    return values


def unique_by(key: Callable[[T], Hashable]) -> Callable[[list[T]], list[T]]:
    """Reject a list in which two items have the same key (``x-kubernetes-list-type: map``)."""

    def check(values: list[T]) -> list[T]:
        _reject_duplicates([key(value) for value in values])
        return values

    return check


def _reject_duplicates(keys: Sequence[Hashable]) -> None:
    duplicates = sorted({str(k) for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"duplicate entries: {', '.join(duplicates)}")


def _check_country(code: str) -> str:
    if code not in _ISO_CODES:
        raise ValueError(JURISDICTION_MESSAGE)
    return code


def _check_timestamp(value: str) -> str:
    if datetime.fromisoformat(value).tzinfo is None:  # ValueError when malformed, too
        raise ValueError("must be an RFC 3339 time with an offset, such as 2025-01-02T03:04:05Z")
    return value


_ISO_CODES = frozenset(ISO_3166_ALPHA2)
JURISDICTION_RULE = cel(
    "self in [" + ", ".join(f"'{code}'" for code in ISO_3166_ALPHA2) + "]",
    JURISDICTION_MESSAGE,
)

CountryCode = Annotated[
    str,
    AfterValidator(_check_country),
    Field(
        min_length=2,
        max_length=2,
        json_schema_extra={"x-kubernetes-validations": [JURISDICTION_RULE]},
    ),
]
"""An ISO 3166-1 alpha-2 country code, checked by CEL in the CRD and by pydantic here."""

Dns1123Label = Annotated[str, Field(max_length=DNS1123_LABEL_MAX_LENGTH, pattern=DNS1123_LABEL_PATTERN)]
Dns1123Subdomain = Annotated[
    str,
    Field(max_length=DNS1123_SUBDOMAIN_MAX_LENGTH, pattern=DNS1123_SUBDOMAIN_PATTERN),
]


class ApiModel(BaseModel):
    """Base of every API model: camelCase API names as aliases, snake_case Python attributes."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    @classmethod
    def from_body(cls, body: Mapping[str, Any] | None) -> Self:
        """Parse a ``spec`` or ``status`` mapping as read from the apiserver (None means empty)."""
        return cls.model_validate(dict(body or {}))

    def to_body(self) -> dict[str, Any]:
        """Render with API names, as JSON values, leaving out unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Condition(ApiModel):
    """One aspect of the observed state of an object, in the shape of metav1.Condition."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Type of the condition in CamelCase, such as Ready.",
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation of the object that the condition was set for.",
    )
    last_transition_time: Annotated[str, AfterValidator(_check_timestamp)] = Field(
        max_length=64,
        json_schema_extra={"format": "date-time"},
        description="When the condition last changed from one status to another (RFC 3339).",
    )
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Programmatic identifier in CamelCase of the reason for the last transition.",
    )
    message: str = Field(
        max_length=32768,
        description="Human-readable details of the last transition; may be empty.",
    )


CONDITIONS_EXTRA: dict[str, Any] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}
CONDITIONS_MAX_ITEMS = 32


class PrinterColumn(TypedDict):
    """One ``additionalPrinterColumns`` entry of a CRD version (names as in the CRD)."""

    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    jsonPath: str
    priority: NotRequired[int]
    description: NotRequired[str]


def condition_column(condition_type: str) -> PrinterColumn:
    """A column with the status of one condition, such as Ready."""
    return {
        "name": condition_type,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition_type}")].status',
        "description": f"Status of the {condition_type} condition.",
    }


AGE_COLUMN: PrinterColumn = {
    "name": "Age",
    "type": "date",
    "jsonPath": ".metadata.creationTimestamp",
}


@dataclass(frozen=True)
class CrdKind:
    """What the CRD generator needs to know about one kind beyond its spec and status models."""

    kind: str
    plural: str
    singular: str
    scope: Literal["Cluster", "Namespaced"]
    short_names: tuple[str, ...]
    categories: tuple[str, ...]
    spec_model: type[ApiModel]
    status_model: type[ApiModel]
    printer_columns: tuple[PrinterColumn, ...]
    description: str
    root_rules: tuple[dict[str, Any], ...] = ()
    """CEL rules on the whole object (they may read ``metadata``)."""

    def __post_init__(self) -> None:
        if "gigafab" not in self.categories:
            raise ValueError(f"{self.kind}: categories must include 'gigafab'")
        if self.singular != self.kind.lower():
            raise ValueError(f"{self.kind}: singular must be the lower-case kind")

    @property
    def list_kind(self) -> str:
        """Kind of the list of these objects, such as SiteList."""
        return f"{self.kind}List"


Conditions = Annotated[list[Condition], AfterValidator(unique_by(lambda c: c.type))]
"""The type of every kind's ``status.conditions`` (see ``conditions_field``)."""
