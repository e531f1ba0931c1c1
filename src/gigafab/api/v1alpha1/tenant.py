"""Tenant: a user community with namespaces, a GPU quota and rules on where its data may go."""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field

from gigafab.api.v1alpha1.common import (
    AGE_COLUMN,
    QUANTITY_PATTERN,
    ApiModel,
    Conditions,
    CrdKind,
    DataClass,
    Dns1123Label,
    Dns1123Subdomain,
    cel,
    condition_column,
    conditions_field,
    unique_by,
    unique_items,
)

NAMESPACES_RULE = cel(
    "self.all(n, !n.startsWith('kube-') && n != 'default' && !n.startsWith('gigafab-system'))",
    "namespaces must not be default, kube-* or gigafab-system",
)
CPU_MESSAGE = "cpu must be a Kubernetes quantity such as 64 or 500m"
MEMORY_MESSAGE = "memory must be a Kubernetes quantity such as 512Gi"
_QUANTITY = re.compile(QUANTITY_PATTERN)


class Track(enum.StrEnum):
    """Programme through which the tenant was admitted."""

    EURO_HPC = "euro-hpc"
    NATIONAL = "national"
    REGIONAL = "regional"


class MemberKind(enum.StrEnum):
    """Kind of subject: a User or a Group, as in an RBAC subject."""

    USER = "User"
    GROUP = "Group"


class MemberRole(enum.StrEnum):
    """Role of a member in the tenant's namespaces: admin, member or viewer."""

    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


def _reserved_namespace(name: str) -> bool:
    return name == "default" or name.startswith(("kube-", "gigafab-system"))


def _check_namespaces(names: list[str]) -> list[str]:
    if any(_reserved_namespace(name) for name in names):
        raise ValueError(NAMESPACES_RULE["message"])
    return unique_items(names)


def _quantity(message: str) -> AfterValidator:
    def check(value: int | str) -> int | str:
        if isinstance(value, str) and not _QUANTITY.fullmatch(value):
            raise ValueError(message)
        return value

    return AfterValidator(check)


def _quantity_extra(message: str) -> dict[str, Any]:
    """Schema extras of an int-or-string quantity (the generator keeps the anyOf form)."""
    return {
        "x-kubernetes-int-or-string": True,
        # isQuantity alone takes strings without a number ("Gi", "m", "+"); the pattern is the model's
        "x-kubernetes-validations": [
            cel(f"type(self) == int || (self.matches(r'{QUANTITY_PATTERN}') && isQuantity(self))", message)
        ],
    }


class TenantMember(ApiModel):
    """A user or group that may use the tenant's namespaces, with its role there."""

    kind: MemberKind = Field(default=MemberKind.USER, description="User or Group.")
    name: str = Field(
        min_length=1,
        max_length=253,
        description="Name of the user or group as the apiserver authenticates it.",
    )
    role: MemberRole = Field(
        default=MemberRole.MEMBER,
        description="admin (manage workloads and members' access), member (run workloads) or viewer (read only).",
    )


class TenantQuota(ApiModel):
    """Resources the tenant may use at once, over all its namespaces."""

    gpus: int = Field(ge=0, description="GPUs the tenant's workloads may request in total.")
    cpu: Annotated[int | str, _quantity(CPU_MESSAGE)] | None = Field(
        default=None,
        json_schema_extra=_quantity_extra(CPU_MESSAGE),
        description="CPU the tenant's workloads may request in total, as a Kubernetes "
        "quantity such as 64 or 500m. Absent means no CPU limit.",
    )
    memory: Annotated[int | str, _quantity(MEMORY_MESSAGE)] | None = Field(
        default=None,
        json_schema_extra=_quantity_extra(MEMORY_MESSAGE),
        description="Memory the tenant's workloads may request in total, as a Kubernetes "
        "quantity such as 512Gi. Absent means no memory limit.",
    )


class TenantSpec(ApiModel):
    """Desired state of a Tenant: who its members are, its namespaces, quota and data rules."""

    track: Track = Field(description="Programme through which the tenant was admitted.")
    members: Annotated[list[TenantMember], AfterValidator(unique_by(lambda m: f"{m.kind}/{m.name}"))] = Field(
        default=[],
        max_length=256,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["kind", "name"],
        },
        description="Users and groups of the tenant; each kind and name at most once.",
    )
    namespaces: Annotated[list[Dns1123Label], AfterValidator(_check_namespaces)] = Field(
        default=[],
        max_length=32,
        json_schema_extra={
            "x-kubernetes-list-type": "set",
            "x-kubernetes-validations": [NAMESPACES_RULE],
        },
        description="Namespaces of the tenant, created and owned by the operator. Empty means "
        "one namespace named after the tenant. Must not be default, kube-* or gigafab-system.",
    )
    quota: TenantQuota = Field(description="Resources the tenant may use at once.")
    data_class: DataClass = Field(
        default=DataClass.INTERNAL,
        description="Most sensitive class of data the tenant processes; its workloads run only on sites certified for it.",
    )
    allowed_sites: Annotated[list[Dns1123Label], AfterValidator(unique_items)] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Names of the Sites the tenant's workloads may run on. Empty or absent "
        "means any site whose jurisdiction and data classes allow it.",
    )
    egress: Annotated[list[Dns1123Subdomain], AfterValidator(unique_items)] = Field(
        default=[],
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Names of the EgressDestinations the tenant's workloads may connect to "
        "outside the cluster. Empty means no egress.",
    )


class TenantStatus(ApiModel):
    """Observed state of a Tenant, written by the operator."""

    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation of the spec last acted upon.",
    )
    namespaces: list[Dns1123Label] = Field(
        default_factory=list,
        max_length=32,
        description="Namespaces that the operator manages for the tenant.",
    )
    gpus_used: int | None = Field(
        default=None,
        ge=0,
        description="GPUs requested by the tenant's running workloads.",
    )
    gpu_quota: int | None = Field(
        default=None,
        ge=0,
        description="GPU quota in effect (spec.quota.gpus as last applied).",
    )
    conditions: Conditions = conditions_field("Observations of the tenant's state, such as Ready.")


class Tenant(ApiModel):
    """A Tenant object as a whole (``spec`` and ``status``); ``crd`` describes its CRD."""

    crd: ClassVar[CrdKind] = CrdKind(
        kind="Tenant",
        plural="tenants",
        singular="tenant",
        scope="Cluster",
        short_names=("tn",),
        categories=("gigafab",),
        spec_model=TenantSpec,
        status_model=TenantStatus,
        printer_columns=(
            {"name": "Track", "type": "string", "jsonPath": ".spec.track"},
            {"name": "DataClass", "type": "string", "jsonPath": ".spec.dataClass"},
            {"name": "GPUs", "type": "integer", "jsonPath": ".spec.quota.gpus"},
            {"name": "Used", "type": "integer", "jsonPath": ".status.gpusUsed"},
            condition_column("Ready"),
            AGE_COLUMN,
        ),
        description="A Tenant is a user community of the facility: its members, namespaces, "
        "GPU quota, data class and permitted sites and egress destinations.",
    )

    spec: TenantSpec
    status: TenantStatus = Field(default_factory=TenantStatus)
