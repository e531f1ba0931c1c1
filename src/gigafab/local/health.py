"""The health plane of the local control plane: a gateway and a process of simulated
agents per site, with their own CA (agents' certificates are no use to the apiserver)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable

from gigafab.local.layout import SITES, Layout
from gigafab.local.nodes import node_name
from gigafab.local.pki import Authority, ClientIdentity
from gigafab.local.processes import Component


def tcp_open(port: int) -> Callable[[], bool]:
    def probe() -> bool:
        with socket.socket() as connection:
            connection.settimeout(1)
            return connection.connect_ex(("127.0.0.1", port)) == 0

    return probe


def gateway_port(layout: Layout, site: str) -> int:
    return layout.ports.gateways + SITES.index(site)


def control_port(layout: Layout, site: str) -> int:
    return layout.ports.agent_control + SITES.index(site)


def component_names() -> list[str]:
    return [f"{kind}-{site}" for kind in ("gateway", "agents") for site in SITES]


def ports_of(layout: Layout, name: str) -> list[int]:
    kind, site = name.split("-", 1)
    return [gateway_port(layout, site) if kind == "gateway" else control_port(layout, site)]


def _authority(layout: Layout) -> Authority:
    authority = Authority(layout.pki / "health", "gigafab-health-ca")
    authority.ensure()
    return authority


def health_components(layout: Layout, nodes_per_site: int, gpus_per_node: int) -> dict[str, Component]:
    """Every gateway and agent process, by name; certificates issued as needed."""
    authority = _authority(layout)
    agents_dir = layout.pki / "health"
    built: dict[str, Component] = {}
    for site in SITES:
        served = authority.issue_server(f"gateway-{site}", ("localhost", "127.0.0.1"))
        port = gateway_port(layout, site)
        built[f"gateway-{site}"] = Component(
            f"gateway-{site}",
            [
                sys.executable,
                "-m",
                "gigafab",
                "gateway",
                f"--site={site}",
                f"--listen=127.0.0.1:{port}",
                f"--cert={served.cert}",
                f"--key={served.key}",
                f"--ca={authority.pair.cert}",
                f"--etcd=127.0.0.1:{layout.ports.etcd_client}",
            ],
            tcp_open(port),
        )
        nodes = [node_name(site, index) for index in range(nodes_per_site)]
        for node in nodes:
            authority.issue_client(ClientIdentity(node, node))
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
                *(f"--node={node}" for node in nodes),
            ],
            tcp_open(control_port(layout, site)),
        )
    return built
