import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Health(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_UNSPECIFIED: _ClassVar[Health]
    HEALTH_HEALTHY: _ClassVar[Health]
    HEALTH_DEGRADED: _ClassVar[Health]
    HEALTH_FAILED: _ClassVar[Health]
    HEALTH_SILENT: _ClassVar[Health]
HEALTH_UNSPECIFIED: Health
HEALTH_HEALTHY: Health
HEALTH_DEGRADED: Health
HEALTH_FAILED: Health
HEALTH_SILENT: Health

class NodeIdentity(_message.Message):
    __slots__ = ("node", "site", "agent_version")
    NODE_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    node: str
    site: str
    agent_version: str
    def __init__(self, node: _Optional[str] = ..., site: _Optional[str] = ..., agent_version: _Optional[str] = ...) -> None: ...

class XidEvent(_message.Message):
    __slots__ = ("code", "time", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    time: _timestamp_pb2.Timestamp
    message: str
    def __init__(self, code: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[str] = ...) -> None: ...

class GpuState(_message.Message):
    __slots__ = ("index", "uuid", "model", "temperature_celsius", "power_watts", "ecc_corrected", "ecc_uncorrected", "remapped_rows_pending", "remapped_rows_failure", "nvlink_errors", "throttle_reasons", "xid_events", "health", "health_reason", "reset")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_CELSIUS_FIELD_NUMBER: _ClassVar[int]
    POWER_WATTS_FIELD_NUMBER: _ClassVar[int]
    ECC_CORRECTED_FIELD_NUMBER: _ClassVar[int]
    ECC_UNCORRECTED_FIELD_NUMBER: _ClassVar[int]
    REMAPPED_ROWS_PENDING_FIELD_NUMBER: _ClassVar[int]
    REMAPPED_ROWS_FAILURE_FIELD_NUMBER: _ClassVar[int]
    NVLINK_ERRORS_FIELD_NUMBER: _ClassVar[int]
    THROTTLE_REASONS_FIELD_NUMBER: _ClassVar[int]
    XID_EVENTS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    HEALTH_REASON_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    index: int
    uuid: str
    model: str
    temperature_celsius: float
    power_watts: float
    ecc_corrected: int
    ecc_uncorrected: int
    remapped_rows_pending: bool
    remapped_rows_failure: bool
    nvlink_errors: int
    throttle_reasons: int
    xid_events: _containers.RepeatedCompositeFieldContainer[XidEvent]
    health: Health
    health_reason: str
    reset: bool
    def __init__(self, index: _Optional[int] = ..., uuid: _Optional[str] = ..., model: _Optional[str] = ..., temperature_celsius: _Optional[float] = ..., power_watts: _Optional[float] = ..., ecc_corrected: _Optional[int] = ..., ecc_uncorrected: _Optional[int] = ..., remapped_rows_pending: _Optional[bool] = ..., remapped_rows_failure: _Optional[bool] = ..., nvlink_errors: _Optional[int] = ..., throttle_reasons: _Optional[int] = ..., xid_events: _Optional[_Iterable[_Union[XidEvent, _Mapping]]] = ..., health: _Optional[_Union[Health, str]] = ..., health_reason: _Optional[str] = ..., reset: _Optional[bool] = ...) -> None: ...

class ReportRequest(_message.Message):
    __slots__ = ("node", "sequence", "sent_at", "gpus")
    NODE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    node: NodeIdentity
    sequence: int
    sent_at: _timestamp_pb2.Timestamp
    gpus: _containers.RepeatedCompositeFieldContainer[GpuState]
    def __init__(self, node: _Optional[_Union[NodeIdentity, _Mapping]] = ..., sequence: _Optional[int] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., gpus: _Optional[_Iterable[_Union[GpuState, _Mapping]]] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ("ack", "interval", "fence")
    ACK_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    FENCE_FIELD_NUMBER: _ClassVar[int]
    ack: Acknowledgement
    interval: ReportInterval
    fence: Fence
    def __init__(self, ack: _Optional[_Union[Acknowledgement, _Mapping]] = ..., interval: _Optional[_Union[ReportInterval, _Mapping]] = ..., fence: _Optional[_Union[Fence, _Mapping]] = ...) -> None: ...

class Acknowledgement(_message.Message):
    __slots__ = ("sequence",)
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    def __init__(self, sequence: _Optional[int] = ...) -> None: ...

class ReportInterval(_message.Message):
    __slots__ = ("interval",)
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    interval: _duration_pb2.Duration
    def __init__(self, interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Fence(_message.Message):
    __slots__ = ("reason", "epoch")
    REASON_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    reason: str
    epoch: int
    def __init__(self, reason: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...
