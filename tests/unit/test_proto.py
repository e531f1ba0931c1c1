"""The gRPC stubs are generated from proto/ and fresh; the protocol carries what it says."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from gigafab import protogen
from gigafab.health.v1 import health_pb2
from gigafab.local.layout import Layout

ROOT = Path(__file__).resolve().parents[2]


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


def _buf(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    buf = Layout.default().binary("buf")
    return subprocess.run([str(buf), *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120)


def test_proto_passes_buf_lint() -> None:
    answer = _buf("lint", cwd=ROOT)
    assert answer.returncode == 0, answer.stdout + answer.stderr


def test_proto_has_no_breaking_change_since_the_last_release() -> None:
    answer = _buf("breaking", "--against", "proto/releases/health-v1.binpb", cwd=ROOT)
    assert answer.returncode == 0, answer.stdout + answer.stderr


def test_a_breaking_change_is_caught(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    source = tmp_path / "proto" / "gigafab" / "health" / "v1" / "health.proto"
    source.write_text(source.read_text().replace("uint64 sequence = 2;", "uint64 sequence_number = 2;"))
    answer = _buf("breaking", "--against", str(ROOT / "proto" / "releases" / "health-v1.binpb"), cwd=tmp_path)
    assert answer.returncode != 0
    assert "sequence" in answer.stdout + answer.stderr
