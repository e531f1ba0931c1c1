"""What the identity tests share: a signer process, pods on nodes for tokens to be bound to, those
tokens, and ``gigafab enrol`` run against the test plane's apiserver."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gigafab.api.labels import SITE_NODE_LABEL
from gigafab.local.layout import Layout
from gigafab.local.nodes import FAKE_TAINT

from .conftest import Kubectl

ANYWHERE = [{"operator": "Exists"}]


def health_ca(layout: Layout) -> tuple[Path, Path]:
    """The test plane's health CA (certificate, key): its gateways trust what it signs."""
    return layout.pki / "health" / "ca.crt", layout.pki / "health" / "ca.key"


def start_signer(layout: Layout, kubeconfig: Path, agents: str, publish: str, log: Path) -> subprocess.Popen[bytes]:
    cert, key = health_ca(layout)
    argv = [sys.executable, "-m", "gigafab", "signer", f"--kubeconfig={kubeconfig}", f"--ca-cert={cert}", f"--ca-key={key}"]
    argv += [f"--agents={agents}", f"--publish-ca={publish}"]
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def node(name: str, site: str | None) -> dict[str, Any]:
    """A KWOK node in ``site`` by its site label only: no zone label and no GPUs, so no Site counts it
    and nothing is placed on it; only identities are decided by it."""
    labels = {"kubernetes.io/hostname": name, "type": "kwok"}
    if site is not None:
        labels[SITE_NODE_LABEL] = site
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"}, "labels": labels},
        "spec": {"taints": [FAKE_TAINT]},
    }


def pod_on(node_name: str, namespace: str, account: str, name: str) -> dict[str, Any]:
    """A pod that runs nothing (KWOK): it only gives a token its binding to the node."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodeName": node_name,
            "serviceAccountName": account,
            "automountServiceAccountToken": False,
            "containers": [{"name": "agent", "image": "registry.gigafab.nl/gigafab/gigafab:0.1.0"}],
            "tolerations": ANYWHERE,
        },
    }


def token(kubectl: Kubectl, namespace: str, account: str, folder: Path, pod: str | None = None) -> Path:
    """A token of ``account``, bound to ``pod`` (as the kubelet gets one for the pod) or to nothing."""
    bound = ("--bound-object-kind=Pod", f"--bound-object-name={pod}") if pod else ()
    answer = kubectl.run("create", "token", account, "-n", namespace, "--duration=1h", *bound)
    path = folder / f"{account}-{pod or 'unbound'}.token"
    path.write_text(answer.stdout.strip())
    return path


def token_kubeconfig(layout: Layout, bearer: str, path: Path) -> Path:
    """A kubeconfig that logs in with ``bearer`` (a ServiceAccount's token), as a pod of that account would."""
    cluster = {"server": layout.apiserver_url, "certificate-authority": str(layout.pki / "ca.crt")}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "plane", "cluster": cluster}],
        "users": [{"name": "account", "user": {"token": bearer}}],
        "contexts": [{"name": "plane", "context": {"cluster": "plane", "user": "account"}}],
        "current-context": "plane",
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def apiserver_flags(layout: Layout, token_file: Path) -> list[str]:
    return [f"--apiserver={layout.apiserver_url}", f"--token={token_file}", f"--apiserver-ca={layout.pki / 'ca.crt'}"]


def enrol(layout: Layout, node_name: str, site: str, token_file: Path, *extra: str) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "gigafab", "enrol", f"--node={node_name}", f"--site={site}", "--wait=60", *extra]
    return subprocess.run([*argv, *apiserver_flags(layout, token_file)], capture_output=True, timeout=120, check=False)


def requests_for(kubectl: Kubectl, node_name: str) -> list[dict[str, Any]]:
    """The CertificateSigningRequests agents made for ``node_name``, oldest first."""
    found = kubectl.get("certificatesigningrequests")["items"]
    mine = [csr for csr in found if csr["metadata"]["name"].startswith(f"gigafab-agent-{node_name}-")]
    return sorted(mine, key=lambda csr: (csr["metadata"]["creationTimestamp"], csr["metadata"]["resourceVersion"]))


def conditions(csr: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (csr.get("status") or {}).get("conditions") or []}


def allowed(kubectl: Kubectl, user: str, verb: str, group: str, resource: str, name: str = "", **where: str) -> bool:
    """A SubjectAccessReview: may ``user`` do it? (``name`` may hold a slash, like a signer's.)"""
    attributes = {"verb": verb, "group": group, "resource": resource, "name": name, **where}
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": _groups(user), "resourceAttributes": attributes},
    }
    answer = kubectl.run("create", "-f", "-", "-o", "json", stdin=json.dumps(review))
    return bool(json.loads(answer.stdout)["status"].get("allowed"))


def _groups(user: str) -> list[str]:
    if user.startswith("system:serviceaccount:"):
        namespace = user.split(":")[2]
        return ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]
    return ["system:authenticated"]


def etcd_keys(layout: Layout, prefix: str) -> Sequence[str]:
    """Keys under ``prefix`` in the plane's etcd (its JSON gateway), where gateways write health."""
    start = prefix.encode()
    end = start[:-1] + bytes([start[-1] + 1])
    body = json.dumps({"key": base64.b64encode(start).decode(), "range_end": base64.b64encode(end).decode(), "keys_only": True})
    request = urllib.request.Request(f"{layout.etcd_url}/v3/kv/range", data=body.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        kvs = json.loads(answer.read()).get("kvs") or []
    return [base64.b64decode(kv["key"]).decode() for kv in kvs]
