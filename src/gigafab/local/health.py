"""The health plane of the local control plane: a gateway (its connections carried by its
compiled edge, ``gigafab-edge``, built into the cache) and a process of simulated
agents per site, with their own CA (agents' certificates are no use to the apiserver).

Each site's pair runs in the site's network namespace when one can be made (see
``sitenet``), so that a site can be cut off; agents fence after ``FENCE_AFTER`` seconds
without their gateway, and record it in ``<state>/fences/<site>.jsonl``."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from pathlib import Path

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


def gateway_port(layout: Layout, site: str) -> int:
    return layout.ports.gateways + SITES.index(site)


def control_port(layout: Layout, site: str) -> int:
    return layout.ports.agent_control + SITES.index(site)


def metrics_port(layout: Layout, site: str) -> int:
    return layout.ports.gateway_metrics + SITES.index(site)


def component_names() -> list[str]:
    return [f"{kind}-{site}" for kind in ("gateway", "agents") for site in SITES]


def ports_of(layout: Layout, name: str) -> list[int]:
    kind, site = name.split("-", 1)
    if kind == "gateway":
        return [gateway_port(layout, site), metrics_port(layout, site)]
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
                *(f"--node={node}" for node in nodes),
            ],
            tcp_open(control_port(layout, site), reachable),
            netns=inside,
        )
    return built
