"""How the CLI's read commands reach a cluster: ``--kubeconfig``, else ``$KUBECONFIG``, else the local plane's."""

from __future__ import annotations

import os
from typing import Any


def custom_objects(kubeconfig: str | None) -> Any:
    """A ``CustomObjectsApi`` for the chosen cluster."""
    from kubernetes import client, config

    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path is None:
        from gigafab.local.layout import Layout

        path = str(Layout.default().admin_kubeconfig)
    config.load_kube_config(path)  # type: ignore[no-untyped-call]
    return client.CustomObjectsApi()
