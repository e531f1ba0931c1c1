"""JSON schemas for kubeconform, made from sources this machine can reach.

kubeconform normally downloads its schemas from GitHub. Here they are derived, for
exactly the kinds a manifest holds, from:

- the OpenAPI document of the Kubernetes version the local plane runs
  (``api/openapi-spec/swagger.json`` in the ``k8s.io/kubernetes`` Go module);
- CustomResourceDefinitions (gigafab's generated ones, kopf's peering, cert-manager's).

Like kubeconform's own "standalone-strict" schemas they are self-contained and strict:
an object with declared properties refuses any other key, so a misspelt field fails.
File names follow kubeconform's template ``{{ .ResourceKind }}{{ .KindSuffix }}.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

Schema = dict[str, Any]
LOCATION = "{{ .ResourceKind }}{{ .KindSuffix }}.json"
"""kubeconform's -schema-location template, relative to the schema folder."""


def file_name(api_version: str, kind: str) -> str:
    """kubeconform's name for a kind's schema: ``deployment-apps-v1.json``, ``service-v1.json``."""
    group, _, version = api_version.rpartition("/")
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix.lower()}.json"


def _strict(node: Any) -> Any:
    """A schema with closed objects and int-or-string as kubeconform's strict schemas have them.

    The walk follows the schema's structure (a ``properties`` map holds schemas under field
    names, and a field may be called ``format`` or ``x-kubernetes-int-or-string``)."""
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string" or node.get("x-kubernetes-int-or-string") is True:
        return {"oneOf": [{"type": "string"}, {"type": "integer"}], "description": node.get("description", "")}
    strict = dict(node)
    for key in ("properties", "definitions", "patternProperties"):
        if isinstance(node.get(key), dict):
            strict[key] = {name: _strict(child) for name, child in node[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            strict[key] = _strict(node[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(node.get(key), list):
            strict[key] = [_strict(child) for child in node[key]]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and node.get("x-kubernetes-preserve-unknown-fields") is not True
    ):
        strict["additionalProperties"] = False
    return strict


def _references(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            yield ref.removeprefix("#/definitions/")
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def _closure(name: str, definitions: Mapping[str, Schema]) -> dict[str, Schema]:
    """``name`` and every definition it refers to, transitively."""
    found: dict[str, Schema] = {}
    pending = [name]
    while pending:
        current = pending.pop()
        if current in found:
            continue
        found[current] = definitions[current]
        pending.extend(ref for ref in _references(definitions[current]) if ref not in found)
    return found


def from_openapi(swagger: Mapping[str, Any]) -> dict[tuple[str, str], Schema]:
    """(apiVersion, kind) -> standalone strict schema, for every kind the OpenAPI document declares."""
    definitions: Mapping[str, Schema] = swagger["definitions"]
    schemas: dict[tuple[str, str], Schema] = {}
    for name, definition in definitions.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            if name.endswith("List") and not gvk["kind"].endswith("List"):
                continue
            schema = _strict({"$ref": f"#/definitions/{name}", "definitions": _closure(name, definitions)})
            schemas.setdefault((api_version, gvk["kind"]), schema)
    return schemas


def from_crd(crd: Mapping[str, Any]) -> dict[tuple[str, str], Schema]:
    """(apiVersion, kind) -> strict schema, for every served version of a CustomResourceDefinition."""
    spec = crd["spec"]
    schemas: dict[tuple[str, str], Schema] = {}
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        root = dict(version["schema"]["openAPIV3Schema"])
        properties = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
        root["properties"] = {**properties, **root.get("properties", {})}
        schemas[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = _strict(root)
    return schemas


def write(schemas: Mapping[tuple[str, str], Schema], kinds: Iterable[tuple[str, str]], folder: Path) -> list[Path]:
    """Write the schemas of ``kinds`` (apiVersion, kind) into ``folder``; unknown kinds are skipped
    (kubeconform then reports them as missing, which the caller treats as a failure)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for api_version, kind in sorted(set(kinds)):
        schema = schemas.get((api_version, kind))
        if schema is not None:
            path = folder / file_name(api_version, kind)
            path.write_text(json.dumps(schema))
            written.append(path)
    return written
