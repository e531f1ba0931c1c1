"""``gigafab local up | down | status``: a real control plane with three GPU sites.

``up`` builds what is missing, checks every port before starting anything, starts
etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok and the operator
on loopback, then applies the CRDs, RBAC, fake GPU nodes and sample Sites. It is
idempotent: what runs is left running. If a step fails, what this call started is
stopped again, so a failed ``up`` leaves nothing behind.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import yaml

from gigafab.local import components, health, kueue, sitenet, toolchain
from gigafab.local.kubeconfig import write_kubeconfig
from gigafab.local.layout import SITES, Layout, repo_root
from gigafab.local.nodes import gpu_node, kwok_stage_file
from gigafab.local.pki import APISERVER_NAMES, IDENTITIES, Authority, ensure_service_account_key
from gigafab.local.processes import Component, PlaneError, Supervisor, port_in_use

CORE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kueue", "kwok", "gigafab-operator")
ORDER = (*CORE, *health.component_names())
PORT_OF = {
    "etcd": ("etcd_client", "etcd_peer"),
    "kube-apiserver": ("apiserver",),
    "kube-controller-manager": ("controller_manager",),
    "kube-scheduler": ("scheduler",),
    "kueue": ("kueue_webhook", "kueue_health"),
    "kwok": ("kwok",),
    "gigafab-operator": ("operator_health", "operator_metrics"),
}


@dataclass(frozen=True)
class Options:
    """What ``gigafab local up`` creates."""

    nodes_per_site: int = 2
    """Fake GPU nodes in each site."""
    gpus_per_node: int = 8
    """``nvidia.com/gpu`` capacity of each fake node."""
    operator: bool = True
    """Start the operator (tests may run their own)."""
    samples: bool = True
    """Apply the sample Sites (and, with ``tenants``, sample Tenants)."""
    tenants: bool = False
    """Also apply the sample Tenants and EgressDestinations."""
    health: bool = True
    """Start a health gateway and simulated agents per site."""


class Plane:
    """One local control plane, described by its ``Layout``."""

    def __init__(self, layout: Layout | None = None) -> None:
        self.layout = layout or Layout.default()
        self.supervisor = Supervisor(self.layout.pids, self.layout.logs)

    # -- up ---------------------------------------------------------------
    def up(self, options: Options = Options()) -> None:
        toolchain.ensure_binaries(self.layout)
        wanted = [name for name in ORDER if (options.operator or name != "gigafab-operator") and (options.health or name in CORE)]
        self._check_ports(wanted)
        started: list[str] = []
        try:
            for component in self._components(wanted, options):
                if self.supervisor.pid_of(component.name) is None:
                    _say(f"starting {component.name}")
                    started.append(component.name)
                    if component.name == "kwok":
                        # a new kwok has a new identity: it would play no pod on a node whose lease the last
                        # one still holds (up to the lease's 40 s); the leases go, and it takes them at once
                        self.kubectl("delete", "leases", "--all", "-n", "kube-node-lease", check=False)
                self.supervisor.start(component)
                if component.name == "kube-apiserver":
                    self._bootstrap()
            self._populate(options)
        except BaseException:
            for name in reversed(started):
                self.supervisor.stop(name)
            raise
        self._print_usage()

    def restart(self, name: str, options: Options = Options()) -> int:
        """Stop ``name`` if it runs and start it as ``up`` would (a component that crashed or was
        stopped comes back with the same arguments); returns its new pid."""
        self.supervisor.stop(name)
        deadline = time.monotonic() + 60
        while any(port_in_use(port) for port in self.ports_of(name)) and time.monotonic() < deadline:
            time.sleep(0.25)  # the old process is gone, its listening sockets may take a moment
        return self.supervisor.start(next(iter(self._components([name], options))))

    def ports_of(self, name: str) -> list[int]:
        if name in PORT_OF:
            ports = self.layout.ports.all()
            return [ports[field] for field in PORT_OF[name]]
        return health.ports_of(self.layout, name)

    def _check_ports(self, wanted: Sequence[str]) -> None:
        taken = [
            f"{port} ({name})"
            for name in wanted
            if self.supervisor.pid_of(name) is None
            for port in self.ports_of(name)
            if port_in_use(port)
        ]
        if taken:
            raise PlaneError(
                "ports already taken by another program: " + ", ".join(taken) + ". Stop that program, "
                "or run a second plane beside it with GIGAFAB_PORT_OFFSET=100 and GIGAFAB_STATE=<dir>. "
                "Nothing was started."
            )

    def _components(self, wanted: Sequence[str], options: Options) -> Iterable[Component]:
        layout = self.layout
        authority = Authority(layout.pki)
        authority.ensure()
        serving = authority.issue_server("apiserver", APISERVER_NAMES)
        pairs = {identity.name: authority.issue_client(identity) for identity in IDENTITIES}
        for identity in IDENTITIES:
            path = layout.admin_kubeconfig if identity.name == "admin" else layout.kubeconfig_for(identity.name)
            write_kubeconfig(
                path, server=layout.apiserver_url, ca=authority.pair.cert, client=pairs[identity.name], user=identity.user
            )
        sa_key = ensure_service_account_key(layout.pki)
        stages = kwok_stage_file(layout.state / "kwok-stages.yaml")
        nets = [health.network(layout, site) for site in SITES] if options.health else []
        site_hosts = [net.host_ip for net in nets if net is not None]
        built = {
            "etcd": lambda: components.etcd(layout, site_hosts),
            "kube-apiserver": lambda: components.apiserver(layout, serving, pairs["admin"], sa_key),
            "kube-controller-manager": lambda: components.controller_manager(layout, sa_key),
            "kube-scheduler": lambda: components.scheduler(layout),
            "kueue": lambda: kueue.component(layout, authority.issue_server("kueue-webhook", kueue.SERVER_NAMES)),
            "kwok": lambda: components.kwok(layout, stages),
            "gigafab-operator": lambda: components.operator(layout),
        }
        if options.health:
            for name, component in health.health_components(layout, options.nodes_per_site, options.gpus_per_node).items():
                built[name] = lambda c=component: c  # type: ignore[misc]
        return (built[name]() for name in wanted)

    def _bootstrap(self) -> None:
        """What must exist before the other components start: RBAC and CRDs."""
        root = repo_root()
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(root / "config" / "rbac"))
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(root / "crds"))
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(root / "config" / "admission"))
        self.apply(kueue.manifests(toolchain.kueue_module(), self.layout, self.layout.pki / "ca.crt"))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")

    def _populate(self, options: Options) -> None:
        nodes = [gpu_node(site, index, gpus=options.gpus_per_node) for site in SITES for index in range(options.nodes_per_site)]
        self.create_missing(nodes)  # never re-apply: that would wipe the health plane's taints
        samples = repo_root() / "config" / "samples"
        if options.samples:
            self.kubectl("apply", "-f", str(samples / "sites.yaml"), "-f", str(samples / "allocation.yaml"))
        if options.tenants:
            self.kubectl("apply", "-f", str(samples / "egress.yaml"), "-f", str(samples / "tenants.yaml"))

    # -- helpers ------------------------------------------------------------
    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = [str(self.layout.binary("kubectl")), f"--kubeconfig={self.layout.admin_kubeconfig}", *args]
        answer = subprocess.run(argv, check=False, capture_output=True, text=True, input=stdin, timeout=300)
        if check and answer.returncode != 0:
            raise PlaneError(f"kubectl {' '.join(args)} failed: {answer.stderr.strip()}")
        return answer

    def apply(self, objects: Sequence[dict[str, object]]) -> None:
        """Server-side apply of ``objects`` (the plane is their only manager)."""
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump_all(objects))

    def create_missing(self, objects: Sequence[dict[str, object]]) -> None:
        answer = self.kubectl("create", "-f", "-", check=False, stdin=yaml.safe_dump_all(objects))
        failures = [line for line in answer.stderr.splitlines() if line.strip() and "AlreadyExists" not in line]
        if answer.returncode != 0 and failures:
            raise PlaneError("creating nodes failed: " + "\n".join(failures))

    def _print_usage(self) -> None:
        kubeconfig = self.layout.admin_kubeconfig
        _say(
            "\nthe local control plane is up.\n"
            f"  export KUBECONFIG={kubeconfig}\n"
            f"  export PATH={self.layout.kube_bin}:$PATH   # kubectl {self.layout.kube_bin.name}\n"
            "  kubectl get sites,tenants,egressdestinations\n"
            "  kubectl get nodes -L topology.kubernetes.io/zone\n"
            f"metrics (docs/observability.md): {components.operator_metrics_url(self.layout)} (operator), "
            f"{health.metrics_url(self.layout, SITES[0])} ({SITES[0]}'s gateway)\n"
            "stop it with: gigafab local down"
        )

    # -- down and status -----------------------------------------------------
    def down(self, *, purge: bool = False) -> list[str]:
        stopped = [name for name in reversed(ORDER) if self.supervisor.stop(name)]
        for site in SITES:
            net = health.network(self.layout, site)
            if net is not None:
                sitenet.remove(net)
        if purge and self.layout.state.exists():
            shutil.rmtree(self.layout.state)
        return stopped

    def status(self) -> dict[str, dict[str, object]]:
        report: dict[str, dict[str, object]] = {}
        for name in ORDER:
            pid = self.supervisor.pid_of(name)
            report[name] = {"running": pid is not None, "pid": pid, "ports": self.ports_of(name)}
        return report


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
