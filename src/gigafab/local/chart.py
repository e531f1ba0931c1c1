"""The Helm chart with the cached tools: render it with helm, validate it with kubeconform.

kubeconform gets its schemas from ``schemas`` (the Kubernetes version the plane runs, the
chart's CRDs and cert-manager's CRDs), so validation needs no network.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from gigafab.local import schemas
from gigafab.local.layout import KUBERNETES_VERSION, Layout, repo_root
from gigafab.local.toolchain import cert_manager_module, kubernetes_module

CHART = "charts/gigafab"
KUBE_VERSION = KUBERNETES_VERSION.lstrip("v")


def chart_dir() -> Path:
    return repo_root() / CHART


def helm(*args: str, layout: Layout | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
    binary = (layout or Layout.default()).binary("helm")
    return subprocess.run([str(binary), *args], capture_output=True, text=True, check=check, timeout=300)


def render(*options: str, release: str = "gigafab", namespace: str = "gigafab-system") -> list[dict[str, Any]]:
    """``helm template`` of the chart (CRDs included) as documents; raises with helm's message on failure."""
    answer = helm(
        "template", release, str(chart_dir()), "-n", namespace, "--kube-version", KUBE_VERSION, "--include-crds", *options
    )
    if answer.returncode != 0:
        raise ValueError(answer.stderr.strip())
    return [doc for doc in yaml.safe_load_all(answer.stdout) if doc]


def crd_files() -> list[Path]:
    """Every CRD the chart's resources may be checked against: the chart's own and cert-manager's."""
    return sorted(chart_dir().glob("crds/*.yaml")) + sorted((cert_manager_module() / "deploy" / "crds").glob("*.yaml"))


@cache
def known_schemas() -> dict[tuple[str, str], schemas.Schema]:
    swagger = json.loads((kubernetes_module() / "api" / "openapi-spec" / "swagger.json").read_text())
    found = schemas.from_openapi(swagger)
    for path in crd_files():
        for crd in yaml.safe_load_all(path.read_text()):
            if crd:
                found.update(schemas.from_crd(crd))
    return found


def validate(documents: Sequence[dict[str, Any]], *, layout: Layout | None = None) -> subprocess.CompletedProcess[str]:
    """kubeconform -strict over ``documents``; a kind without a schema counts as a failure."""
    with tempfile.TemporaryDirectory(prefix="gigafab-schemas.") as folder:
        kinds = [(doc["apiVersion"], doc["kind"]) for doc in documents]
        schemas.write(known_schemas(), kinds, Path(folder))
        manifest = Path(folder) / "manifest.yaml"
        manifest.write_text(yaml.safe_dump_all(documents))
        binary = (layout or Layout.default()).binary("kubeconform")
        location = f"{folder}/{schemas.LOCATION}"
        argv = [str(binary), "-strict", "-summary", "-output", "json", "-schema-location", location, str(manifest)]
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
