"""The public API of group gigafab.nl, version v1alpha1, as pydantic models.

The CRDs in ``crds/`` and ``charts/gigafab/crds/`` are generated from these models by
``gigafab crds generate`` (``gigafab.api.crdgen``).
"""

from gigafab.api.v1alpha1.allocation import (
    AllocationPolicy,
    AllocationPolicySpec,
    AllocationPolicyStatus,
    TrackShare,
    TrackStatus,
)
from gigafab.api.v1alpha1.common import (
    DNS1123_LABEL_PATTERN,
    DNS1123_SUBDOMAIN_PATTERN,
    EU_MEMBER_STATES,
    ISO_3166_ALPHA2,
    ApiModel,
    Condition,
    ConditionStatus,
    CrdKind,
    DataClass,
    PrinterColumn,
)
from gigafab.api.v1alpha1.egress import (
    EgressDestination,
    EgressDestinationSpec,
    EgressDestinationStatus,
    EgressPort,
    Protocol,
)
from gigafab.api.v1alpha1.site import Lifecycle, Site, SiteSpec, SiteStatus
from gigafab.api.v1alpha1.tenant import (
    MemberKind,
    MemberRole,
    Tenant,
    TenantMember,
    TenantQuota,
    TenantSpec,
    TenantStatus,
    Track,
)
from gigafab.api.v1alpha1.workload import (
    Criticality,
    Failover,
    GpuWorkload,
    GpuWorkloadSpec,
    GpuWorkloadStatus,
    Placement,
    SiteVerdict,
    WorkloadPhase,
)

GROUP = "gigafab.nl"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

KINDS: tuple[CrdKind, ...] = (Site.crd, Tenant.crd, EgressDestination.crd, GpuWorkload.crd, AllocationPolicy.crd)
"""The kinds of the API, in the order their CRDs are generated."""

__all__ = [
    "API_VERSION",
    "DNS1123_LABEL_PATTERN",
    "DNS1123_SUBDOMAIN_PATTERN",
    "EU_MEMBER_STATES",
    "GROUP",
    "ISO_3166_ALPHA2",
    "KINDS",
    "VERSION",
    "AllocationPolicy",
    "AllocationPolicySpec",
    "AllocationPolicyStatus",
    "ApiModel",
    "Condition",
    "ConditionStatus",
    "CrdKind",
    "Criticality",
    "DataClass",
    "EgressDestination",
    "EgressDestinationSpec",
    "EgressDestinationStatus",
    "EgressPort",
    "Failover",
    "GpuWorkload",
    "GpuWorkloadSpec",
    "GpuWorkloadStatus",
    "Lifecycle",
    "MemberKind",
    "MemberRole",
    "Placement",
    "PrinterColumn",
    "Protocol",
    "Site",
    "SiteSpec",
    "SiteStatus",
    "SiteVerdict",
    "Tenant",
    "TenantMember",
    "TenantQuota",
    "TenantSpec",
    "TenantStatus",
    "Track",
    "TrackShare",
    "TrackStatus",
    "WorkloadPhase",
]
