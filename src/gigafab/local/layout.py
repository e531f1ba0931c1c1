"""Where the local control plane keeps its binaries, state and ports.

Binaries are built once and cached outside the repository, keyed by version, so a
second ``gigafab local up`` (and every CI run after the first) skips the build.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
KWOK_VERSION = "v0.8.0"
BUF_VERSION = "v1.57.0"
ETCD_VERSION = "v3.6.6"
KUEUE_VERSION = "v0.15.0"
HELM_VERSION = "v3.22.0"
KUBECONFORM_VERSION = "v0.8.0"
NETPOL_ANALYZER_VERSION = "v1.4.4"
"""np-guard's netpol-analyzer: its ``k8snetpolicy`` CLI checks the generated NetworkPolicies independently."""
CERT_MANAGER_VERSION = "v1.19.1"
"""cert-manager's CRDs (from its Go module) validate and receive the chart's Certificates."""
CRICTL_VERSION = "v1.37.0"
"""cri-tools' crictl, through which an agent fences a real node; the Dockerfile builds the same version.
(The Go module proxy serves v1.37.0; it does not serve v1.35.0.)"""
SITES = ("niemeyer", "de-halm", "eemshaven")


def cache_home() -> Path:
    """The cache outside the repository (``$GIGAFAB_CACHE`` or ``~/.cache/gigafab``)."""
    configured = os.environ.get("GIGAFAB_CACHE")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "gigafab"


def repo_root() -> Path:
    """The checkout this package was installed from (holds ``pyproject.toml``)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "hack").is_dir():
            return parent
    raise FileNotFoundError("gigafab local needs a source checkout (no pyproject.toml found)")


@dataclass(frozen=True)
class Ports:
    """Loopback ports of one local control plane; all are checked before anything starts."""

    etcd_client: int = 23790
    """etcd client URL port."""
    etcd_peer: int = 23800
    """etcd peer URL port (single member, loopback)."""
    apiserver: int = 26443
    """kube-apiserver secure port."""
    controller_manager: int = 20257
    """kube-controller-manager secure (health) port."""
    scheduler: int = 20259
    """kube-scheduler secure (health) port."""
    kwok: int = 20280
    """kwok's metrics and health port."""
    operator_health: int = 20880
    """The operator's liveness endpoint."""
    gateways: int = 20900
    """First health gateway's gRPC port; one port per site, in the order of ``SITES``."""
    agent_control: int = 20910
    """First fault-injection port of the simulated agents; one per site."""
    kueue_webhook: int = 20930
    """Kueue's admission and conversion webhooks (HTTPS, the plane's CA)."""
    kueue_health: int = 20931
    """Kueue's readiness and liveness endpoint."""
    operator_metrics: int = 20940
    """The operator's Prometheus metrics (``/metrics``)."""
    gateway_metrics: int = 20950
    """First health gateway's Prometheus metrics port; one per site, in the order of ``SITES``."""

    def all(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def shifted(cls, offset: int) -> Ports:
        """The default ports moved by ``offset``, for a second plane beside the first."""
        return cls(**{name: port + offset for name, port in cls().all().items()})

    @property
    def offset(self) -> int:
        """How far these ports are shifted from the default ones."""
        return self.etcd_client - Ports().etcd_client


@dataclass(frozen=True)
class Layout:
    """Paths of one local control plane."""

    state: Path
    """Runtime state: certificates, kubeconfigs, pid files, logs, etcd data."""
    cache: Path = field(default_factory=cache_home)
    """Build cache shared by every plane on this machine."""
    ports: Ports = field(default_factory=Ports)

    @classmethod
    def default(cls) -> Layout:
        state = os.environ.get("GIGAFAB_STATE") or str(cache_home() / "local")
        offset = int(os.environ.get("GIGAFAB_PORT_OFFSET", "0"))
        return cls(state=Path(state), ports=Ports.shifted(offset))

    def environment(self) -> dict[str, str]:
        """The variables that make ``Layout.default()`` (and so the ``gigafab`` CLI) this plane."""
        return {"GIGAFAB_STATE": str(self.state), "GIGAFAB_PORT_OFFSET": str(self.ports.offset)}

    @property
    def kube_bin(self) -> Path:
        return self.cache / "bin" / f"kube-{KUBERNETES_VERSION}"

    @property
    def kwok_bin(self) -> Path:
        return self.cache / "bin" / f"kwok-{KWOK_VERSION}"

    @property
    def buf_bin(self) -> Path:
        return self.cache / "bin" / f"buf-{BUF_VERSION}"

    @property
    def etcd_bin(self) -> Path:
        return self.cache / "bin" / f"etcd-{ETCD_VERSION}"

    @property
    def kueue_bin(self) -> Path:
        return self.cache / "bin" / f"kueue-{KUEUE_VERSION}"

    @property
    def helm_bin(self) -> Path:
        return self.cache / "bin" / f"helm-{HELM_VERSION}"

    @property
    def kubeconform_bin(self) -> Path:
        return self.cache / "bin" / f"kubeconform-{KUBECONFORM_VERSION}"

    @property
    def netpol_analyzer_bin(self) -> Path:
        return self.cache / "bin" / f"netpol-analyzer-{NETPOL_ANALYZER_VERSION}"

    @property
    def crictl_bin(self) -> Path:
        return self.cache / "bin" / f"crictl-{CRICTL_VERSION}"

    @property
    def fake_cri_bin(self) -> Path:
        """Kubernetes' fake CRI runtime behind a unix socket (``hack/kube/cmd/fake-cri``), for tests of crictl."""
        return self.cache / "bin" / f"fake-cri-{KUBERNETES_VERSION}"

    def binary(self, name: str) -> Path:
        folders = {
            "crictl": self.crictl_bin,
            "fake-cri": self.fake_cri_bin,
            "kwok": self.kwok_bin,
            "buf": self.buf_bin,
            "etcd": self.etcd_bin,
            "kueue": self.kueue_bin,
            "helm": self.helm_bin,
            "kubeconform": self.kubeconform_bin,
            "k8snetpolicy": self.netpol_analyzer_bin,
        }
        return folders.get(name, self.kube_bin) / name

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def pids(self) -> Path:
        return self.state / "pids"

    @property
    def etcd_data(self) -> Path:
        return self.state / "etcd"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    def kubeconfig_for(self, identity: str) -> Path:
        return self.state / "kubeconfigs" / f"{identity}.yaml"

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.etcd_client}"
