"""The real health gateway (``gigafab gateway``, its own process, a real etcd behind it) fuzzed with hostile input,
taking its connections in each of its two ways: grpc.aio in its own process, and its compiled edge
(``gigafab-edge``, which carries the frames; the gateway still judges them).

Invariant: whatever a peer sends -- random bytes as a report, random well-formed protobuf, reports cut
short, frames over 64 KiB and over 1 MiB, random bytes to the TLS port, malformed HTTP/2 under a valid
client certificate, TLS without a trusted certificate -- the gateway never crashes: its process lives and
its gRPC health check says SERVING. It answers every report call with exactly the status a model of its
rules predicts (taken and acknowledged, or INVALID_ARGUMENT, PERMISSION_DENIED, RESOURCE_EXHAUSTED; never
UNKNOWN, INTERNAL or a hang), counts every refusal under its reason in its metrics, speaks no HTTP/2 to a
peer without a trusted certificate, leaves no hostile stream open, and keeps serving a good agent: after
every hostile batch the agent's GPU change, sent on the one stream it holds for the whole module, is
acknowledged and in etcd; at the end etcd's history holds every change it made, in order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import queue
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aetcd
import grpc
import pytest
from gigafab.agents.gateway import MAX_FRAME_BYTES, MAX_REPORT_BYTES
from gigafab.agents.gateway import STATUS_OF as GATEWAY_STATUS
from gigafab.agents.ledger import SEQUENCE_AHEAD_ALLOWED_US
from gigafab.agents.records import node_key, site_prefix
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2 as checks_pb2
from grpc_health.v1 import health_pb2_grpc as checks_grpc
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from gigafab.health.v1 import health_pb2, health_pb2_grpc
from gigafab.local.pki import Authority, Pair, node_identity
from tests.integration import wire

SITE = "zeewolde"
GOOD_NODE = "zeewolde-gpu-000"
FAMILIES = ("garbage", "protobuf", "truncated", "oversized", "http2")
INTRUDERS = {family: f"{SITE}-gpu-{number:03d}" for number, family in enumerate(FAMILIES, 90)}
"""A node of the site per family of attacks that turns hostile (a valid certificate of its own)."""
SERVICE = "gigafab.health.v1.HealthService"
UINT64_MAX = 2**64 - 1
CALL_TIMEOUT = 20.0
"""Seconds a call or connection may take before it counts as a hang."""
HEARTBEAT = 0.25
"""Seconds between the good agent's reports."""
STATUS_OF = {
    **GATEWAY_STATUS,
    "dropped": grpc.StatusCode.RESOURCE_EXHAUSTED,  # by gRPC itself, not counted by the gateway
}
HEALTHY, DEGRADED, FAILED = health_pb2.HEALTH_HEALTHY, health_pb2.HEALTH_DEGRADED, health_pb2.HEALTH_FAILED
NAMES = {HEALTHY: "Healthy", DEGRADED: "Degraded", FAILED: "Failed"}
REASONS = {HEALTHY: "", DEGRADED: "XID 63", FAILED: "XID 79"}
NEXT = {HEALTHY: DEGRADED, DEGRADED: FAILED, FAILED: HEALTHY}
TRIED: collections.Counter[str] = collections.Counter()
"""Hostile inputs the gateway took, by family (frames it read, connections it accepted)."""
TAKEN: collections.Counter[str] = collections.Counter()
"""Hostile reports the gateway took as good ones (they were), by family."""
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],  # a remote gateway and frames up to 3 MiB
)
T = TypeVar("T")


# -- the gateway, etcd, and the good agent ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def secure_channel(port: int, pki: Authority, pair: Pair) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(pki.pair.cert.read_bytes(), pair.key.read_bytes(), pair.cert.read_bytes())
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=[("grpc.ssl_target_name_override", "localhost")])


class Etcd:
    """An aetcd client on a loop of its own, for a synchronous test."""

    def __init__(self, port: int) -> None:
        self.runner = asyncio.Runner()
        self.client = self.run(self._connect(port))

    @staticmethod
    async def _connect(port: int) -> aetcd.Client:
        return aetcd.Client(host="127.0.0.1", port=port)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coroutine)

    def document(self, node: str) -> tuple[dict[str, Any], int]:
        """The node's record and the revision that wrote it."""
        item = self.run(self.client.get(node_key(SITE, node)))
        assert item is not None, f"nothing in etcd for {node}"
        return json.loads(item.value), item.mod_revision

    def history(self, node: str, first: int, last: int) -> list[dict[str, Any]]:
        """Every version of the node's record written from revision ``first`` to ``last``, oldest first."""
        return self.run(asyncio.wait_for(self._history(node, first, last), CALL_TIMEOUT))

    async def _history(self, node: str, first: int, last: int) -> list[dict[str, Any]]:
        watch = await self.client.watch(node_key(SITE, node), start_revision=first)
        documents = []
        async for event in watch:
            documents.append(json.loads(event.kv.value))
            if event.kv.mod_revision >= last:
                break
        await watch.cancel()
        return documents

    def close(self) -> None:
        self.run(self.client.close())
        self.runner.close()


@dataclass
class Gateway:
    """``gigafab gateway`` running as its own process."""

    process: subprocess.Popen[bytes]
    port: int
    metrics_url: str
    log: Path
    frontend: str
    """How it takes connections: grpc.aio, or its edge."""

    def assert_alive(self) -> None:
        """Its process runs, and it logged no Python error (an exception in a background task, say)."""
        code, output = self.process.poll(), self.log.read_text(errors="replace")
        assert code is None, f"the gateway exited with {code}:\n{output[-3000:]}"
        errors = [line for line in output.splitlines() if "Traceback" in line or " ERROR " in line]
        assert not errors, f"the gateway logged errors:\n{output[-3000:]}"

    def health(self, channel: grpc.Channel) -> int:
        request = checks_pb2.HealthCheckRequest(service=SERVICE)
        status: int = checks_grpc.HealthStub(channel).Check(request, timeout=CALL_TIMEOUT).status
        return status

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(self.metrics_url, timeout=CALL_TIMEOUT) as answer:
            text = answer.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def refusals(self) -> dict[str, int]:
        """``gigafab_gateway_rejected_calls_total`` by reason."""
        metrics = self.metrics()
        reasons = [reason for reason in STATUS_OF if reason != "dropped"]
        key = "gigafab_gateway_rejected_calls_total"
        return {reason: int(metrics.get((key, (("reason", reason), ("site", SITE))), 0)) for reason in reasons}

    def reports(self) -> int:
        return int(self.metrics()[("gigafab_gateway_reports_total", (("site", SITE),))])

    def connected(self) -> int:
        return int(self.metrics()[("gigafab_gateway_connected_agents", (("site", SITE),))])

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def good_report(sequence: int, gpus: list[int]) -> health_pb2.ReportRequest:
    sent = Timestamp()
    sent.FromNanoseconds(time.time_ns())
    return health_pb2.ReportRequest(
        node=health_pb2.NodeIdentity(node=GOOD_NODE, site=SITE, agent_version="fuzz-test"),
        sequence=sequence,
        sent_at=sent,
        gpus=[
            health_pb2.GpuState(index=index, uuid=f"GPU-{index}", health=health, health_reason=REASONS[health])
            for index, health in enumerate(gpus)
        ],
    )


def record_of(gpus: list[int]) -> dict[str, Any]:
    """What etcd must hold for the good node when its GPUs are ``gpus``."""
    return {"health": NAMES[max(gpus)], "gpus": {str(index): NAMES[health] for index, health in enumerate(gpus)}}


class GoodAgent:
    """A well-behaved node: one Report stream for the whole module, a report every ``HEARTBEAT`` seconds
    (repeats, which the gateway takes silently), and a GPU change whenever asked."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.gpus = [HEALTHY] * 4
        self.sequence = time.time_ns() // 1000
        self.lock = threading.Lock()
        self.outbox: queue.Queue[health_pb2.ReportRequest | None] = queue.Queue()
        self.answers: queue.Queue[health_pb2.ReportResponse | grpc.RpcError] = queue.Queue()
        self.recorded: list[tuple[int, dict[str, Any]]] = []
        """(etcd revision, record) of the first report and of every change, as read back after its acknowledgement."""
        self.stopped = threading.Event()
        self.call = health_pb2_grpc.HealthServiceStub(channel).Report(iter(self.outbox.get, None))
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.heart = threading.Thread(target=self._beat, daemon=True)

    def report(self, flip: int | None = None) -> int:
        """Send the current state (after turning GPU ``flip`` to its next health); the report's sequence."""
        with self.lock:
            if flip is not None:
                self.gpus[flip] = NEXT[self.gpus[flip]]
            self.sequence += 1
            self.outbox.put(good_report(self.sequence, self.gpus))
            return self.sequence

    def _beat(self) -> None:
        while not self.stopped.wait(HEARTBEAT):
            self.report()

    def _read(self) -> None:
        try:
            for answer in self.call:
                self.answers.put(answer)
        except grpc.RpcError as broken:
            self.answers.put(broken)

    def acknowledged(self, sequence: int) -> None:
        """Wait for the acknowledgement of ``sequence`` (repeats before it are not acknowledged)."""
        deadline = time.monotonic() + CALL_TIMEOUT
        while True:
            try:
                answer = self.answers.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"report {sequence} of the good agent was not acknowledged within {CALL_TIMEOUT} s")
            assert isinstance(answer, health_pb2.ReportResponse), f"the good agent's stream broke: {answer}"
            assert answer.WhichOneof("directive") == "ack", f"the good agent was told {answer}"
            if answer.ack.sequence == sequence:
                return

    def change_and_check(self, etcd: Etcd) -> None:
        """Change one GPU's health; the gateway must acknowledge it, and an acknowledged change is in etcd."""
        flip = len(self.recorded) % len(self.gpus)
        sequence = self.report(flip)
        self.acknowledged(sequence)
        self.check_recorded(etcd)

    def check_recorded(self, etcd: Etcd) -> None:
        with self.lock:
            expected = record_of(self.gpus)
        document, revision = etcd.document(GOOD_NODE)
        assert {key: document[key] for key in expected} == expected, "an acknowledged change must be in etcd"
        self.recorded.append((revision, expected))

    def stop(self) -> None:
        self.stopped.set()
        self.heart.join()
        self.outbox.put(None)
        self.reader.join(CALL_TIMEOUT)


@dataclass
class Plane:
    """Everything a hostile batch is checked against."""

    gateway: Gateway
    agent: GoodAgent
    etcd: Etcd
    pki: Authority
    checker: grpc.Channel
    """The good node's own second channel, for health checks."""

    def assert_serving(self) -> None:
        """The invariant after every hostile batch: alive, SERVING, and the good agent's change recorded."""
        self.gateway.assert_alive()
        assert self.gateway.health(self.checker) == checks_pb2.HealthCheckResponse.SERVING
        self.agent.change_and_check(self.etcd)

    def assert_no_stream_left(self) -> None:
        """Only the good agent's stream stays open (a hostile one may take a moment to be cancelled)."""
        deadline = time.monotonic() + CALL_TIMEOUT
        while (connected := self.gateway.connected()) != 1:
            assert time.monotonic() < deadline, f"{connected} report streams open, only the good agent's should be"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    authority = Authority(tmp_path_factory.mktemp("fuzz-pki"))
    authority.ensure()
    return authority


@pytest.fixture(scope="module")
def etcd(etcd_port: int) -> Iterator[Etcd]:
    client = Etcd(etcd_port)
    yield client
    client.close()


@pytest.fixture(scope="module", params=["grpc.aio", "edge"])
def gateway(
    request: pytest.FixtureRequest, pki: Authority, etcd: Etcd, etcd_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """The gateway process, taking its connections in each of its two ways: grpc.aio, and its compiled edge."""
    etcd.run(etcd.client.delete_prefix(site_prefix(SITE).encode()))
    TRIED.clear()
    TAKEN.clear()
    served = pki.issue_server("gateway", ("localhost", "127.0.0.1"))
    port, metrics_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    command = [
        *(sys.executable, "-m", "gigafab", "gateway", f"--site={SITE}", f"--listen=127.0.0.1:{port}"),
        *(f"--cert={served.cert}", f"--key={served.key}", f"--ca={pki.pair.cert}", f"--etcd=127.0.0.1:{etcd_port}"),
        *("--silent-after=30", "--fence-after=30", f"--metrics-address=127.0.0.1:{metrics_port}"),
        *([f"--edge={request.getfixturevalue('edge_binary')}"] if request.param == "edge" else []),
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    running = Gateway(process, port, f"http://127.0.0.1:{metrics_port}/metrics", log, request.param)
    try:
        wait_until_serving(running, pki)
        yield running
    finally:
        running.stop()


def wait_until_serving(gateway: Gateway, pki: Authority) -> None:
    with secure_channel(gateway.port, pki, pki.issue_client(node_identity(GOOD_NODE, SITE))) as channel:
        deadline = time.monotonic() + 60
        while True:
            gateway.assert_alive()
            try:
                if gateway.health(channel) == checks_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                assert time.monotonic() < deadline, "the gateway did not start serving"
                time.sleep(0.2)


@pytest.fixture(scope="module")
def plane(gateway: Gateway, pki: Authority, etcd: Etcd) -> Iterator[Plane]:
    good = pki.issue_client(node_identity(GOOD_NODE, SITE))
    with secure_channel(gateway.port, pki, good) as channel, secure_channel(gateway.port, pki, good) as checker:
        agent = GoodAgent(channel)
        agent.acknowledged(agent.report())  # a stream's first report is acknowledged
        agent.check_recorded(etcd)
        agent.heart.start()
        checks = Plane(gateway, agent, etcd, pki, checker)
        yield checks
        checks.assert_serving()
        agent.stop()
        assert agent.call.code() == grpc.StatusCode.OK, "the good agent's stream ends as it closes it, never broken"
        families = ", ".join(f"{family} {count}" for family, count in sorted(TRIED.items()))
        print(
            f"\nfuzzed ({gateway.frontend}): {sum(TRIED.values())} inputs ({families}; "
            f"{sum(TAKEN.values())} reports among them taken), "
            f"gateway alive, good agent served ({len(agent.recorded)} states acknowledged and in etcd)"
        )


# -- the model of the gateway's rules, for nodes of the site that turn hostile ----------------------------


@dataclass
class Intruder:
    """A node of the site (a valid certificate) that sends garbage, and what the gateway must answer it."""

    node: str
    channel: grpc.Channel
    last: int | None = None
    """Sequence of its last report the gateway took."""
    issued: int = 0
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    """Refusals the gateway must have counted, by reason."""

    def fresh(self) -> int:
        """A sequence above any this node sent so far."""
        self.issued = min(max(self.issued, self.last or 0) + 1, UINT64_MAX)
        return self.issued

    def judge(self, frame: bytes) -> str | None:
        """Why the gateway must refuse ``frame`` (a ``STATUS_OF`` reason), or None: it takes it."""
        if len(frame) > MAX_FRAME_BYTES:
            return "dropped"
        if len(frame) > MAX_REPORT_BYTES:
            return "oversized"
        try:
            report = health_pb2.ReportRequest.FromString(frame)
        except DecodeError:
            return "malformed"
        return self.refusal(report)

    def refusal(self, report: Any) -> str | None:
        """The gateway's checks of a report, in its order: the first that fails names the refusal."""
        checks = (
            ("identity_mismatch", report.node.node == self.node),
            # the model's clock is read before the gateway's: they disagree only on a sequence within a few
            # milliseconds of the limit, which no strategy here aims at
            ("implausible_sequence", report.sequence - time.time_ns() // 1000 <= SEQUENCE_AHEAD_ALLOWED_US),
            ("malformed", all(gpu.health in NAMES for gpu in report.gpus)),
            ("wrong_site", report.node.site == SITE),
            ("replayed_sequence", self.last is None or report.sequence > self.last),
        )
        return next((reason for reason, passed in checks if not passed), None)

    def expect(self, frames: list[bytes]) -> tuple[grpc.StatusCode, list[int]]:
        """The status of a stream of ``frames`` and the sequences the gateway takes from it."""
        taken: list[int] = []
        for frame in frames:
            reason = self.judge(frame)
            if reason is not None:
                self.refused[reason] += reason != "dropped"
                return STATUS_OF[reason], taken
            self.last = health_pb2.ReportRequest.FromString(frame).sequence
            taken.append(self.last)
        return grpc.StatusCode.OK, taken

    def send(self, family: str, frames: list[bytes]) -> None:
        """One Report stream of raw ``frames``; its status and acknowledgements must be what the model says."""
        code, taken = self.expect(frames)
        TRIED[family] += min(len(frames), len(taken) + 1)  # a refusal ends the stream: the frames after it are not read
        TAKEN[family] += len(taken)
        answers, status = raw_call(self.channel, frames)
        assert status == code, f"expected {code.name}, got {status.name} (a crash in the handler shows as UNKNOWN)"
        acknowledged = [health_pb2.ReportResponse.FromString(answer).ack.sequence for answer in answers]
        assert set(acknowledged) <= set(taken), "only reports taken are acknowledged"
        assert acknowledged[:1] == taken[:1], "a stream's first report taken is acknowledged"


def raw_call(channel: grpc.Channel, frames: list[bytes]) -> tuple[list[bytes], grpc.StatusCode]:
    """A Report call with ``frames`` as they are; the answers and the final status."""
    call = channel.stream_stream(f"/{SERVICE}/Report", request_serializer=lambda b: b, response_deserializer=lambda b: b)
    answers: list[bytes] = []
    try:
        answers.extend(call(iter(frames), timeout=CALL_TIMEOUT))
    except grpc.RpcError as refused:
        return answers, refused.code()
    return answers, grpc.StatusCode.OK


@pytest.fixture(scope="module")
def intruders(gateway: Gateway, pki: Authority) -> Iterator[dict[str, Intruder]]:
    """Each family's own intruder, so that one family's sequences do not close another's."""
    made = {
        family: Intruder(node, secure_channel(gateway.port, pki, pki.issue_client(node_identity(node, SITE))))
        for family, node in INTRUDERS.items()
        if family != "http2"  # that one speaks raw HTTP/2
    }
    yield made
    for intruder in made.values():
        intruder.channel.close()


def check_refusals_counted(plane: Plane, intruder: Intruder, attack: Callable[[], None]) -> collections.Counter[str]:
    """Run ``attack``; the gateway's metrics must count exactly the refusals the model expects (returned), and
    no hostile stream may stay open."""
    before, expected_before = plane.gateway.refusals(), collections.Counter(intruder.refused)
    attack()
    after = plane.gateway.refusals()
    expected = intruder.refused - expected_before
    assert {reason: after[reason] - before[reason] for reason in after} == {reason: expected[reason] for reason in after}
    plane.assert_no_stream_left()
    return expected


# -- strategies --------------------------------------------------------------------------------------------


def usually(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Draws from ``common`` three times in four, else from ``rare``."""
    return st.sampled_from((True, True, True, False)).flatmap(lambda usual: common if usual else rare)


uint32 = st.integers(0, 2**32 - 1)
uint64 = st.integers(0, UINT64_MAX)
int32 = st.integers(-(2**31), 2**31 - 1)
short_text = st.text(max_size=24)
long_text = st.builds(lambda character, count: character * count, st.characters(codec="utf-8"), st.integers(1_000, 40_000))
texts = st.one_of(short_text, short_text, short_text, long_text)
valid_health = st.sampled_from(sorted(NAMES))
health_codes = usually(valid_health, int32)
"""Mostly valid; also unspecified, Silent (no agent may say it), negative and unknown enum values."""


def gpu_states(strings: st.SearchStrategy[str], health: st.SearchStrategy[int] = health_codes) -> st.SearchStrategy[Any]:
    xids = st.builds(health_pb2.XidEvent, code=uint32, message=strings)
    return st.builds(
        health_pb2.GpuState,
        index=uint32,
        uuid=strings,
        model=strings,
        temperature_celsius=st.floats(width=32),
        power_watts=st.floats(width=32),
        ecc_corrected=uint64,
        ecc_uncorrected=uint64,
        remapped_rows_pending=st.booleans(),
        nvlink_errors=uint64,
        throttle_reasons=uint64,
        xid_events=st.lists(xids, max_size=3),
        health=health,
        health_reason=strings,
        reset=st.booleans(),
    )


many_gpus = st.builds(lambda gpu, count: [gpu] * count, gpu_states(short_text), st.integers(100, 3_000))
"""Many GPUs, all with the same index: duplicates, and sometimes over 64 KiB."""
timestamps = st.builds(Timestamp, seconds=st.integers(-(2**63), 2**63 - 1), nanos=int32)
unknown_fields = st.lists(st.builds(wire.unknown_field, st.integers(5, 2**29 - 1), st.binary(max_size=16)), max_size=2)


@dataclass(frozen=True)
class Draft:
    """A report whose sequence (None: a fresh one) is set when it is sent, and unknown fields to append."""

    report: Any
    sequence: int | None
    unknown: list[bytes]

    def frame(self, intruder: Intruder) -> bytes:
        report = health_pb2.ReportRequest()
        report.CopyFrom(self.report)
        report.sequence = intruder.fresh() if self.sequence is None else self.sequence
        return bytes(report.SerializeToString() + b"".join(self.unknown))


def drafts(node: str) -> st.SearchStrategy[Draft]:
    """Any ReportRequest, biased towards ``node`` reporting for this site (the paths past the identity checks)."""
    identities = st.builds(
        health_pb2.NodeIdentity,
        node=usually(st.just(node), texts),
        site=usually(st.just(SITE), texts),
        agent_version=short_text,
    )
    report = st.builds(
        health_pb2.ReportRequest,
        node=identities,
        sent_at=timestamps,
        gpus=st.one_of(st.lists(gpu_states(short_text), max_size=8), st.lists(gpu_states(texts), max_size=2), many_gpus),
    )
    return st.builds(Draft, report, usually(st.none(), uint64), unknown_fields)


def valid_report(node: str, sequence: int, gpus: list[Any]) -> bytes:
    identity = health_pb2.NodeIdentity(node=node, site=SITE, agent_version="0.1.0")
    return bytes(health_pb2.ReportRequest(node=identity, sequence=sequence, gpus=gpus).SerializeToString())


valid_gpus = st.lists(gpu_states(short_text, valid_health), min_size=1, max_size=8)
fields = st.builds(lambda key, body: wire.varint(key) + body, st.integers(0, 20 << 3 | 7), st.binary(max_size=12))
protobuf_junk = st.lists(fields, min_size=1, max_size=6).map(b"".join)
"""Field keys of any number and wire type followed by whatever: lengths and varints that lie."""


def mutated(report: bytes, edits: list[tuple[int, int]]) -> bytes:
    frame = bytearray(report)
    for position, value in edits:
        frame[position % len(frame)] = value
    return bytes(frame)


def mutated_reports(node: str) -> st.SearchStrategy[bytes]:
    """A good report of ``node`` with a few bytes overwritten."""
    good = st.builds(valid_report, st.just(node), uint64, valid_gpus)
    return st.builds(mutated, good, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4))


# -- the families of hostile input ------------------------------------------------------------------------


def test_random_bytes_sent_as_reports_are_refused_as_malformed(plane: Plane, intruders: dict[str, Intruder]) -> None:
    intruder = intruders["garbage"]
    garbage = st.one_of(st.binary(max_size=8), st.binary(max_size=512), protobuf_junk, mutated_reports(intruder.node))

    @settings(FUZZ, max_examples=100)
    @given(st.lists(st.lists(garbage, min_size=1, max_size=3), min_size=1, max_size=6))
    @example([[b""], [b"\x0a\xff\xff\xff\xff\x0f"], [b"\xff" * 100]])
    def attack(streams: list[list[bytes]]) -> None:
        for frames in streams:
            intruder.send("garbage", frames)
        plane.assert_serving()

    counted = check_refusals_counted(plane, intruder, attack)
    assert counted["malformed"] > 0


def test_random_protobuf_reports_are_taken_or_refused_never_a_crash(plane: Plane, intruders: dict[str, Intruder]) -> None:
    intruder = intruders["protobuf"]

    own = health_pb2.ReportRequest(
        node=health_pb2.NodeIdentity(node=intruder.node, site=SITE), gpus=[health_pb2.GpuState(index=0, health=HEALTHY)]
    )

    @settings(FUZZ, max_examples=80)
    @given(st.lists(st.lists(drafts(intruder.node), min_size=1, max_size=3), min_size=1, max_size=4))
    @example([[Draft(own, UINT64_MAX, [])], [Draft(own, None, [])]])  # the lock-out attempt, then its next report
    def attack(streams: list[list[Draft]]) -> None:
        for drafted in streams:
            intruder.send("protobuf", [draft.frame(intruder) for draft in drafted])
        plane.assert_serving()

    counted = check_refusals_counted(plane, intruder, attack)
    assert counted["identity_mismatch"] > 0
    assert counted["implausible_sequence"] > 0


def test_truncated_reports_are_refused_or_taken_as_what_is_left(plane: Plane, intruders: dict[str, Intruder]) -> None:
    intruder = intruders["truncated"]

    @settings(FUZZ, max_examples=50)
    @given(st.lists(st.tuples(valid_gpus, st.integers(0, 10**9)), min_size=1, max_size=6))
    def attack(cuts: list[tuple[list[Any], int]]) -> None:
        for gpus, cut in cuts:
            frame = valid_report(intruder.node, intruder.fresh(), gpus)
            intruder.send("truncated", [frame[: cut % len(frame)]])
        plane.assert_serving()

    counted = check_refusals_counted(plane, intruder, attack)
    assert counted["malformed"] > 0


def oversized(intruder: Intruder, size: int, report: bool) -> bytes:
    """A frame of ``size`` bytes: a good report padded with an unknown field, or random bytes."""
    if report:
        return wire.padded(valid_report(intruder.node, intruder.fresh(), []), size)
    return random.Random(size).randbytes(size)


def test_oversized_frames_are_refused_before_decoding(plane: Plane, intruders: dict[str, Intruder]) -> None:
    intruder = intruders["oversized"]
    sizes = st.integers(MAX_REPORT_BYTES - 16, 3 * MAX_FRAME_BYTES)

    @settings(FUZZ, max_examples=15)
    @given(st.lists(st.tuples(sizes, st.booleans()), min_size=1, max_size=3))
    @example([(MAX_REPORT_BYTES, True), (MAX_REPORT_BYTES + 1, True), (MAX_FRAME_BYTES, True), (MAX_FRAME_BYTES + 1, True)])
    def attack(frames: list[tuple[int, bool]]) -> None:
        for size, report in frames:
            intruder.send("oversized", [oversized(intruder, size, report)])
        plane.assert_serving()

    counted = check_refusals_counted(plane, intruder, attack)
    assert counted["oversized"] > 0


# -- below gRPC: raw TCP, raw TLS, raw HTTP/2 -------------------------------------------------------------


def tls_context(pki: Authority, pair: Pair | None, alpn: tuple[str, ...] = ("h2",)) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.pair.cert)
    if pair is not None:
        context.load_cert_chain(pair.cert, pair.key)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def closed_by_gateway(connection: socket.socket) -> bool:
    """Read until the gateway closes ``connection``: True, or False when it still holds it after ``CALL_TIMEOUT``."""
    connection.settimeout(CALL_TIMEOUT)
    try:
        while connection.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:  # reset, or a TLS alert
        return True
    return True


def send_and_close(connection: socket.socket, payload: bytes) -> None:
    """Send ``payload`` and close our side for writing (the gateway may have hung up already)."""
    with contextlib.suppress(OSError):
        connection.sendall(payload)
        connection.shutdown(socket.SHUT_WR)  # on a TLS socket: TCP's FIN without TLS's close_notify


tls_records = st.builds(
    lambda version, length, body: b"\x16\x03" + bytes([version]) + length.to_bytes(2, "big") + body,
    st.integers(0, 4),
    st.integers(0, 2**16 - 1),
    st.binary(max_size=512),
)
"""What looks like the start of a TLS handshake record, with any length and content."""
cleartext_http2 = st.builds(lambda rest: wire.PREFACE + rest, st.binary(max_size=64))


def test_random_bytes_to_the_tls_port_are_dropped(plane: Plane) -> None:
    @settings(FUZZ, max_examples=100)
    @given(st.lists(st.one_of(st.binary(max_size=2048), tls_records, cleartext_http2), min_size=1, max_size=4))
    @example([b"", b"\x16\x03\x01\xff\xff", wire.PREFACE])
    def attack(payloads: list[bytes]) -> None:
        for payload in payloads:
            TRIED["tcp"] += 1
            with socket.create_connection(("127.0.0.1", plane.gateway.port), timeout=CALL_TIMEOUT) as connection:
                send_and_close(connection, payload)
                assert closed_by_gateway(connection), "the gateway held on to a connection its peer closed"
        plane.assert_serving()

    attack()
    plane.assert_no_stream_left()


def call_frames(stream: int, path: str, body: bytes, compressed: int, length: int | None, end: int) -> bytes:
    """A gRPC call in HTTP/2 frames: HEADERS, then a DATA frame with one message (which may lie about itself)."""
    headers = wire.frame(wire.HEADERS, wire.END_HEADERS, stream, wire.report_headers(path))
    return headers + wire.frame(wire.DATA, end, stream, wire.grpc_message(body, compressed, length))


def http2_connections(node: str) -> st.SearchStrategy[bytes]:
    """What a client with a valid certificate sends after the TLS handshake: a preface (mostly right), maybe
    SETTINGS, then frames of any type, flags and stream with lengths that may lie, header blocks that are
    junk, gRPC calls with lying messages, and all of it maybe cut anywhere."""
    streams = st.one_of(st.sampled_from([0, 1, 2, 3, 2**31 - 1, 2**31 + 1]), uint32)
    any_frames = st.builds(
        wire.frame,
        st.integers(0, 255),
        st.integers(0, 255),
        streams,
        st.binary(max_size=64),
        st.none() | st.integers(0, 2**24 - 1),
    )
    known_frames = st.builds(wire.frame, st.integers(0, 9), st.integers(0, 255), streams, st.binary(max_size=32))
    settings_frames = st.builds(
        wire.settings, st.lists(st.tuples(st.integers(0, 10) | st.integers(0, 2**16 - 1), uint32), max_size=4)
    )
    junk_headers = st.builds(wire.frame, st.just(wire.HEADERS), st.sampled_from([0, 4, 5, 0x24]), streams, st.binary(max_size=64))
    bodies = st.one_of(st.builds(valid_report, st.just(node), uint64, valid_gpus), st.binary(max_size=64))
    paths = st.sampled_from([wire.REPORT_PATH, "/grpc.health.v1.Health/Check", "/gigafab.health.v1.HealthService/Nope", "", "*"])
    calls = st.builds(
        call_frames, streams, paths, bodies, st.sampled_from([0, 1, 2, 255]), st.none() | uint32, st.sampled_from([0, 1])
    )
    frames = st.lists(st.one_of(any_frames, known_frames, settings_frames, junk_headers, calls), max_size=6)
    prefaces = st.one_of(st.just(wire.PREFACE), st.just(wire.PREFACE + wire.settings([])), st.binary(max_size=30))
    whole = st.builds(lambda preface, body: preface + b"".join(body), prefaces, frames)
    return st.builds(
        lambda payload, cut: payload[: cut if cut is not None else len(payload)], whole, st.none() | st.integers(0, 400)
    )


def test_malformed_http2_under_a_valid_certificate_ends_only_that_connection(plane: Plane) -> None:
    node = INTRUDERS["http2"]
    context = tls_context(plane.pki, plane.pki.issue_client(node_identity(node, SITE)))

    assert_raw_calls_reach_the_handler(plane, context, node)

    @settings(FUZZ, max_examples=150)
    @given(st.lists(http2_connections(node), min_size=1, max_size=4))
    @example([wire.PREFACE + wire.frame(wire.HEADERS, wire.END_HEADERS, 1, wire.report_headers())[:20]])
    def attack(payloads: list[bytes]) -> None:
        for payload in payloads:
            TRIED["http2"] += 1
            with (
                socket.create_connection(("127.0.0.1", plane.gateway.port), timeout=CALL_TIMEOUT) as raw,
                context.wrap_socket(raw, server_hostname="localhost") as connection,
            ):
                assert connection.selected_alpn_protocol() == "h2", "the attack must reach the gateway's HTTP/2"
                send_and_close(connection, payload)
                assert closed_by_gateway(connection), "the gateway held on to a connection its peer closed"
        plane.assert_serving()

    attack()
    plane.assert_no_stream_left()


def assert_raw_calls_reach_the_handler(plane: Plane, context: ssl.SSLContext, node: str) -> None:
    """The frames the attacks are made of make a real call: a good report sent so is taken."""
    report = valid_report(node, time.time_ns() // 1000, [health_pb2.GpuState(index=0, health=HEALTHY)])
    call = call_frames(1, wire.REPORT_PATH, report, 0, None, wire.END_STREAM)
    before = plane.gateway.reports()
    with (
        socket.create_connection(("127.0.0.1", plane.gateway.port), timeout=CALL_TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as connection,
    ):
        connection.sendall(wire.PREFACE + wire.settings([]) + call)
        deadline = time.monotonic() + CALL_TIMEOUT
        while plane.gateway.reports() == before:
            assert time.monotonic() < deadline, "a report sent in hand-made HTTP/2 frames never reached the gateway"
            time.sleep(0.05)


def test_tls_without_a_trusted_certificate_never_reaches_http2(plane: Plane, tmp_path_factory: pytest.TempPathFactory) -> None:
    stranger = Authority(tmp_path_factory.mktemp("stranger-ca"), "stranger-ca")
    stranger.ensure()
    forged = stranger.issue_client(node_identity(GOOD_NODE, SITE))  # the good node's name, from another CA
    alpns: dict[str, tuple[str, ...]] = {"h2": ("h2",), "http/1.1": ("http/1.1",), "no ALPN": ()}
    contexts = {
        f"{who}, {name}": tls_context(plane.pki, pair, alpn)
        for who, pair in (("no certificate", None), ("forged certificate", forged))
        for name, alpn in alpns.items()
    }

    trusted = tls_context(plane.pki, plane.pki.issue_client(node_identity(GOOD_NODE, SITE)))
    assert answered(trusted, plane.gateway.port, b""), "a trusted client is answered (its SETTINGS): the probe sees HTTP/2"

    @settings(FUZZ, max_examples=50)
    @given(st.lists(st.tuples(st.sampled_from(sorted(contexts)), st.binary(max_size=256)), min_size=1, max_size=4))
    def attack(attempts: list[tuple[str, bytes]]) -> None:
        for which, payload in attempts:
            TRIED["untrusted-tls"] += 1
            assert not answered(contexts[which], plane.gateway.port, payload), "the gateway spoke to an untrusted peer"
        plane.assert_serving()

    attack()
    plane.assert_no_stream_left()


def answered(context: ssl.SSLContext, port: int, payload: bytes) -> bool:
    """Whether the gateway sends any application data to a client that sends ``payload`` over ``context``."""
    with socket.create_connection(("127.0.0.1", port), timeout=CALL_TIMEOUT) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as connection:  # TLS 1.3: the refusal comes later
                connection.sendall(wire.PREFACE + wire.settings([]) + payload)
                return bool(connection.recv(65536))
        except OSError:  # the handshake or the first read is refused: an alert, or a reset
            return False


def test_every_change_the_good_agent_made_is_in_etcd_in_order(plane: Plane) -> None:
    plane.assert_serving()  # one more change of its own
    recorded = plane.agent.recorded
    history = plane.etcd.history(GOOD_NODE, recorded[0][0], recorded[-1][0])
    states = [{"health": document["health"], "gpus": document["gpus"]} for document in history]
    written = [state for index, state in enumerate(states) if index == 0 or state != states[index - 1]]
    assert written == [state for _, state in recorded], "etcd's history must hold every change, in order"
    assert len(written) > 1
