"""``gigafab gateway`` and ``gigafab agent``: the health plane's processes.

Each command imports only what its process needs: an agent runs on every GPU node,
and the gateway's etcd client and server code would cost it memory for nothing.
The agent process also never loads Python's ``ssl`` module (OpenSSL): its TLS is
gRPC's own, and asyncio would load OpenSSL only for TLS transports the agent never
opens. That alone is 4 MB of its resident memory. An enrolling agent (``--enrol``) asks the
apiserver for its certificate through a short-lived ``gigafab enrol`` process for that reason.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    add_identity_commands(commands)
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

    agent = commands.add_parser("agent", help="run simulated node agents (one per --node) in this process")
    agent.add_argument("--site", required=True)
    agent.add_argument("--node", action="append", required=True, help="node name; repeat for several agents")
    agent.add_argument("--gateway", action="append", required=True, help="gateway host:port; repeat to fail over")
    _enrolment_flags(agent)
    agent.add_argument("--pki", type=Path, required=True, help="folder with <node>.crt, <node>.key and ca.crt")
    agent.add_argument("--gpus", type=int, default=8, help="simulated GPUs per node")
    agent.add_argument(
        "--backend",
        choices=["simulated", "nvml"],
        default="simulated",
        help="nvml: this machine's real GPUs through NVML (one --node)",
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
    agent.add_argument("--server-name", default="localhost", help="name the gateways' serving certificate must carry")
    agent.add_argument("--control-port", type=int, default=0, help="port for `gigafab fault inject` (0: none)")
    agent.add_argument("--control-host", default="127.0.0.1", help="address for fault injection (a site namespace's own)")


def run(args: argparse.Namespace) -> int:
    if args.command in IDENTITY_COMMANDS:
        return _identity(args)
    if args.command == "agent" and args.enrol and len(args.node) != 1:
        print("gigafab agent: --enrol gets one node's certificate: give exactly one --node", file=sys.stderr)
        return 2
    if args.command == "agent" and "asyncio" not in sys.modules:
        sys.modules["ssl"] = None  # type: ignore[assignment]  # see the module's docstring
    import asyncio

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
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
    asyncio.run(_agents(args))
    return 0


async def _agents(args: argparse.Namespace) -> None:
    import asyncio

    from gigafab.agents.agent import Agent
    from gigafab.agents.control import FaultControl
    from gigafab.agents.fencing import CriRuntime, Fence, SimulatedRuntime
    from gigafab.agents.simulated import SimulatedBackend
    from gigafab.agents.tls import AgentTls

    # a real node's fence must really stop its work: never simulated unless asked for
    runtime = args.runtime or ("cri" if args.backend == "nvml" else "simulated")
    agents = {
        node: Agent(
            node,
            args.site,
            SimulatedBackend(node, args.gpus),
            args.gateway,
            AgentTls(args.pki / f"{node}.crt", args.pki / f"{node}.key", args.ca or args.pki / "ca.crt", args.server_name),
            args.interval,
            Fence(CriRuntime(args.crictl) if runtime == "cri" else SimulatedRuntime(node, args.fence_log), args.fence_after),
        )
        for node in args.node
    }
    if args.control_port:
        await FaultControl(agents).serve(args.control_port, args.control_host)
    await asyncio.gather(*(agent.run() for agent in agents.values()), *_renewals(args, agents))


# -- each agent's own identity: `gigafab agent --enrol`, `gigafab enrol`, `gigafab signer` (agents/identity.py)

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any

    from gigafab.agents.agent import Agent

IDENTITY_COMMANDS = ("enrol", "signer")


def _enrolment_flags(agent: argparse.ArgumentParser) -> None:
    agent.add_argument(
        "--enrol",
        action="store_true",
        help="get this node's certificate from the gigafab signer (a CertificateSigningRequest made with the pod's "
        "ServiceAccount token), write it with its key into --pki (a tmpfs) and renew it; one --node",
    )
    agent.add_argument("--ca", type=Path, help="CA certificate of the gateways (default: <pki>/ca.crt)")
    _apiserver_flags(agent)
    agent.add_argument(
        "--certificate-seconds", type=int, default=86400, help="with --enrol: lifetime to ask for (the signer may cap it)"
    )


SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
"""Where the kubelet mounts a pod's ServiceAccount token (bound to the pod and its node, renewed hourly)
and the apiserver's CA."""


def _apiserver_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--apiserver", help="https://HOST:PORT of the apiserver (default: in-cluster)")
    parser.add_argument("--token", type=Path, default=SERVICE_ACCOUNT / "token", help="the pod's ServiceAccount token")
    parser.add_argument("--apiserver-ca", type=Path, default=SERVICE_ACCOUNT / "ca.crt", help="CA of the apiserver")


def add_identity_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    enrol = commands.add_parser(
        "enrol", help="get one node's certificate from the gigafab signer; prints key and certificate (what --enrol runs)"
    )
    enrol.add_argument("--node", required=True)
    enrol.add_argument("--site", required=True)
    _apiserver_flags(enrol)
    enrol.add_argument("--seconds", type=int, default=86400, help="lifetime to ask for (the signer may cap it)")
    enrol.add_argument("--wait", type=int, default=600, help="seconds to wait for the signer's answer")

    signer = commands.add_parser("signer", help="approve or deny, and sign, the agents' certificate requests")
    signer.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else the pod's ServiceAccount)")
    signer.add_argument("--ca-cert", type=Path, required=True, help="the health plane's CA certificate (PEM)")
    signer.add_argument("--ca-key", type=Path, required=True, help="its private key")
    signer.add_argument(
        "--agents", required=True, help="NAMESPACE/NAME of the agents' ServiceAccount: only its tokens get certificates"
    )
    signer.add_argument("--max-seconds", type=int, default=86400, help="longest lifetime of a certificate (default a day)")
    signer.add_argument("--publish-ca", help="NAMESPACE/NAME of a ConfigMap to keep the CA certificate in (ca.crt)")


def _identity(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "enrol":
        from gigafab.agents import enrol

        try:
            apiserver = enrol.Apiserver(args.apiserver or enrol.Apiserver.in_cluster_url(), args.token, args.apiserver_ca)
        except enrol.EnrolmentFailed as failure:
            print(f"gigafab enrol: {failure}", file=sys.stderr)
            return 2
        return enrol.main(args.node, args.site, apiserver, args.seconds, args.wait)
    from gigafab.agents import signer

    return signer.main(args.kubeconfig, args.ca_cert, args.ca_key, args.agents, args.max_seconds, args.publish_ca)


def _renewals(args: argparse.Namespace, agents: dict[str, Agent]) -> list[Coroutine[Any, Any, None]]:
    """With --enrol, the task that keeps the (one) agent's certificate fresh."""
    if not args.enrol:
        return []
    from gigafab.agents.renewal import Renewal

    ((node, agent),) = agents.items()
    command = [sys.executable, "-m", "gigafab", "enrol", f"--node={node}", f"--site={args.site}"]
    command += [f"--seconds={args.certificate_seconds}", f"--token={args.token}", f"--apiserver-ca={args.apiserver_ca}"]
    command += [f"--apiserver={args.apiserver}"] if args.apiserver else []
    return [Renewal(node, agent.tls, command).run()]
