"""Each site's health plane in its own network namespace, so a site can really be cut off.

With root and iproute2, ``gigafab local up`` runs every site's gateway and agents in a
network namespace ``gigafab-<port>`` joined to the host by a veth pair
(host ``10.<port/256>.<port%256>.1``, site ``.2``). The agents reach their gateway on the
namespace's own loopback; the gateway reaches etcd on the host side of the pair.
``gigafab local cut SITE`` takes the host side of the pair down: the gateway loses
etcd (its lease runs out, the operator sees the site lost) while agents and gateway
go on talking to each other, exactly as in a site whose uplink failed; ``gigafab
local restore SITE`` brings it back. Without root the health plane runs on loopback
and a site cannot be cut.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gigafab.local.processes import PlaneError

CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class SiteNet:
    """The network of one site's health plane."""

    site: str
    namespace: str
    host_link: str
    inner_link: str
    host_ip: str
    inner_ip: str


def available() -> bool:
    """Network namespaces can be made here (root and ``ip``)."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


def site_net(site: str, gateway_port: int) -> SiteNet:
    """The namespace, links and addresses of a site whose gateway listens on ``gateway_port``."""
    high, low = divmod(gateway_port, 256)  # one /30 per gateway port: planes side by side never share one
    return SiteNet(
        site=site,
        namespace=f"gigafab-{gateway_port}",
        host_link=f"gf{gateway_port}h",
        inner_link=f"gf{gateway_port}n",
        host_ip=f"10.{high}.{low}.1",
        inner_ip=f"10.{high}.{low}.2",
    )


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    answer = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if check and answer.returncode != 0:
        raise PlaneError(f"ip {' '.join(args)} failed: {answer.stderr.strip()}")
    return answer


def exists(net: SiteNet) -> bool:
    return Path(f"/run/netns/{net.namespace}").exists()


def ensure(net: SiteNet) -> None:
    """Create the namespace and its veth pair, addressed and up (nothing if it exists)."""
    if exists(net):
        return
    _ip("link", "del", net.host_link, check=False)  # a pair left behind by a namespace deleted by hand
    _ip("netns", "add", net.namespace)
    try:
        _ip("link", "add", net.host_link, "type", "veth", "peer", "name", net.inner_link, "netns", net.namespace)
        _ip("addr", "add", f"{net.host_ip}/30", "dev", net.host_link)
        _ip("link", "set", net.host_link, "up")
        inside = ("netns", "exec", net.namespace, "ip")
        _ip(*inside, "addr", "add", f"{net.inner_ip}/30", "dev", net.inner_link)
        _ip(*inside, "link", "set", net.inner_link, "up")
        _ip(*inside, "link", "set", "lo", "up")
    except PlaneError:
        remove(net)
        raise


def remove(net: SiteNet) -> None:
    """Delete the namespace (and with it the pair)."""
    if exists(net):
        _ip("netns", "del", net.namespace, check=False)
    _ip("link", "del", net.host_link, check=False)


def cut(net: SiteNet) -> None:
    _ip("link", "set", net.host_link, "down")


def restore(net: SiteNet) -> None:
    _ip("link", "set", net.host_link, "up")


def enter(namespace: str) -> Callable[[], None]:
    """A ``preexec_fn`` that moves the child into ``namespace`` before it execs (its command line stays its own)."""

    def join() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        with open(f"/run/netns/{namespace}", "rb") as handle:
            if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {namespace} failed")

    return join
