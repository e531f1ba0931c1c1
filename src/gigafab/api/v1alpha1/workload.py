"""GpuWorkload: GPU work of a tenant, placed by the operator on a site that may hold its data."""

from __future__ import annotations

import enum
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field

from gigafab.api.v1alpha1.common import (
    AGE_COLUMN,
    ApiModel,
    Conditions,
    CrdKind,
    DataClass,
    Dns1123Label,
    condition_column,
    conditions_field,
    unique_by,
    unique_items,
)


class Criticality(enum.StrEnum):
    """How the work is treated when capacity is lost: critical moves first, preemptible waits."""

    CRITICAL = "critical"
    STANDARD = "standard"
    PREEMPTIBLE = "preemptible"


class WorkloadPhase(enum.StrEnum):
    PENDING = "Pending"
    PLACED = "Placed"
    RUNNING = "Running"
    FAILING_OVER = "FailingOver"
    FAILED = "Failed"


class Failover(ApiModel):
    enabled: bool | None = Field(
        default=None,
        description="Move the work to another lawful site when its site is lost or has no room left after "
        "a failure. Defaults to true for critical and standard work (critical work moves first, standard "
        "work where room is left) and to false for preemptible work, which waits for its site.",
    )


class GpuWorkloadSpec(ApiModel):
    """Desired state of a GpuWorkload: how many GPUs, what runs, what data it touches."""

    gpus: int = Field(ge=1, le=64, description="GPUs per replica, all on one node.")
    replicas: int = Field(default=1, ge=1, le=1024, description="Replicas, each with `gpus` GPUs.")
    template: dict[str, Any] = Field(
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="Pod template (metadata and spec) of each replica; the operator adds the GPU "
        "request (`gpus`, on the first container), the site's node affinity and its labels, and caps "
        "terminationGracePeriodSeconds at 30 (a move waits for the old copy's pods to stop). GPUs other "
        "containers ask for count too: a replica holds `gpus` plus theirs.",
    )
    data_class: DataClass | None = Field(
        default=None,
        description="Most sensitive class of data the work touches; defaults to the tenant's dataClass. "
        "The work runs only on sites certified for it.",
    )
    criticality: Criticality = Field(
        default=Criticality.STANDARD,
        description="critical work is moved first when a site is lost, standard where room is left, preemptible waits.",
    )
    sites: Annotated[list[Dns1123Label], AfterValidator(unique_items)] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Sites in order of preference; the work still runs only where the hard rules allow.",
    )
    failover: Failover = Field(default_factory=Failover, description="What happens when the site is lost.")


class SiteVerdict(ApiModel):
    site: Dns1123Label = Field(description="Name of the Site.")
    verdict: str = Field(max_length=64, description="Fits, or the hard rule the site failed, such as NotCertified.")
    reason: str = Field(max_length=1024, description="Why, in words.")


class Placement(ApiModel):
    site: Dns1123Label = Field(description="Site the work was placed on.")
    epoch: int = Field(ge=1, description="Placement epoch; raised at every move.")
    at: str = Field(max_length=64, description="When (RFC 3339).")
    reason: str = Field(max_length=1024, description="Why the work was placed or moved there.")
    from_site: Dns1123Label | None = Field(default=None, description="Site the work was moved away from, if it moved.")


class Move(ApiModel):
    """A new copy held until the old one has surely stopped: a move, or work placed again after a suspension."""

    from_site: Dns1123Label = Field(description="Site the work is leaving.")
    reason: str = Field(max_length=1024, description="Why it is leaving.")
    since: str = Field(max_length=64, description="When the move was decided (RFC 3339).")
    starts_after: str = Field(
        max_length=64,
        description="The new copy is held until then (RFC 3339): when the old site is lost or some of its "
        "nodes are Silent, their last contact plus fenceAfter plus a margin, by when their agents have "
        "stopped the old copy.",
    )
    await_old_copies: bool = Field(
        description="The new copy also waits until the old copy's pods on fromSite are seen to go: on "
        "every move but one away from a lost site (whose pods cannot be seen to go; startsAfter covers "
        "them). A pod on a Silent node counts as gone once that node's agent has surely fenced it."
    )
    released: bool = Field(default=False, description="The new copy has been started.")


class GpuWorkloadStatus(ApiModel):
    """Observed state of a GpuWorkload, written by the operator."""

    observed_generation: int | None = Field(default=None, ge=0, description="metadata.generation last acted upon.")
    site: Dns1123Label | None = Field(default=None, description="Site the work is placed on.")
    phase: WorkloadPhase | None = Field(default=None, description="Pending, Placed, Running, FailingOver or Failed.")
    epoch: int | None = Field(default=None, ge=0, description="Epoch of the current placement.")
    move: Move | None = Field(
        default=None,
        description="The move under way (FailingOver), or the wait of work placed again after a suspension "
        "for its last copy to stop.",
    )
    verdicts: Annotated[list[SiteVerdict], AfterValidator(unique_by(lambda v: v.site))] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["site"]},
        description="Every site's verdict at the last placement decision, the chosen site first.",
    )
    placements: list[Placement] = Field(
        default_factory=list,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
        description="Placements so far, oldest first (the last 32).",
    )
    conditions: Conditions = conditions_field("Placed and Running.")


class GpuWorkload(ApiModel):
    """A GpuWorkload object as a whole (``spec`` and ``status``); ``crd`` describes its CRD."""

    crd: ClassVar[CrdKind] = CrdKind(
        kind="GpuWorkload",
        plural="gpuworkloads",
        singular="gpuworkload",
        scope="Namespaced",
        short_names=("gw",),
        categories=("gigafab",),
        spec_model=GpuWorkloadSpec,
        status_model=GpuWorkloadStatus,
        printer_columns=(
            {"name": "GPUs", "type": "integer", "jsonPath": ".spec.gpus"},
            {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "Criticality", "type": "string", "jsonPath": ".spec.criticality"},
            {"name": "Site", "type": "string", "jsonPath": ".status.site"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Epoch", "type": "integer", "jsonPath": ".status.epoch"},
            condition_column("Placed"),
            AGE_COLUMN,
        ),
        description="A GpuWorkload is GPU work of a tenant: the operator places it on a site that may "
        "hold its data and has healthy GPUs and power to spare, and moves it when that site fails.",
    )

    spec: GpuWorkloadSpec
    status: GpuWorkloadStatus = Field(default_factory=GpuWorkloadStatus)
