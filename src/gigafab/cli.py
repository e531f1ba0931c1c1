"""The ``gigafab`` command line.

Exit codes, the same for every command: 0 success; 1 a failure, with a message saying what
to do; 2 bad usage; 3 the command worked and found something that needs a look (``status``:
a site not Ready or Healthy, a workload not running; ``why``: the workload is pending;
``local status``: a component is stopped); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gigafab.local.plane import Plane


GENERATED = (
    ("crds", "the CRDs generated from the API models", "write crds/, charts/gigafab/crds/ and docs/api-reference.md"),
    ("chart", "the Helm chart's generated files", "write charts/gigafab/files (RBAC copies) and kopf's peering CRD"),
    ("proto", "the gRPC stubs generated from proto/", "write src/gigafab/health/v1 stubs"),
)
"""Commands that write generated files: ``gigafab <name> generate [--check]``."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gigafab", description="Control plane of a sovereign multi-site AI facility.")
    commands = parser.add_subparsers(dest="command", required=True)

    for name, about, writes in GENERATED:
        group = commands.add_parser(name, help=about)
        generate = group.add_subparsers(dest="action", required=True).add_parser("generate", help=writes)
        generate.add_argument("--check", action="store_true", help="only report stale files; exit 1 if any")

    local = commands.add_parser("local", help="a real local control plane with three GPU sites")
    local_commands = local.add_subparsers(dest="action", required=True)
    up = local_commands.add_parser("up", help="build (first time), start and populate the local plane")
    up.add_argument("--nodes-per-site", type=int, default=2, help="fake GPU nodes per site (default 2)")
    up.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per fake node (default 8)")
    up.add_argument("--no-operator", action="store_true", help="do not start the operator")
    up.add_argument("--tenants", action="store_true", help="also apply the sample Tenants and EgressDestinations")
    down = local_commands.add_parser("down", help="stop every process of the local plane")
    down.add_argument("--purge", action="store_true", help="also delete its state (certificates, etcd data)")
    status = local_commands.add_parser("status", help="what runs")
    status.add_argument("-o", "--output", choices=["table", "json"], default="table")
    local_commands.add_parser("kubeconfig", help="print the path of the admin kubeconfig")
    local_commands.add_parser("build", help="build the control-plane binaries into the cache (first time only)")
    links = (("cut", "cut a site's health plane off the rest (its uplink fails)"), ("restore", "reconnect a cut site"))
    for verb, words in links:
        link = local_commands.add_parser(verb, help=words)
        link.add_argument("site", help="niemeyer, de-halm or eemshaven")

    from gigafab.agents.cli import add_commands
    from gigafab.agents.simulated import Fault

    add_commands(commands)
    fault = commands.add_parser("fault", help="inject faults into simulated agents of the local plane")
    fault_commands = fault.add_subparsers(dest="action", required=True)
    inject = fault_commands.add_parser("inject", help="inject one fault into a node's simulated GPUs")
    inject.add_argument("--node", required=True)
    inject.add_argument("--gpu", type=int, default=0, help="GPU index (default 0)")
    kinds = inject.add_mutually_exclusive_group(required=True)
    kinds.add_argument("--xid", type=int, help="an XID event, e.g. 79 (fallen off the bus) or 63")
    for kind in Fault:
        if kind is not Fault.XID:
            kinds.add_argument(f"--{kind.value}", dest="fault", action="store_const", const=kind.value)
    inject.add_argument("--control", help="agent control URL (default: found from the local plane by node name)")

    status = commands.add_parser(
        "status", help="sites (healthy GPUs, power draw and limit), tenants, workloads and where they run"
    )
    status.add_argument("-o", "--output", choices=("table", "json"), default="table")
    status.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else the local plane's)")

    why = commands.add_parser("why", help="where a GpuWorkload runs, or why it does not: every site's verdict")
    why.add_argument("target", help="gpuworkload/NAME")
    why.add_argument("-n", "--namespace", default="default")
    why.add_argument("-o", "--output", choices=("table", "json"), default="table")
    why.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else the local plane's)")

    operator = commands.add_parser("operator", help="run the operator (kopf) against a cluster")
    operator.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or in-cluster)")
    operator.add_argument("--liveness", help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    operator.add_argument(
        "--peering",
        help="kopf peering name (a ClusterKopfPeering): only the instance with the highest --priority acts; default: standalone",
    )
    operator.add_argument("--priority", type=int, default=0, help="this instance's peering priority (default 0)")
    operator.add_argument("--metrics-address", help="HOST:PORT to serve Prometheus metrics on (default: none)")
    operator.add_argument(
        "--otlp-endpoint",
        help="export traces over OTLP/gRPC, e.g. http://collector:4317 (default: $OTEL_EXPORTER_OTLP_ENDPOINT, else off)",
    )
    operator.add_argument("-v", "--verbose", action="store_true")
    return parser


def _local(args: argparse.Namespace) -> int:
    from gigafab.local.plane import Options, Plane

    plane = Plane()
    if args.action == "up":
        plane.up(
            Options(
                nodes_per_site=args.nodes_per_site,
                gpus_per_node=args.gpus_per_node,
                operator=not args.no_operator,
                tenants=args.tenants,
            )
        )
    elif args.action == "down":
        stopped = plane.down(purge=args.purge)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    elif args.action == "status":
        report = plane.status()
        if args.output == "json":
            print(json.dumps(report, indent=2))
        else:
            print(f"{'COMPONENT':26}{'STATE':10}{'PID':>8}  PORTS")
            for name, row in report.items():
                state = "running" if row["running"] else "stopped"
                ports = ",".join(str(p) for p in row["ports"])  # type: ignore[attr-defined]
                print(f"{name:26}{state:10}{row['pid'] or '-':>8}  {ports}")
        return 0 if all(row["running"] for row in report.values()) else 3
    elif args.action in ("cut", "restore"):
        return _link(plane, args.action, args.site)
    elif args.action == "build":
        from gigafab.local.toolchain import ensure_binaries

        ensure_binaries(plane.layout)
    else:
        print(plane.layout.admin_kubeconfig)
    return 0


def _link(plane: Plane, action: str, site: str) -> int:
    from gigafab.local import health, sitenet
    from gigafab.local.layout import SITES

    if site not in SITES:
        print(f"gigafab: no site {site!r} in the local plane; sites: {', '.join(SITES)}", file=sys.stderr)
        return 2
    net = health.network(plane.layout, site)
    if net is None or not sitenet.exists(net):
        print("gigafab: only a site whose health plane runs in a network namespace can be cut (root, iproute2)", file=sys.stderr)
        return 1
    (sitenet.cut if action == "cut" else sitenet.restore)(net)
    print(f"{site}: {'cut off' if action == 'cut' else 'reconnected'} ({net.host_link} {'down' if action == 'cut' else 'up'})")
    return 0


def _fault(args: argparse.Namespace) -> int:
    from gigafab.agents.control import inject
    from gigafab.local.health import control_url
    from gigafab.local.layout import SITES, Layout

    url = args.control
    if url is None:
        site = next((site for site in SITES if args.node.startswith(f"{site}-")), None)
        if site is None:
            print(f"gigafab: cannot tell the site of {args.node}; pass --control", file=sys.stderr)
            return 2
        url = control_url(Layout.default(), site)
    order = {"node": args.node, "gpu": args.gpu, "fault": "xid" if args.xid is not None else args.fault, "xid": args.xid or 0}
    try:
        status, message = inject(url, order)
    except (OSError, ValueError) as unreachable:
        print(f"gigafab: no agent answers at {url} ({unreachable}); is `gigafab local up` running?", file=sys.stderr)
        return 1
    print(message, file=sys.stdout if status == 200 else sys.stderr)
    return 0 if status == 200 else 1


def _crds(args: argparse.Namespace) -> int:
    from gigafab.api import crdgen

    return crdgen.main(check=args.check)


def _chart(args: argparse.Namespace) -> int:
    from gigafab import chartgen

    return chartgen.main(check=args.check)


def _proto(args: argparse.Namespace) -> int:
    from gigafab import protogen

    return protogen.main(check=args.check)


def _health(args: argparse.Namespace) -> int:
    from gigafab.agents.cli import run

    return run(args)


def _status(args: argparse.Namespace) -> int:
    from gigafab.status import run

    return run(args.kubeconfig, args.output)


def _why(args: argparse.Namespace) -> int:
    from gigafab.why import run

    return run(args.target, args.namespace, args.kubeconfig, args.output)


def _operator(args: argparse.Namespace) -> int:
    from gigafab.operator.main import run

    run(
        args.kubeconfig,
        args.liveness,
        verbose=args.verbose,
        peering=args.peering,
        priority=args.priority,
        metrics_address=args.metrics_address,
        otlp_endpoint=args.otlp_endpoint,
    )
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "crds": _crds,
    "chart": _chart,
    "proto": _proto,
    "local": _local,
    "gateway": _health,
    "agent": _health,
    "watchdog": _health,
    "enrol": _health,
    "signer": _health,
    "fault": _fault,
    "operator": _operator,
    "why": _why,
    "status": _status,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from gigafab.local.processes import PlaneError

    try:
        return COMMANDS[args.command](args)
    except PlaneError as failure:
        print(f"gigafab: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
