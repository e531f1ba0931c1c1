"""The gRPC stubs are generated from proto/ and fresh; the protocol carries what it says."""

from __future__ import annotations

from gigafab import protogen
from gigafab.health.v1 import health_pb2


def test_generated_stubs_are_fresh() -> None:
    assert protogen.stale_files() == [], "run `gigafab proto generate`"


def test_report_round_trips_through_the_wire_format() -> None:
    report = health_pb2.ReportRequest(
        node=health_pb2.NodeIdentity(node="de-halm-gpu-000", site="de-halm", agent_version="0.1.0"),
        sequence=7,
        gpus=[
            health_pb2.GpuState(index=0, uuid="GPU-1", xid_events=[health_pb2.XidEvent(code=79)], health=health_pb2.HEALTH_FAILED)
        ],
    )
    decoded = health_pb2.ReportRequest.FromString(report.SerializeToString())
    assert decoded == report
    assert decoded.gpus[0].xid_events[0].code == 79


def test_a_response_carries_one_directive() -> None:
    response = health_pb2.ReportResponse(ack=health_pb2.Acknowledgement(sequence=3))
    response.fence.reason = "gateway lost"
    assert response.WhichOneof("directive") == "fence"
