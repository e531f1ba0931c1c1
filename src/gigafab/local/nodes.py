"""Fake GPU nodes: Node objects that kwok animates as if a kubelet ran them."""

from __future__ import annotations

import subprocess
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from gigafab.api.labels import SITE_NODE_LABEL, ZONE_LABEL
from gigafab.local.layout import KWOK_VERSION
from gigafab.local.processes import PlaneError

GPU_RESOURCE = "nvidia.com/gpu"
GPU_MODEL_LABEL = "nvidia.com/gpu.product"
GPU_POWER_LABEL = "gigafab.nl/gpu-power-watts"
FAKE_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}

# kwok's own stages: nodes become Ready and keep a lease; pods start, run and finish.
KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
)
# gigafab's own (src/gigafab/local/stages/), in place of kwok's fast pod-delete: a pod being
# deleted goes at once, or, with the annotation below, lingers like a container that takes
# that long to stop (kwok would otherwise hide every overlap of an old copy and a new one).
GIGAFAB_STAGES = ("pod-delete.yaml", "pod-delete-after.yaml")
DELETE_AFTER_ANNOTATION = "gigafab.nl/kwok-delete-after-ms"
"""Pod annotation (milliseconds, as a string): how long after its deletion was asked a pod goes,
at most until its grace period runs out. Only the local plane's kwok reads it."""


def node_name(site: str, index: int) -> str:
    return f"{site}-gpu-{index:03d}"


def gpu_node(site: str, index: int, *, gpus: int, model: str = "NVIDIA-H100-80GB-HBM3", watts: int = 700) -> dict[str, Any]:
    """A fake GPU node of ``site``: zone and site labels, GPU capacity, model and power labels."""
    capacity = {"cpu": "128", "memory": "2Ti", "pods": "110", GPU_RESOURCE: str(gpus)}
    name = node_name(site, index)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                ZONE_LABEL: site,
                SITE_NODE_LABEL: site,
                GPU_MODEL_LABEL: model,
                GPU_POWER_LABEL: str(watts),
                "gigafab.nl/gpu-node": "true",
            },
        },
        "spec": {"taints": [FAKE_TAINT]},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def kwok_stage_file(target: Path) -> Path:
    """Concatenate kwok's stage files from its Go module and gigafab's own into one config file."""
    source = _kwok_module_dir() / "kustomize" / "stage"
    documents = []
    for stage in KWOK_STAGES:
        path = source / stage
        if not path.is_file():
            raise PlaneError(f"kwok stage {path} is missing; run `go mod download sigs.k8s.io/kwok@{KWOK_VERSION}`")
        documents.append(path.read_text().strip())
    ours = resources.files("gigafab.local") / "stages"
    documents += [(ours / stage).read_text().strip() for stage in GIGAFAB_STAGES]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n---\n".join(documents) + "\n")
    return target


def _kwok_module_dir() -> Path:
    module = f"sigs.k8s.io/kwok@{KWOK_VERSION}"
    try:
        answer = subprocess.run(
            ["go", "mod", "download", "-json", module],
            cwd=tempfile.gettempdir(),
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
    except (OSError, subprocess.SubprocessError) as failure:
        raise PlaneError(f"could not fetch {module} for its stage files: {failure}") from failure
    import json

    return Path(json.loads(answer.stdout)["Dir"])
