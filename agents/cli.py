"""``gigafab gateway``, ``gigafab agent`` and ``gigafab watchdog``: the health plane's processes.

Each command imports only what its process needs: an agent runs on every GPU node,
and the gateway's etcd client and server code would cost it memory for nothing.
The agent process also never loads Python's ``ssl`` module (OpenSSL): its TLS is
gRPC's own, and asyncio would load OpenSSL only for TLS transports the agent never
opens. That alone is 4 MB of its resident memory. An enrolling agent (``--enrol``) asks the
apiserver for its certificate through a short-lived ``gigafab enrol`` process for that reason.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gigafab.agents.agent import GpuBackend
    from gigafab.agents.fence_setup import Keepers


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from gigafab.agents import identity_cli

    identity_cli.add_commands(commands)
    gateway = commands.add_parser("gateway", help="run the health gateway of one site")
    gateway.add_argument("--site", required=True)
    gateway.add_argument("--listen", default="127.0.0.1:20900", help="host:port to serve gRPC on")
    gateway.add_argument("--cert", type=Path, required=True, help="serving certificate (PEM)")
    gateway.add_argument("--key", type=Path, required=True)
    gateway.add_argument("--ca", type=Path, required=True, help="CA that signs agents' certificates")
    gateway.add_argument("--etcd", default="127.0.0.1:2379", help="etcd host:port for transitions")
    gateway.add_argument("--silent-after", type=float, default=3.0, help="seconds without a report before Silent")
    gateway.add_argument(
        "--fence-after", type=float, default=30.0, help="seconds without etcd after which this site's agents must fence"
    )
    gateway.add_argument("--stats-file", help="write counters and report latencies here every 2 s (benchmarks)")
    gateway.add_argument("--metrics-address", help="HOST:PORT to serve Prometheus metrics on (default: none)")
    gateway.add_argument(
        "--edge",
        type=Path,
        help="the gigafab-edge binary: carry the agents' mTLS and gRPC in that compiled process (for thousands of "
        "agents; `gigafab gateway-edge` builds it) instead of grpc.aio in this one",
    )
    gateway.add_argument(
        "--otlp-endpoint",
        help="export traces over OTLP/gRPC, e.g. http://collector:4317 (default: $OTEL_EXPORTER_OTLP_ENDPOINT, else off)",
    )

    agent = commands.add_parser(
        "agent", help="run node agents: simulated ones (one per --node), or this node's real GPUs (--backend nvml)"
    )
    agent.add_argument("--site", required=True)
    agent.add_argument("--node", action="append", required=True, help="node name; repeat for several agents")
    agent.add_argument("--gateway", action="append", required=True, help="gateway host:port; repeat to fail over")
    identity_cli.enrolment_flags(agent)
    agent.add_argument("--pki", type=Path, required=True, help="folder with <node>.crt, <node>.key and ca.crt")
    agent.add_argument("--gpus", type=int, default=8, help="simulated GPUs per node (--backend simulated)")
    agent.add_argument(
        "--backend",
        choices=["simulated", "nvml"],
        default="simulated",
        help="nvml: this machine's real GPUs through NVML (exactly one --node: this node); exits 1 without NVML",
    )
    agent.add_argument("--interval", type=float, default=1.0)
    agent.add_argument(
        "--fence-after", type=float, default=30.0, help="seconds without a gateway after which the node's workloads stop"
    )
    agent.add_argument(
        "--runtime",
        choices=["simulated", "cri"],
        help="how a fence stops work: cri stops the node's gigafab pod sandboxes with crictl "
        "(default: cri with --backend nvml, else simulated)",
    )
    agent.add_argument(
        "--crictl", default="crictl", help="cri runtime: the crictl command (CONTAINER_RUNTIME_ENDPOINT says where)"
    )
    agent.add_argument("--fence-log", type=Path, help="simulated runtime: append fences to this JSON-lines file")
    agent.add_argument(
        "--state-dir",
        type=Path,
        help="keep each node's fence here (fence-<node>.json), so a restarted agent starts fenced or counts its lost "
        "contact on; with --watchdog simulated also the watchdog's pets (required with --runtime cri)",
    )
    agent.add_argument(
        "--watchdog",
        help="what stops the node when the agent cannot: a watchdog device (e.g. /dev/watchdog: softdog or the "
        "node's hardware watchdog), simulated (pets watched by `gigafab watchdog`), or none "
        "(default: /dev/watchdog with --runtime cri, else none)",
    )
    agent.add_argument(
        "--watchdog-timeout",
        type=int,
        help="seconds the watchdog waits for a pet while the node is in contact (default: half of --fence-after)",
    )
    agent.add_argument(
        "--metrics-address", help="HOST:PORT to serve the agents' Prometheus metrics on, at /metrics (default: none)"
    )
    agent.add_argument("--server-name", default="localhost", help="name the gateways' serving certificate must carry")
    agent.add_argument("--control-port", type=int, default=0, help="port for `gigafab fault inject` (0: none)")
    agent.add_argument("--control-host", default="127.0.0.1", help="address for fault injection (a site namespace's own)")

    watchdog = commands.add_parser(
        "watchdog", help="the local plane's simulated watchdog: records a fence when an agent's pets run out"
    )
    watchdog.add_argument("--state-dir", type=Path, required=True, help="the agents' --state-dir")
    watchdog.add_argument("--fence-log", type=Path, required=True, help="the site's fence log (the agents' --fence-log)")


def run(args: argparse.Namespace) -> int:
    from gigafab.agents import identity_cli

    if args.command in identity_cli.COMMANDS or (args.command == "agent" and args.enrol):
        refused = identity_cli.run(args)  # enrol, signer; an enrolling agent's arguments
        if refused is not None:
            return refused
    if args.command == "agent" and "asyncio" not in sys.modules:
        sys.modules["ssl"] = None  # type: ignore[assignment]  # see the module's docstring
    import asyncio

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "watchdog":
        from gigafab.agents.watchdog import watch

        watch(args.state_dir, args.fence_log)
        return 0
    if args.command == "gateway":
        from gigafab.agents.site_gateway import GatewayConfig
        from gigafab.agents.site_gateway import run as run_gateway
        from gigafab.agents.tls import GatewayTls

        from gigafab.telemetry import tracing

        host, port = args.etcd.rsplit(":", 1)
        config = GatewayConfig(
            args.site,
            args.listen,
            GatewayTls(args.cert, args.key, args.ca),
            host,
            int(port),
            args.silent_after,
            fence_after=args.fence_after,
            stats_file=args.stats_file,
            metrics_address=args.metrics_address,
            edge=args.edge,
        )
        traces = tracing.configure("gigafab-gateway", args.otlp_endpoint)
        try:
            asyncio.run(run_gateway(config))
        finally:
            if traces is not None:
                traces.shutdown()  # flushes the last spans
        return 0
    backends = _backends(args)  # first: an agent that cannot read its GPUs must not arm the watchdog
    if isinstance(backends, int):
        return backends
    from gigafab.agents.fence_setup import FenceSetupError, keepers

    try:
        fences = keepers(args)
    except FenceSetupError as wrong:
        print(f"gigafab agent: {wrong}", file=sys.stderr)
        return wrong.code
    asyncio.run(_agents(args, backends, fences))
    return 0


def _backends(args: argparse.Namespace) -> dict[str, GpuBackend] | int:
    """Each ``--node``'s GPUs, or the exit code of a command that cannot run: 2 for nvml with other than one
    node (it reads this machine's GPUs), 1 when this host has no NVML (the message says what to do)."""
    if args.backend == "simulated":
        from gigafab.agents.simulated import SimulatedBackend

        return {node: SimulatedBackend(node, args.gpus) for node in args.node}
    if len(args.node) != 1:
        nodes = ", ".join(args.node)
        print(
            f"gigafab: --backend nvml reads this machine's GPUs: give one --node, this node's name (not {nodes})", file=sys.stderr
        )
        return 2
    from gigafab.agents.nvml import NvmlBackend, NvmlUnavailable

    try:
        return {args.node[0]: NvmlBackend()}
    except NvmlUnavailable as missing:
        print(f"gigafab: {missing}", file=sys.stderr)
        return 1


async def _agents(args: argparse.Namespace, backends: dict[str, GpuBackend], fences: Keepers) -> None:
    import asyncio
    import signal

    from gigafab.agents import identity_cli
    from gigafab.agents.agent import Agent
    from gigafab.agents.control import FaultControl
    from gigafab.agents.tls import AgentTls

    agents = {
        node: Agent(
            node,
            args.site,
            backends[node],
            args.gateway,
            AgentTls(args.pki / f"{node}.crt", args.pki / f"{node}.key", args.ca or args.pki / "ca.crt", args.server_name),
            args.interval,
            fences.by_node[node],
        )
        for node in args.node
    }
    if args.control_port:
        await FaultControl(agents).serve(args.control_port, args.control_host)
    if args.metrics_address:
        await fences.metrics.serve(args.metrics_address)
    running = asyncio.gather(*(agent.run() for agent in agents.values()), *identity_cli.renewals(args, agents))
    # a clean stop lets each keeper leave its watchdog and record as they must be (keeper.FenceKeeper.close)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, running.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await running
