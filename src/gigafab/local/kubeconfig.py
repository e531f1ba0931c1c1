"""Kubeconfig files for the identities of the local control plane."""

from __future__ import annotations

from pathlib import Path

import yaml

from gigafab.local.pki import Pair


def write_kubeconfig(path: Path, *, server: str, ca: Path, client: Pair, user: str, context: str = "gigafab-local") -> Path:
    """Write a kubeconfig that authenticates with a client certificate."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "gigafab-local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(client.cert), "client-key": str(client.key)}}],
        "contexts": [{"name": context, "context": {"cluster": "gigafab-local", "user": user}}],
        "current-context": context,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
