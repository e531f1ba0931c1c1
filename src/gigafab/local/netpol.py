"""Ask an independent analyzer which connections a set of NetworkPolicies allows.

The analyzer is np-guard's ``k8snetpolicy`` (github.com/np-guard/netpol-analyzer, built by
``toolchain.ensure_netpol_analyzer``). ``analyse`` writes Namespaces, Pods and
NetworkPolicies to a folder, runs ``k8snetpolicy list --dirpath FOLDER -o json`` on it and
returns the allowed connections, typed: who (a workload or a set of addresses) may reach
whom, on which protocols and ports.

The analyzer is lenient: it logs what it cannot read and carries on, exit status 0. Here
anything it logs is an error, since its answer would leave something out. It also reads an
IPv6 ipBlock as an IPv4 address (v1.4.4: ``2001:db8::/32`` becomes ``32.1.13.184``), so
objects with IPv6 ipBlocks are refused rather than judged wrongly.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from gigafab.local.layout import NETPOL_ANALYZER_VERSION, Layout

PROTOCOLS = ("SCTP", "TCP", "UDP")
ALL_CONNECTIONS = "All Connections"
EVERYWHERE = IPv4Network("0.0.0.0/0")


class AnalyzerError(Exception):
    """The analyzer could not judge the objects, or answered in a form not understood."""


@dataclass(frozen=True, order=True)
class Workload:
    """A workload the analyzer knows by namespace and name (a Pod here)."""

    namespace: str
    name: str
    kind: str = "Pod"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, order=True)
class Addresses:
    """Addresses outside the cluster's workloads, as the fewest IPv4 networks."""

    networks: tuple[IPv4Network, ...]

    def within(self, cidrs: Iterable[str | IPv4Network]) -> bool:
        """Every address here lies in one of ``cidrs`` (adjacent CIDRs count as one)."""
        allowed = list(ipaddress.collapse_addresses(IPv4Network(cidr) for cidr in cidrs))
        return all(any(network.subnet_of(other) for other in allowed) for network in self.networks)

    def overlaps(self, cidr: str | IPv4Network) -> bool:
        return any(network.overlaps(IPv4Network(cidr)) for network in self.networks)

    @property
    def everywhere(self) -> bool:
        return EVERYWHERE in self.networks

    def __str__(self) -> str:
        return ",".join(str(network) for network in self.networks)


Peer = Workload | Addresses


@dataclass(frozen=True, order=True)
class PortRange:
    """Ports ``first`` to ``last`` of one protocol."""

    protocol: str
    first: int = 1
    last: int = 65535

    def within(self, other: PortRange) -> bool:
        return self.protocol == other.protocol and other.first <= self.first and self.last <= other.last

    def __str__(self) -> str:
        ports = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        return f"{self.protocol} {ports}"


@dataclass(frozen=True)
class Connection:
    """``src`` may open connections to ``dst`` on ``ports`` (every protocol if ``everything``)."""

    src: Peer
    dst: Peer
    ports: tuple[PortRange, ...]
    everything: bool = False

    def allows(self, protocol: str, port: int) -> bool:
        return self.everything or any(PortRange(protocol, port, port).within(allowed) for allowed in self.ports)

    def only(self, allowed: Iterable[PortRange]) -> bool:
        """Nothing but ``allowed`` ports; never true of ``everything`` (other protocols too)."""
        limits = list(allowed)
        return not self.everything and all(any(mine.within(limit) for limit in limits) for mine in self.ports)

    def __str__(self) -> str:
        what = ALL_CONNECTIONS if self.everything else ",".join(str(ports) for ports in self.ports)
        return f"{self.src} => {self.dst} : {what}"


def parse_peer(text: str) -> Peer:
    """``namespace/name[Kind]`` or IPv4 ranges ``first-last`` joined by commas."""
    if text.endswith("]") and "/" in text and "[" in text:
        named, _, kind = text[:-1].partition("[")
        namespace, _, name = named.partition("/")
        return Workload(namespace, name, kind)
    try:
        networks = [network for part in text.split(",") for network in _address_range(part)]
    except ValueError as error:
        raise AnalyzerError(f"unexpected peer {text!r} in the analyzer's answer") from error
    return Addresses(tuple(ipaddress.collapse_addresses(networks)))


def _address_range(text: str) -> Iterable[IPv4Network]:
    first, dash, last = text.partition("-")
    if not dash:
        raise ValueError(text)
    return ipaddress.summarize_address_range(IPv4Address(first), IPv4Address(last))


def parse_ports(text: str) -> tuple[tuple[PortRange, ...], bool]:
    """``All Connections`` or ``TCP 53,UDP 53`` / ``SCTP 9,TCP 80,8000-8100``: the port ranges
    (every protocol's whole range for all connections), and whether it is all connections."""
    if text == ALL_CONNECTIONS:
        return tuple(PortRange(protocol) for protocol in PROTOCOLS), True
    ranges: list[PortRange] = []
    protocol = ""
    for item in text.split(","):
        word, _, ports = item.strip().rpartition(" ")
        protocol = word or protocol
        first, _, last = ports.partition("-")
        if protocol not in PROTOCOLS or not first.isdigit() or not (last or first).isdigit():
            raise AnalyzerError(f"unexpected connection {text!r} in the analyzer's answer")
        ranges.append(PortRange(protocol, int(first), int(last or first)))
    return tuple(ranges), False


def parse_connections(answer: str) -> list[Connection]:
    """The JSON of ``k8snetpolicy list -o json``: a list of ``{src, dst, conn}``."""
    try:
        entries = json.loads(answer)
    except json.JSONDecodeError as error:
        raise AnalyzerError(f"the analyzer's answer is not JSON: {answer[:200]!r}") from error
    if not isinstance(entries, list):
        raise AnalyzerError(f"the analyzer's answer is not a list: {answer[:200]!r}")
    return [_connection(entry) for entry in entries]


def _connection(entry: Any) -> Connection:
    if not isinstance(entry, dict) or not all(isinstance(entry.get(key), str) for key in ("src", "dst", "conn")):
        raise AnalyzerError(f"unexpected entry {entry!r} in the analyzer's answer")
    ports, everything = parse_ports(entry["conn"])
    return Connection(parse_peer(entry["src"]), parse_peer(entry["dst"]), ports, everything)


def ipv6_blocks(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    """The IPv6 ipBlock CIDRs of the NetworkPolicies among ``objects`` (the analyzer misreads them)."""
    found = []
    for policy in objects:
        if policy.get("kind") != "NetworkPolicy":
            continue
        spec = policy.get("spec") or {}
        rules = [*(spec.get("ingress") or []), *(spec.get("egress") or [])]
        for rule in rules:
            for peer in [*(rule.get("from") or []), *(rule.get("to") or [])]:
                cidr = str((peer.get("ipBlock") or {}).get("cidr", ""))
                if ":" in cidr:
                    found.append(cidr)
    return found


def write_objects(objects: Sequence[Mapping[str, Any]], folder: Path) -> list[Path]:
    """One JSON file per object, named after it, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, body in enumerate(objects):
        meta = body.get("metadata") or {}
        name = "-".join(str(part) for part in (body.get("kind"), meta.get("namespace"), meta.get("name")) if part)
        path = folder / f"{index:04d}-{name}.json"
        path.write_text(json.dumps(body, indent=1, default=str))
        written.append(path)
    return written


def run_analyzer(folder: Path, binary: Path) -> list[Connection]:
    """``k8snetpolicy list`` on ``folder``; whatever it logs makes this fail."""
    argv = [str(binary), "list", "--dirpath", str(folder), "-o", "json"]
    answer = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    if answer.returncode != 0 or answer.stderr.strip():
        raise AnalyzerError(
            f"k8snetpolicy {NETPOL_ANALYZER_VERSION} failed (exit {answer.returncode}) on {folder}: {answer.stderr.strip()}"
        )
    return parse_connections(answer.stdout)


def analyse(
    objects: Sequence[Mapping[str, Any]], *, folder: Path | None = None, layout: Layout | None = None
) -> list[Connection]:
    """The connections ``objects`` allow, by the analyzer; ``folder`` keeps its input."""
    ipv6 = ipv6_blocks(objects)
    if ipv6:
        raise AnalyzerError(f"k8snetpolicy {NETPOL_ANALYZER_VERSION} reads IPv6 ipBlocks as IPv4 addresses: {ipv6}")
    binary = (layout or Layout.default()).binary("k8snetpolicy")
    if not binary.exists():
        raise AnalyzerError(f"{binary} is missing: run `gigafab local build` (or source hack/setup)")
    if folder is not None:
        if folder.exists() and any(folder.iterdir()):
            raise AnalyzerError(f"{folder} is not empty: the analyzer would read what else is there too")
        write_objects(objects, folder)
        return run_analyzer(folder, binary)
    with tempfile.TemporaryDirectory(prefix="netpol-") as scratch:
        write_objects(objects, Path(scratch))
        return run_analyzer(Path(scratch), binary)
