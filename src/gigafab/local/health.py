"""The health plane of the local control plane: a gateway (its connections carried by its
compiled edge, ``gigafab-edge``, built into the cache), a process of simulated agents and
the simulated watchdog of their nodes (``gigafab watchdog``) per site, with their own CA
(agents' certificates are no use to the apiserver).

Each site's processes run in the site's network namespace when one can be made (see
``sitenet``), so that a site can be cut off; agents fence after ``FENCE_AFTER`` seconds
without their gateway, and record it in ``<state>/fences/<site>.jsonl``. They keep their
nodes' fences in ``<state>/agents/<site>/`` and pet the watchdog there; the watchdog,
a process of its own, records a fence in the same log when an agent stops petting
(killed, frozen) for longer than its timeout."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from gigafab.agents.watchdog import heartbeat_path
from gigafab.local import sitenet
from gigafab.local.layout import SITES, Layout
from gigafab.local.nodes import node_name
from gigafab.local.pki import Authority, node_identity
from gigafab.local.processes import Component
from gigafab.local.toolchain import ensure_gateway_edge

FENCE_AFTER = 4.0
"""Seconds without contact after which a site's agents stop its work (short, for the demo)."""


def tcp_open(port: int, host: str = "127.0.0.1") -> Callable[[], bool]:
    def probe() -> bool:
        with socket.socket() as connection:
            connection.settimeout(1)
            return connection.connect_ex((host, port)) == 0

    return probe


def network(layout: Layout, site: str) -> sitenet.SiteNet | None:
    """The site's network namespace, when this machine can make one."""
    return sitenet.site_net(site, gateway_port(layout, site)) if sitenet.available() else None


def _reachable_host(layout: Layout, site: str) -> str:
    """The address at which the host reaches the site's health plane: its namespace's, else loopback."""
    net = network(layout, site)
    return net.inner_ip if net is not None and sitenet.exists(net) else "127.0.0.1"


def control_url(layout: Layout, site: str) -> str:
    """Where the site's simulated agents take fault orders."""
    return f"http://{_reachable_host(layout, site)}:{control_port(layout, site)}"


def metrics_url(layout: Layout, site: str) -> str:
    """Where the site's gateway serves its Prometheus metrics (from the host, like its gRPC port)."""
    return f"http://{_reachable_host(layout, site)}:{metrics_port(layout, site)}/metrics"


def metrics_urls(layout: Layout) -> dict[str, str]:
    """Every site gateway's metrics URL, by site."""
    return {site: metrics_url(layout, site) for site in SITES}


def fence_log(layout: Layout, site: str) -> Path:
    return layout.state / "fences" / f"{site}.jsonl"


def agent_state(layout: Layout, site: str) -> Path:
    """Where the site's agents keep their nodes' fences and pet their watchdog."""
    return layout.state / "agents" / site


def watching(layout: Layout, site: str) -> Callable[[], bool]:
    """The site's watchdog looked at its pets within the last two seconds."""
    heartbeat = heartbeat_path(agent_state(layout, site))

    def probe() -> bool:
        try:
            return time.time() - heartbeat.stat().st_mtime < 2
        except FileNotFoundError:
            return False

    return probe


def gateway_port(layout: Layout, site: str) -> int:
    return layout.ports.gateways + SITES.index(site)


def control_port(layout: Layout, site: str) -> int:
    return layout.ports.agent_control + SITES.index(site)


def metrics_port(layout: Layout, site: str) -> int:
    return layout.ports.gateway_metrics + SITES.index(site)


def component_names() -> list[str]:
    """In the order they start (and stop in reverse): a site's watchdog outlives its agents."""
    return [f"{kind}-{site}" for kind in ("gateway", "watchdog", "agents") for site in SITES]


def ports_of(layout: Layout, name: str) -> list[int]:
    kind, site = name.split("-", 1)
    if kind == "gateway":
        return [gateway_port(layout, site), metrics_port(layout, site)]
    if kind == "watchdog":
        return []
    return [control_port(layout, site)]


def _authority(layout: Layout) -> Authority:
    authority = Authority(layout.pki / "health", "gigafab-health-ca")
    authority.ensure()
    return authority


def health_components(layout: Layout, nodes_per_site: int, gpus_per_node: int) -> dict[str, Component]:
    """Every gateway and agent process, by name; certificates issued as needed."""
    authority = _authority(layout)
    agents_dir = layout.pki / "health"
    built: dict[str, Component] = {}
    edge = ensure_gateway_edge(layout)
    for site in SITES:
        served = authority.issue_server(f"gateway-{site}", ("localhost", "127.0.0.1"))
        port = gateway_port(layout, site)
        net = network(layout, site)
        if net is not None:
            sitenet.ensure(net)
        inside = net.namespace if net is not None else None
        etcd_host = net.host_ip if net is not None else "127.0.0.1"
        reachable = net.inner_ip if net is not None else "127.0.0.1"
        listen = "0.0.0.0" if net is not None else "127.0.0.1"  # noqa: S104 - all of the site's namespace, no more
        fence_log(layout, site).parent.mkdir(parents=True, exist_ok=True)
        built[f"gateway-{site}"] = Component(
            f"gateway-{site}",
            [
                sys.executable,
                "-m",
                "gigafab",
                "gateway",
                f"--site={site}",
                f"--listen={listen}:{port}",
                f"--cert={served.cert}",
                f"--key={served.key}",
                f"--ca={authority.pair.cert}",
                f"--etcd={etcd_host}:{layout.ports.etcd_client}",
                f"--fence-after={FENCE_AFTER:g}",
                f"--metrics-address={listen}:{metrics_port(layout, site)}",
                f"--edge={edge}",
            ],
            tcp_open(port, reachable),
            netns=inside,
        )
        built[f"watchdog-{site}"] = Component(
            f"watchdog-{site}",
            [
                sys.executable,
                "-m",
                "gigafab",
                "watchdog",
                f"--state-dir={agent_state(layout, site)}",
                f"--fence-log={fence_log(layout, site)}",
            ],
            watching(layout, site),
            netns=inside,
        )
        nodes = [node_name(site, index) for index in range(nodes_per_site)]
        for node in nodes:
            authority.issue_client(node_identity(node, site))
        built[f"agents-{site}"] = Component(
            f"agents-{site}",
            [
                sys.executable,
                "-m",
                "gigafab",
                "agent",
                f"--site={site}",
                f"--gateway=127.0.0.1:{port}",
                f"--pki={agents_dir}",
                f"--gpus={gpus_per_node}",
                f"--control-port={control_port(layout, site)}",
                f"--control-host={listen}",
                f"--fence-after={FENCE_AFTER:g}",
                f"--fence-log={fence_log(layout, site)}",
                f"--state-dir={agent_state(layout, site)}",
                "--watchdog=simulated",
                *(f"--node={node}" for node in nodes),
            ],
            tcp_open(control_port(layout, site), reachable),
            netns=inside,
        )
    return built
