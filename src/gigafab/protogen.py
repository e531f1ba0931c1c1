"""Generate the Python gRPC stubs from proto/ (``gigafab proto generate [--check]``).

The stubs are generated, never edited: ``src/gigafab/health/v1/*_pb2*.py(i)`` come
from ``proto/gigafab/health/v1/*.proto`` through grpcio-tools' protoc, and a test
fails when they are stale.
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path

from gigafab.local.layout import repo_root

GENERATED = ("health_pb2.py", "health_pb2.pyi", "health_pb2_grpc.py")
PACKAGE = Path("gigafab") / "health" / "v1"


def _protoc(out: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    root = repo_root()
    include = Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(root / "proto")) for p in (root / "proto" / PACKAGE).glob("*.proto"))
    args = [
        "protoc",
        f"-I{root / 'proto'}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
    ]
    if protoc.main([*args, *sources]) != 0:
        raise RuntimeError("protoc failed; see its message above")


def generate() -> list[Path]:
    target = repo_root() / "src"
    _protoc(target)
    return [target / PACKAGE / name for name in GENERATED]


def stale_files() -> list[Path]:
    """Generated files that differ from what protoc makes of proto/ now."""
    target = repo_root() / "src" / PACKAGE
    with tempfile.TemporaryDirectory() as scratch:
        _protoc(Path(scratch))
        return [
            target / name
            for name in GENERATED
            if not (target / name).exists() or not filecmp.cmp(Path(scratch) / PACKAGE / name, target / name, shallow=False)
        ]


def main(check: bool) -> int:
    if check:
        stale = stale_files()
        for path in stale:
            print(f"stale: {path} (run `gigafab proto generate`)", file=sys.stderr)
        return 1 if stale else 0
    for path in generate():
        print(f"wrote {path}")
    return 0
