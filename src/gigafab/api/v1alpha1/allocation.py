"""AllocationPolicy: how the facility's GPUs are divided over the allocation tracks."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AfterValidator, ConfigDict, Field

from gigafab.api.v1alpha1.common import (
    AGE_COLUMN,
    ApiModel,
    Conditions,
    CrdKind,
    cel,
    condition_column,
    conditions_field,
    unique_by,
)
from gigafab.api.v1alpha1.tenant import Track

SHARES_RULE = cel(
    "self.tracks.map(t, t.share).sum() == 100",
    "the shares of the tracks must add up to 100",
    field_path=".tracks",
)
ONE_POLICY_RULE = cel(
    "self.metadata.name == 'default'",
    "metadata.name must be default: there is one AllocationPolicy and it is named default",
)


class TrackShare(ApiModel):
    """One allocation track and its guarantee."""

    name: Track = Field(description="euro-hpc, national or regional.")
    share: int = Field(ge=0, le=100, description="Percent of the facility's healthy GPUs guaranteed to the track.")
    priority: int = Field(
        default=0, ge=0, le=1000, description="Higher is served first when capacity is scarce (regional, by policy)."
    )
    lending: bool = Field(
        default=True, description="Lend the idle part of the guarantee to other tracks; it is taken back when needed."
    )


class AllocationPolicySpec(ApiModel):
    """Desired division of capacity: the tracks, their shares, priorities and lending."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [SHARES_RULE]})

    tracks: Annotated[list[TrackShare], AfterValidator(unique_by(lambda t: t.name))] = Field(
        min_length=1,
        max_length=3,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="The tracks; their shares add up to 100.",
    )


class TrackStatus(ApiModel):
    name: Track = Field(description="The track.")
    guaranteed_gpus: int = Field(ge=0, description="Its share of the healthy GPUs of Active sites.")
    used_gpus: int = Field(ge=0, description="GPUs placed for its tenants' GpuWorkloads.")
    borrowed_gpus: int = Field(ge=0, description="GPUs used beyond the guarantee, lent by other tracks.")
    lent_gpus: int = Field(ge=0, description="GPUs of its idle guarantee that other tracks use.")


class AllocationPolicyStatus(ApiModel):
    """Observed use of the tracks, written by the operator."""

    observed_generation: int | None = Field(default=None, ge=0, description="metadata.generation last acted upon.")
    healthy_gpus: int | None = Field(default=None, ge=0, description="Healthy GPUs of the Active sites, to be divided.")
    tracks: Annotated[list[TrackStatus], AfterValidator(unique_by(lambda t: t.name))] = Field(
        default_factory=list,
        max_length=3,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Per track: guaranteed, used, borrowed and lent GPUs.",
    )
    conditions: Conditions = conditions_field("Ready: the guarantees are computed.")


class AllocationPolicy(ApiModel):
    """An AllocationPolicy object as a whole (``spec`` and ``status``); ``crd`` describes its CRD."""

    crd: ClassVar[CrdKind] = CrdKind(
        kind="AllocationPolicy",
        plural="allocationpolicies",
        singular="allocationpolicy",
        scope="Cluster",
        short_names=("ap",),
        categories=("gigafab",),
        spec_model=AllocationPolicySpec,
        status_model=AllocationPolicyStatus,
        printer_columns=(
            {"name": "Healthy-GPUs", "type": "integer", "jsonPath": ".status.healthyGpus"},
            condition_column("Ready"),
            AGE_COLUMN,
        ),
        description="The AllocationPolicy (one, named default) divides the facility's GPUs over the "
        "allocation tracks: each track's guaranteed share, its priority, and whether it lends what it "
        "does not use.",
        root_rules=(ONE_POLICY_RULE,),
    )

    spec: AllocationPolicySpec
    status: AllocationPolicyStatus = Field(default_factory=AllocationPolicyStatus)
