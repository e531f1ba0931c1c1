"""Site: one data-centre location of the facility, with its jurisdiction and power budget."""

from __future__ import annotations

import enum
from typing import Annotated, ClassVar

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from gigafab.api.v1alpha1.common import (
    AGE_COLUMN,
    ApiModel,
    Conditions,
    CountryCode,
    CrdKind,
    DataClass,
    Dns1123Label,
    cel,
    condition_column,
    conditions_field,
    unique_items,
)

POWER_CAP_RULE = cel(
    "!has(self.powerCapKW) || self.powerCapKW <= self.powerBudgetKW",
    "powerCapKW must not exceed powerBudgetKW",
    field_path=".powerCapKW",
)


class Lifecycle(enum.StrEnum):
    """Lifecycle phase of a site: Planned (not yet used), Active, or Draining (no new work)."""

    PLANNED = "Planned"
    ACTIVE = "Active"
    DRAINING = "Draining"


class SiteSpec(ApiModel):
    """Desired state of a Site: where it is, what data it may hold and how much power it may draw."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [POWER_CAP_RULE]})

    zone: Dns1123Label | None = Field(
        default=None,
        description="Value of the node label topology.kubernetes.io/zone that selects the "
        "nodes of this site. Defaults to the name of the Site (the operator applies that default).",
    )
    jurisdiction: CountryCode = Field(
        description="Country whose law applies to the site, as an ISO 3166-1 alpha-2 code in upper case, such as NL or DE.",
    )
    data_classes: Annotated[list[DataClass], AfterValidator(unique_items)] = Field(
        default=[DataClass.PUBLIC, DataClass.INTERNAL],
        max_length=4,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Data classes the site is certified to hold: public, internal, personal, health.",
    )
    power_budget_kw: int = Field(
        alias="powerBudgetKW",
        ge=1,
        description="Electrical power in kW that the site's GPUs may draw in total.",
    )
    power_cap_kw: int | None = Field(
        default=None,
        alias="powerCapKW",
        ge=0,
        description="Demand-response cap in kW set at a grid operator's request; "
        "placement uses min(powerBudgetKW, powerCapKW). Must not exceed powerBudgetKW.",
    )
    lifecycle: Lifecycle = Field(
        default=Lifecycle.ACTIVE,
        description="Lifecycle phase: Planned (no workloads yet), Active, or Draining (no new workloads are placed here).",
    )
    gpu_power_watts: int = Field(
        default=700,
        ge=1,
        le=5000,
        description="Power per GPU in watts, used when a node carries no gigafab.nl/gpu-power-watts label.",
    )

    @model_validator(mode="after")
    def _cap_within_budget(self) -> SiteSpec:
        if self.power_cap_kw is not None and self.power_cap_kw > self.power_budget_kw:
            raise ValueError(POWER_CAP_RULE["message"])
        return self

    @property
    def effective_power_kw(self) -> int:
        """Power in kW that placement may use: the budget, lowered by a demand-response cap."""
        if self.power_cap_kw is None:
            return self.power_budget_kw
        return min(self.power_budget_kw, self.power_cap_kw)


class HealthGatewayStatus(ApiModel):
    """The terms the site's health gateway announced in etcd, kept where a restarted operator reads them."""

    fence_after_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Seconds without contact after which the site's agents stop their work (the gateway's "
        "fenceAfter). An operator that starts while the site has no gateway waits this long, plus a margin, "
        "before it starts the site's work elsewhere.",
    )
    lease_ttl_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Seconds the gateway's etcd lease lives without being refreshed.",
    )


class SiteStatus(ApiModel):
    """Observed state of a Site, written by the operator."""

    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation of the spec last acted upon.",
    )
    zone: Dns1123Label | None = Field(
        default=None,
        description="Zone label value in effect (spec.zone or the Site's name).",
    )
    nodes: int | None = Field(default=None, ge=0, description="Nodes labelled with the zone.")
    nodes_ready: int | None = Field(
        default=None,
        ge=0,
        description="Nodes of the zone whose Ready condition is True, that the health plane does not report "
        "Failed or Silent, and for which a health agent has vouched.",
    )
    gpus: int | None = Field(default=None, ge=0, description="GPUs allocatable on the site's nodes.")
    gpus_healthy: int | None = Field(
        default=None,
        ge=0,
        description="GPUs the health agents report Healthy on the site's ready nodes; a node no agent has vouched for adds none.",
    )
    power_draw_kw: float | None = Field(
        default=None,
        alias="powerDrawKW",
        ge=0,
        description="Power in kW of the GPUs placed on the site (GPUs times watts per GPU); "
        "kept within min(powerBudgetKW, powerCapKW).",
    )
    health_gateway: HealthGatewayStatus | None = Field(
        default=None,
        description="The terms the site's health gateway last announced, as the operator keeps them.",
    )
    conditions: Conditions = conditions_field("Observations of the site's state, such as Ready.")


class Site(ApiModel):
    """A Site object as a whole (``spec`` and ``status``); ``crd`` describes its CRD."""

    crd: ClassVar[CrdKind] = CrdKind(
        kind="Site",
        plural="sites",
        singular="site",
        scope="Cluster",
        short_names=("gsite",),
        categories=("gigafab",),
        spec_model=SiteSpec,
        status_model=SiteStatus,
        printer_columns=(
            {"name": "Zone", "type": "string", "jsonPath": ".status.zone"},
            {
                "name": "Jurisdiction",
                "type": "string",
                "jsonPath": ".spec.jurisdiction",
            },
            {"name": "Lifecycle", "type": "string", "jsonPath": ".spec.lifecycle"},
            {"name": "Nodes", "type": "integer", "jsonPath": ".status.nodes"},
            {"name": "GPUs", "type": "integer", "jsonPath": ".status.gpus"},
            {"name": "Healthy", "type": "integer", "jsonPath": ".status.gpusHealthy"},
            {"name": "Budget-kW", "type": "integer", "jsonPath": ".spec.powerBudgetKW"},
            condition_column("Ready"),
            AGE_COLUMN,
        ),
        description="A Site is one data-centre location of the facility: the nodes of one "
        "topology zone, under one jurisdiction, with a power budget.",
    )

    spec: SiteSpec
    status: SiteStatus = Field(default_factory=SiteStatus)
