"""Reconnection storm benchmark: N agents steady on one gateway, then a fraction of them
drop their connections at the same moment and reconnect at once, several times.

    python bench/reconnect_storm.py --agents 10000 --fraction 0.1 --storms 3

The plane is that of bench/health_ingest.py (one real ``gigafab gateway`` process, a
real etcd, the Go load generator with a certificate, TLS connection and ``Report``
stream per agent, 1 Hz), on its own ports (shifted by 11000). The reconnecting
agents are a load-generator process of their own: a SIGUSR1 makes each of them close
its connection (TCP and TLS, not only the stream) and reconnect at once, with a new TLS
handshake and a new stream; the generator records how long each took from the
signal to the gateway's acknowledgement of its new stream's first report. As the
Python agent does, a reconnecting agent resumes its TLS session (a network blip);
``--full-handshakes`` makes every handshake a full one (as when the agents restart). They send
their reports without ``sent_at``, so the gateway's latency sample (send → ledger) is
that of the agents that stay connected: whether a storm starves them.

Per storm it prints the reconnection times (TLS handshake done, and new stream
acknowledged: p50/p99/max; the max is when the last agent was back), the full TLS
handshakes made and the sessions resumed, the reports/s the gateway took before and during the storm (and in
its worst second), the open streams the gateway counts, the steady agents' p99,
false Silents (every agent stays healthy and reports, so any Silent is false; from
the gateway's count, and from the Silent records in etcd split into reconnecting and
steady nodes), refused calls, broken streams, the agents' stalls (a report sent over
3 s after its predecessor: the generators share the CPU with the gateway, and such an
agent was silent in truth), and the gateway's CPU and RSS (with its edge's: ``--edge``);
then a summary. Exit status 1 (the gateway does not keep up)
when an agent was not back within ``--bound`` seconds or any node was declared
Silent. Leaves nothing running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aetcd
import psutil
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gigafab.agents.records import gateway_key, site_prefix
from gigafab.agents.site_gateway import quantile
from health_ingest import PREFIX, SITE, cpu, edge_option, loadgen, node, rss, start_loadgen, wait_for_everyone

from gigafab.local import components
from gigafab.local.layout import Layout, Ports
from gigafab.local.pki import Authority, node_identity
from gigafab.local.processes import Supervisor

OFFSET = 11_000
STATS_SECONDS = 2.0
"""The gateway writes its stats file (latency windows, Silent count) this often."""
TICK = 0.5
"""Seconds between looks at the gateway during a storm."""


@dataclass(frozen=True)
class Sample:
    """One look at the gateway: its CPU seconds, RSS and counters (from its metrics)."""

    at: float
    cpu: float
    rss: int
    reports: float
    streams: float


@dataclass
class Plane:
    """The running gateway and load generators; they report into files in ``root``."""

    root: Path
    gateway: subprocess.Popen[bytes]
    steady: subprocess.Popen[str]
    storming: subprocess.Popen[str]
    metrics_port: int
    etcd_port: int
    first_storming: int
    """Agents from this index on are the reconnecting ones."""

    @property
    def stats(self) -> Path:
        return self.root / "stats.json"

    @property
    def steady_status(self) -> Path:
        return self.root / "steady.json"

    @property
    def storming_status(self) -> Path:
        return self.root / "storming.json"

    def sample(self) -> Sample:
        process = psutil.Process(self.gateway.pid)
        metrics = scrape(self.metrics_port)
        return Sample(
            time.time(),
            cpu(process),
            rss(process),
            metrics["gigafab_gateway_reports_total"],
            metrics["gigafab_gateway_connected_agents"],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--fraction", type=float, default=0.1, help="share of the agents that reconnect in each storm")
    parser.add_argument("--storms", type=int, default=3)
    parser.add_argument(
        "--ramp",
        type=float,
        default=60,
        help="agents first connect at random moments within these seconds (both ends of each of their full "
        "TLS handshakes run on this machine: 10,000 within 20 s took more CPU than two cores have beside the steady load)",
    )
    parser.add_argument("--warmup", type=float, default=180, help="at most this long for every agent to connect")
    parser.add_argument("--before", type=float, default=10, help="steady seconds measured before each storm")
    parser.add_argument("--window", type=float, default=10, help="seconds watched after each storm (at least)")
    parser.add_argument("--bound", type=float, default=60, help="an agent not back within these seconds never came back")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--edge", action="store_true", help="the gateway takes connections through its compiled edge")
    parser.add_argument(
        "--full-handshakes",
        action="store_true",
        help="reconnecting agents make full TLS handshakes, as after their restart (default: they resume their session)",
    )
    sys.exit(0 if run(parser.parse_args()) else 1)


def run(args: argparse.Namespace) -> bool:
    """The benchmark; True when the gateway kept up with every storm."""
    binary = loadgen()
    storming = max(1, round(args.agents * args.fraction))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        layout = Layout(state=root / "plane", ports=Ports.shifted(OFFSET))
        pki = issue(root / "pki", args.agents)
        supervisor = Supervisor(layout.pids, layout.logs)
        processes: list[subprocess.Popen[Any]] = []
        try:
            supervisor.start(components.etcd(layout))
            plane = start(binary, layout, pki, root, processes, args, storming)
            connected = settle(plane, args, storming)
            print(json.dumps({"agents": args.agents, "reconnecting_per_storm": storming, **connected}), flush=True)
            figures = []
            for number in range(1, args.storms + 1):
                figures.append(storm(plane, number, args))
                print(json.dumps(figures[-1], indent=2), flush=True)
            totals = summary(figures, read(plane.stats))
            totals["agent_stalls_whole_run"] = sum(
                read(status).get("stalls", 0) for status in (plane.steady_status, plane.storming_status)
            )
            print(json.dumps(totals, indent=2), flush=True)
            return bool(totals["keeps_up"])
        finally:
            stop(processes)
            supervisor.stop("etcd")


def issue(directory: Path, agents: int) -> Authority:
    pki = Authority(directory, "bench-ca")
    pki.ensure()
    started = time.monotonic()
    for index in range(agents):
        pki.issue_client(node_identity(node(index), SITE))
    print(f"issued {agents} agent certificates in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return pki


def start(
    binary: Path,
    layout: Layout,
    pki: Authority,
    root: Path,
    processes: list[subprocess.Popen[Any]],
    args: argparse.Namespace,
    storming: int,
) -> Plane:
    """Start the gateway and the two load generators (the steady agents and the reconnecting ones)."""
    gateway = start_gateway(layout, pki, root / "stats.json", root / "gateway.log", edge_option(args.edge))
    processes.append(gateway)
    time.sleep(3)
    if gateway.poll() is not None:
        raise SystemExit("the gateway did not start:\n" + (root / "gateway.log").read_text()[-2000:])
    lifetime = args.warmup + 30 + args.storms * (args.before + args.bound + 30)
    steady_agents, storming_agents = range(args.agents - storming), range(args.agents - storming, args.agents)
    for agents, name, untimed in ((steady_agents, "steady", False), (storming_agents, "storming", True)):
        generator = start_generator(binary, layout.ports.gateways, pki.directory, agents, root / name, args, lifetime, untimed)
        processes.append(generator)
    steady, reconnecting = processes[-2:]
    ports = layout.ports
    return Plane(root, gateway, steady, reconnecting, ports.gateway_metrics, ports.etcd_client, storming_agents.start)


def start_gateway(layout: Layout, pki: Authority, stats: Path, log: Path, options: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    served = pki.issue_server("gateway", ("localhost", "127.0.0.1"))
    with log.open("ab") as output:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gigafab",
                "gateway",
                f"--site={SITE}",
                f"--listen=127.0.0.1:{layout.ports.gateways}",
                f"--cert={served.cert}",
                f"--key={served.key}",
                f"--ca={pki.pair.cert}",
                f"--etcd=127.0.0.1:{layout.ports.etcd_client}",
                f"--stats-file={stats}",
                f"--metrics-address=127.0.0.1:{layout.ports.gateway_metrics}",
                *options,
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def start_generator(
    binary: Path, port: int, pki: Path, agents: range, name: Path, args: argparse.Namespace, lifetime: float, untimed: bool
) -> subprocess.Popen[str]:
    """A load generator for ``agents`` (indexes) that writes its counters and storms to ``name``.json,
    and what went wrong to ``name``.log."""
    status = (
        f"-status={name.with_suffix('.json')}",
        f"-untimed={str(untimed).lower()}",
        f"-resume={str(not args.full_handshakes).lower()}",
    )
    with name.with_suffix(".log").open("ab") as log:
        return start_loadgen(
            binary, port, pki, agents, seconds=lifetime, ramp=args.ramp, gpus=args.gpus, extra=status, errors=log
        )


def stop(processes: Sequence[subprocess.Popen[Any]]) -> None:
    """Stop what this benchmark started, newest first."""
    for process in reversed(processes):
        if process.poll() is None:
            process.terminate()
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def read(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def scrape(port: int) -> dict[str, float]:
    """The gateway's metrics (summed over labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


def settle(plane: Plane, args: argparse.Namespace, storming: int) -> dict[str, object]:
    """Wait until every agent is in the ledger and has an acknowledged stream."""
    connected = wait_for_everyone(plane.stats, args.agents, args.warmup)
    if connected is None:
        raise SystemExit(f"not every agent connected within {args.warmup:.0f}s: {progress(plane)}")
    expected = {plane.steady_status: args.agents - storming, plane.storming_status: storming}
    deadline = time.time() + args.warmup
    while any(read(status)["streaming"] < count for status, count in expected.items()):
        if time.time() > deadline:
            raise SystemExit(f"not every agent has an acknowledged stream: {progress(plane)}")
        time.sleep(1.0)
    time.sleep(5)  # past every agent's first report
    return {"all_agents_connected_after_s": connected}


def progress(plane: Plane) -> str:
    """Where the agents are, for a benchmark that gives up."""
    stats, metrics = read(plane.stats), scrape(plane.metrics_port)
    generators = {name: read(path) for name, path in (("steady", plane.steady_status), ("storming", plane.storming_status))}
    counts = {name: {k: v for k, v in status.items() if k != "storms"} for name, status in generators.items()}
    return json.dumps(
        {
            "nodes_in_ledger": stats["nodes"],
            "gateway_streams": metrics["gigafab_gateway_connected_agents"],
            "silenced": stats["silenced"],
            "refused": stats["refused"],
            "generators": counts,
            "first_stream_failures": {name: first_lines(plane.root / f"{name}.log") for name in generators},
        }
    )


def first_lines(path: Path, count: int = 3) -> list[str]:
    return path.read_text(errors="replace").splitlines()[:count] if path.exists() else []


def observe(plane: Plane, seconds: float) -> tuple[list[Sample], list[dict[str, Any]]]:
    """Samples of the gateway every ``TICK`` seconds, and its stats documents, for ``seconds``."""
    samples, documents = [plane.sample()], [read(plane.stats)]
    while samples[-1].at - samples[0].at < seconds:
        time.sleep(TICK)
        look(plane, samples, documents)
    return samples, documents


def look(plane: Plane, samples: list[Sample], documents: list[dict[str, Any]]) -> None:
    samples.append(plane.sample())
    document = read(plane.stats)
    if document["at"] != documents[-1]["at"]:
        documents.append(document)


def storm(plane: Plane, number: int, args: argparse.Namespace) -> dict[str, object]:
    """One storm: a steady window, then the reconnecting agents' signal, watched until they are back."""
    before, steady_documents = observe(plane, args.before)
    steady_before, storming_before = read(plane.steady_status), read(plane.storming_status)
    index = len(storming_before["storms"])
    revision = asyncio.run(etcd_revision(plane.etcd_port))
    samples, documents = [plane.sample()], [read(plane.stats)]
    plane.storming.send_signal(signal.SIGUSR1)
    back_at = watch_storm(plane, index, args, samples, documents)
    end = samples[-1].at
    while documents[-1]["at"] < end + STATS_SECONDS:  # a stats window past the end: its Silents too
        time.sleep(TICK)
        look(plane, samples, documents)
    steady_after, storming_after = read(plane.steady_status), read(plane.storming_status)
    record = storming_after["storms"][index]
    during = within(samples, record["at"], max(back_at, record["at"] + 1.0))
    return {
        "storm": number,
        **reconnections(record, args.bound),
        "new_tls_handshakes": storming_after["handshakes"] - storming_before["handshakes"],
        "resumed_tls_sessions": storming_after.get("resumed", 0) - storming_before.get("resumed", 0),
        **throughput(before, during, samples),
        **steady_latency(steady_documents, documents, record["at"], back_at),
        "false_silent": documents[-1]["silenced"] - documents[0]["silenced"],
        **silent_nodes(asyncio.run(silences(plane.etcd_port, revision + 1)), plane.first_storming),
        "refused": refusals(documents[0]["refused"], documents[-1]["refused"]),
        "steady_streams_broken": steady_after["stream_failures"] - steady_before["stream_failures"],
        "reconnecting_streams_broken": storming_after["stream_failures"] - storming_before["stream_failures"],
        # reports an agent of the generators sent over 3 s after its previous one: the generators share the
        # machine's CPU with the gateway, and such an agent was silent in truth
        "agent_stalls": sum(
            later.get("stalls", 0) - earlier.get("stalls", 0)
            for earlier, later in ((steady_before, steady_after), (storming_before, storming_after))
        ),
        **gateway_use(before, during, samples),
    }


def watch_storm(
    plane: Plane, index: int, args: argparse.Namespace, samples: list[Sample], documents: list[dict[str, Any]]
) -> float:
    """Look at the gateway until every reconnecting agent is back and ``window`` seconds passed, or
    ``bound`` seconds passed; returns the unix time the last one came back (or when it gave up)."""
    began, back_at = time.time(), None
    while time.time() - began < args.bound and (back_at is None or time.time() - began < args.window):
        time.sleep(TICK)
        look(plane, samples, documents)
        storms = read(plane.storming_status)["storms"]
        if back_at is None and len(storms) > index and len(storms[index]["back"]) >= storms[index]["cycled"]:
            back_at = storms[index]["at"] + max(storms[index]["back"], default=0.0)
    return back_at if back_at is not None else time.time()


async def etcd_revision(port: int) -> int:
    client = aetcd.Client(port=port, timeout=10, options={"grpc.max_receive_message_length": 256 << 20})
    try:
        revision: int = (await client.get_prefix(gateway_key(SITE))).header.revision
        return revision
    finally:
        await client.close()


async def silences(port: int, since: int) -> list[dict[str, Any]]:
    """The Silent records the gateway wrote to etcd from revision ``since`` until now."""
    client = aetcd.Client(port=port, timeout=10, options={"grpc.max_receive_message_length": 256 << 20})
    found: list[dict[str, Any]] = []
    try:
        now = await etcd_revision(port)
        if now < since:
            return found
        # every key of this etcd is under the site's prefix, so the watch reaches revision ``now``
        watch = await client.watch_prefix(site_prefix(SITE).encode(), start_revision=since)
        async with asyncio.timeout(30):
            async for event in watch:
                if event.kind == aetcd.EventKind.PUT and b"/nodes/" in event.kv.key:
                    document = json.loads(event.kv.value)
                    if document["health"] == "Silent":
                        found.append(document)
                if event.kv.mod_revision >= now:
                    break
        await watch.cancel()
    finally:
        await client.close()
    return found


# figures (pure)


def silent_nodes(records: Sequence[dict[str, Any]], first_storming: int) -> dict[str, int]:
    """Nodes declared Silent (in etcd), among the reconnecting agents and among the steady ones."""
    nodes = {int(record["node"].removeprefix(PREFIX)) for record in records}
    reconnecting = sum(1 for index in nodes if index >= first_storming)
    return {"silent_nodes_reconnecting": reconnecting, "silent_nodes_steady": len(nodes) - reconnecting}


def distribution(seconds: Sequence[float]) -> dict[str, float | None]:
    ordered = sorted(seconds)
    p50, p99 = quantile(ordered, 0.50), quantile(ordered, 0.99)
    return {
        "p50_s": None if p50 is None else round(p50, 3),
        "p99_s": None if p99 is None else round(p99, 3),
        "max_s": round(ordered[-1], 3) if ordered else None,
    }


def reconnections(record: dict[str, Any], bound: float) -> dict[str, object]:
    """How long the reconnecting agents took to complete a new TLS handshake and to have their new
    stream acknowledged (seconds from the storm)."""
    back = [seconds for seconds in record["back"] if seconds <= bound]
    times = distribution(back)
    return {
        "reconnecting_agents": record["cycled"],
        "back": len(back),
        "never_back": record["cycled"] - len(back),
        "tls_handshake_done_after": distribution(record["handshook"]),
        "back_after": times,
        "all_back_after_s": times["max_s"] if len(back) == record["cycled"] else None,
    }


def per_second(samples: Sequence[Sample], field: str) -> float | None:
    """Rate of a counter between the first and the last sample."""
    if len(samples) < 2 or samples[-1].at <= samples[0].at:
        return None
    change: float = getattr(samples[-1], field) - getattr(samples[0], field)
    return change / (samples[-1].at - samples[0].at)


def rates(samples: Sequence[Sample], field: str, span: float = 1.0) -> list[float]:
    """Rates of a counter over the successive stretches of at least ``span`` seconds ending at each sample."""
    found: list[float] = []
    start = 0
    for end in range(1, len(samples)):
        while start + 1 < end and samples[end].at - samples[start + 1].at >= span:
            start += 1
        if samples[end].at - samples[start].at >= span:
            found.append((getattr(samples[end], field) - getattr(samples[start], field)) / (samples[end].at - samples[start].at))
    return found


def within(samples: Sequence[Sample], start: float, end: float) -> list[Sample]:
    """The samples from the last one at or before ``start`` to the first one at or after ``end``."""
    first = max((i for i, s in enumerate(samples) if s.at <= start), default=0)
    last = min((i for i, s in enumerate(samples) if s.at >= end), default=len(samples) - 1)
    return list(samples[first : last + 1])


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def throughput(before: Sequence[Sample], during: Sequence[Sample], samples: Sequence[Sample]) -> dict[str, object]:
    """Reports/s the gateway took before, from the storm until every agent was back (``during``), and in
    the lowest second of all it watched (``samples``); its open streams."""
    return {
        "reports_per_second_before": rounded(per_second(before, "reports")),
        "reports_per_second_storm": rounded(per_second(during, "reports")),
        "storm_window_s": round(during[-1].at - during[0].at, 1),
        "reports_per_second_lowest_1s": rounded(min(rates(samples, "reports"), default=None)),
        "gateway_streams_lowest": min(s.streams for s in samples),
        "gateway_streams_after": samples[-1].streams,
    }


def latency_windows(documents: Sequence[dict[str, Any]], start: float, end: float) -> list[float]:
    """p99s (seconds) of the gateway's stats windows (each the ``STATS_SECONDS`` before its ``at``) that overlap [start, end]."""
    return [
        d["latency_p99"] for d in documents if d["latency_p99"] is not None and d["at"] > start and d["at"] - STATS_SECONDS < end
    ]


def milliseconds(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 1)


def steady_latency(
    before: Sequence[dict[str, Any]], during: Sequence[dict[str, Any]], storm_at: float, back_at: float
) -> dict[str, object]:
    """p99 send → ledger of the agents that stay connected: before (median and worst 2 s window) and in the storm."""
    quiet = sorted(latency_windows(before, before[0]["at"], storm_at))
    end = max(back_at, storm_at + STATS_SECONDS)
    stormy = latency_windows(during, storm_at, end)
    after = latency_windows(during, end + STATS_SECONDS, float("inf"))  # windows that begin after the storm
    return {
        "steady_p99_ms_before_median_window": milliseconds(quantile(quiet, 0.5)),
        "steady_p99_ms_before_worst_window": milliseconds(max(quiet, default=None)),
        "steady_p99_ms_storm_worst_window": milliseconds(max(stormy, default=None)),
        "steady_p99_ms_after_worst_window": milliseconds(max(after, default=None)),
    }


def refusals(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Calls refused in between, by reason."""
    return {reason: count - before.get(reason, 0) for reason, count in after.items() if count > before.get(reason, 0)}


def gateway_use(before: Sequence[Sample], during: Sequence[Sample], samples: Sequence[Sample]) -> dict[str, object]:
    """The gateway's CPU (cores) and RSS before, during the storm and at their worst in all it watched."""
    return {
        "gateway_cpu_cores_before": rounded(per_second(before, "cpu"), 2),
        "gateway_cpu_cores_storm": rounded(per_second(during, "cpu"), 2),
        "gateway_cpu_cores_peak_1s": rounded(max(rates(samples, "cpu"), default=None), 2),
        "gateway_rss_mb_before": round(before[-1].rss / 2**20, 1),
        "gateway_rss_mb_peak": round(max(s.rss for s in samples) / 2**20, 1),
    }


def summary(storms: Sequence[dict[str, Any]], last_stats: dict[str, Any]) -> dict[str, object]:
    """The storms together, and the verdict: every agent back within the bound, no Silent all run long."""
    never_back = sum(s["never_back"] for s in storms)
    silent = last_stats["silenced"]  # every agent is healthy and reports: any Silent since start is false
    all_back = [s["all_back_after_s"] for s in storms]
    return {
        "storms": len(storms),
        "reconnections": sum(s["reconnecting_agents"] for s in storms),
        "never_back": never_back,
        "back_after_p50_s_worst_storm": worst(s["back_after"]["p50_s"] for s in storms),
        "back_after_p99_s_worst_storm": worst(s["back_after"]["p99_s"] for s in storms),
        "all_back_after_s_worst_storm": None if None in all_back else worst(all_back),
        "reports_per_second_before_lowest": worst((s["reports_per_second_before"] for s in storms), highest=False),
        "reports_per_second_storm_lowest": worst((s["reports_per_second_storm"] for s in storms), highest=False),
        "reports_per_second_lowest_1s": worst((s["reports_per_second_lowest_1s"] for s in storms), highest=False),
        "steady_p99_ms_before_median_window_worst": worst(s["steady_p99_ms_before_median_window"] for s in storms),
        "steady_p99_ms_storm_worst": worst(s["steady_p99_ms_storm_worst_window"] for s in storms),
        "false_silent_whole_run": silent,
        "refused_whole_run": last_stats["refused"],
        "steady_streams_broken": sum(s["steady_streams_broken"] for s in storms),
        "gateway_cpu_cores_peak_1s": worst(s["gateway_cpu_cores_peak_1s"] for s in storms),
        "gateway_rss_mb_peak": worst(s["gateway_rss_mb_peak"] for s in storms),
        "keeps_up": keeps_up(never_back, silent),
    }


def worst(values: Iterable[float | None], highest: bool = True) -> float | None:
    """The highest (or lowest) of the values known."""
    known = [value for value in values if value is not None]
    if not known:
        return None
    return max(known) if highest else min(known)


def keeps_up(never_back: int, false_silent: int) -> bool:
    """The verdict: every reconnecting agent came back, and no healthy node was declared Silent."""
    return never_back == 0 and false_silent == 0


if __name__ == "__main__":
    main()
