"""Command lines of the local control plane's programs, all on loopback."""

from __future__ import annotations

import ipaddress
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from gigafab.local import sitenet
from gigafab.local.layout import SITES, Layout
from gigafab.local.pki import Pair
from gigafab.local.processes import Component

SERVICE_CIDR = "10.0.0.0/24"
POD_CIDR = "10.0.0.0/24"
"""kwok's ``--cidr``: the addresses it gives the fake nodes' pods (and, with ``--node-ip``, the node)."""
# Collect garbage less often: on two cores the apiserver's GC is a large share of its
# CPU, and a local plane has memory to spare.
GO_RUNTIME = {"GOGC": "400"}


def _etcd_binary(layout: Layout) -> str:
    from gigafab.local.toolchain import ensure_etcd

    return str(ensure_etcd(layout))


def http_ok(url: str, *, ca: Path | None = None, client: Pair | None = None) -> Callable[[], bool]:
    """A readiness probe: True once ``url`` answers 200."""

    def probe() -> bool:
        context = ssl.create_default_context(cafile=str(ca)) if ca else ssl.create_default_context()
        if ca is None:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if client is not None:
            context.load_cert_chain(str(client.cert), str(client.key))
        try:
            with urllib.request.urlopen(url, timeout=2, context=context if url.startswith("https") else None) as answer:  # noqa: S310
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    return probe


def etcd(layout: Layout, site_hosts: Sequence[str] = ()) -> Component:
    """etcd on loopback and, for the site gateways in their namespaces, on the host side of each site's link."""
    ports = layout.ports
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    listen = ",".join([layout.etcd_url, *(f"http://{host}:{ports.etcd_client}" for host in site_hosts)])
    return Component(
        "etcd",
        [
            _etcd_binary(layout),
            "--name=gigafab",
            f"--data-dir={layout.etcd_data}",
            f"--listen-client-urls={listen}",
            f"--advertise-client-urls={layout.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=gigafab={peer}",
            "--listen-metrics-urls=",
            "--unsafe-no-fsync=true",
            "--quota-backend-bytes=4294967296",
        ],
        http_ok(f"{layout.etcd_url}/health"),
        env=GO_RUNTIME,
    )


def apiserver(layout: Layout, serving: Pair, admin: Pair, sa_key: Path) -> Component:
    pki = layout.pki
    return Component(
        "kube-apiserver",
        [
            str(layout.binary("kube-apiserver")),
            f"--etcd-servers={layout.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={layout.ports.apiserver}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            # kubelets may not set node-restriction.kubernetes.io/ labels on their own Node: the Site of a node
            # (SITE_NODE_LABEL), which tenant pods are pinned by, is the provisioner's word, not the node's
            "--enable-admission-plugins=NodeRestriction",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa_key}",
            f"--service-account-signing-key-file={sa_key}",
            "--enable-priority-and-fairness=false",
            "--profiling=true",
            "--max-requests-inflight=2000",
            "--max-mutating-requests-inflight=1000",
            "--storage-media-type=application/vnd.kubernetes.protobuf",
            "--endpoint-reconciler-type=none",
        ],
        http_ok(f"{layout.apiserver_url}/readyz", ca=pki / "ca.crt", client=admin),
        env=GO_RUNTIME,
        ready_timeout=120,
    )


def _control_loop(layout: Layout, name: str, port: int) -> list[str]:
    """Command line shared by the controller-manager and the scheduler: identity and serving."""
    kubeconfig = layout.kubeconfig_for(name)
    return [
        str(layout.binary(name)),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        "--leader-elect=false",
    ]


def controller_manager(layout: Layout, sa_key: Path) -> Component:
    return Component(
        "kube-controller-manager",
        [
            *_control_loop(layout, "kube-controller-manager", layout.ports.controller_manager),
            f"--service-account-private-key-file={sa_key}",
            f"--root-ca-file={layout.pki / 'ca.crt'}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*,-node-ipam-controller,-cloud-node-lifecycle-controller,-service-lb-controller,-node-route-controller",
            "--concurrent-gc-syncs=10",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
        ],
        http_ok(f"https://127.0.0.1:{layout.ports.controller_manager}/healthz"),
    )


def scheduler(layout: Layout) -> Component:
    return Component(
        "kube-scheduler",
        _control_loop(layout, "kube-scheduler", layout.ports.scheduler),
        http_ok(f"https://127.0.0.1:{layout.ports.scheduler}/healthz"),
    )


def kwok(layout: Layout, stages: Path) -> Component:
    return Component(
        "kwok",
        [
            str(layout.binary("kwok")),
            f"--kubeconfig={layout.kubeconfig_for('kwok')}",
            f"--config={stages}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--manage-nodes-with-label-selector=",
            "--manage-single-node=",
            f"--cidr={POD_CIDR}",
            "--node-ip=10.0.0.1",
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{layout.ports.kwok}",
        ],
        http_ok(f"http://127.0.0.1:{layout.ports.kwok}/healthz"),
    )


def operator_metrics_url(layout: Layout) -> str:
    """Where the operator of the local plane serves its metrics."""
    return f"http://127.0.0.1:{layout.ports.operator_metrics}/metrics"


def cluster_networks(layout: Layout) -> list[str]:
    """The plane's own networks, kept out of every tenant's egress: pods, services (the node is in the pods'
    range) and each site's link to the host, where etcd listens for the site's gateway."""
    hosts = [sitenet.site_net(site, layout.ports.gateways + index).host_ip for index, site in enumerate(SITES)]
    links = [str(ipaddress.ip_network(f"{host}/30", strict=False)) for host in hosts]
    return sorted({POD_CIDR, SERVICE_CIDR, *links})


def operator(layout: Layout) -> Component:
    return Component(
        "gigafab-operator",
        [
            sys.executable,
            "-m",
            "gigafab",
            "operator",
            f"--kubeconfig={layout.kubeconfig_for('operator')}",
            f"--liveness=http://127.0.0.1:{layout.ports.operator_health}/healthz",
            f"--metrics-address=127.0.0.1:{layout.ports.operator_metrics}",
        ],
        http_ok(f"http://127.0.0.1:{layout.ports.operator_health}/healthz"),
        env={
            "GIGAFAB_HEALTH_ETCD": f"127.0.0.1:{layout.ports.etcd_client}",
            "GIGAFAB_CLUSTER_NETWORKS": ",".join(cluster_networks(layout)),
        },
        ready_timeout=60,
    )
