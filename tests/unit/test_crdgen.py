"""The generated CRDs: structural schemas, CEL rules, names, columns, and freshness of the YAML."""

from __future__ import annotations

import re
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field
from pydantic_core import PydanticUndefined

from gigafab.api import crdgen
from gigafab.api.v1alpha1 import GROUP, ISO_3166_ALPHA2, KINDS, VERSION, CrdKind

REPO = crdgen.repo_root(Path(__file__))
CRDS = {kind.kind: crdgen.render_crd(kind) for kind in KINDS}
INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]
# Functions and macros of Kubernetes CEL (1.36) that the rules may use.
CEL_FUNCTIONS = {
    "has",
    "all",
    "exists",
    "size",
    "startsWith",
    "type",
    "isCIDR",
    "cidr",  # Kubernetes CIDR library: cidr(s).prefixLength(), .ip().family()
    "prefixLength",
    "ip",
    "family",
    "isQuantity",
    "map",  # CEL macro
    "sum",  # Kubernetes list library (the apiserver accepts it: tests/e2e/test_api.py)
    "int",
    "matches",  # CEL standard library (RE2)
}
STRUCTURAL_KEYS = {
    "description", "type", "format", "enum", "default", "minimum", "maximum", "multipleOf",
    "minLength", "maxLength", "pattern", "minItems", "maxItems", "anyOf", "items", "properties",
    "required", "x-kubernetes-int-or-string", "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys", "x-kubernetes-validations", "x-kubernetes-preserve-unknown-fields",
}  # fmt: skip


def root_schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def schema_at(kind: str, path: str) -> dict[str, Any]:
    """The schema node at a dotted path; ``[]`` steps into list items, e.g. spec.cidrs[]."""
    node = root_schema(kind)
    for step in path.split("."):
        name = step.removesuffix("[]")
        node = node["properties"][name]
        if step.endswith("[]"):
            node = node["items"]
    return node


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below ``node`` (inclusive), with its path."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    for index, branch in enumerate(node.get("anyOf", [])):
        yield from walk(branch, f"{path}<anyOf {index}>")


def all_nodes() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for kind in CRDS:
        for path, node in walk(root_schema(kind)):
            yield kind, path, node


def rules_at(kind: str, path: str) -> list[str]:
    return [entry["rule"] for entry in schema_at(kind, path).get("x-kubernetes-validations", [])]


@pytest.mark.parametrize(("kind", "path", "node"), list(all_nodes()))
def test_schema_node_is_structural(kind: str, path: str, node: dict[str, Any]) -> None:
    assert set(node) <= STRUCTURAL_KEYS, f"{kind}{path}: {set(node) - STRUCTURAL_KEYS}"
    if "<anyOf" in path:
        assert set(node) == {"type"}, f"{kind}{path}: an anyOf branch may only carry a type"
        return
    if "anyOf" in node:
        assert node["anyOf"] == INT_OR_STRING
        assert node.get("x-kubernetes-int-or-string") is True
        assert "type" not in node
        return
    assert "type" in node, f"{kind}{path} has no type"
    if "properties" in node:
        assert node["type"] == "object"
        assert set(node.get("required", [])) <= set(node["properties"])
    if "items" in node:
        assert node["type"] == "array"


def test_schema_has_no_json_schema_leftovers() -> None:
    text = "".join(crdgen.render_all().values())
    for leftover in (
        "$ref",
        "$defs",
        "title:",
        "nullable",
        "type: 'null'",
        "allOf",
        "uniqueItems",
    ):
        assert leftover not in text


@pytest.mark.parametrize(("kind", "path", "node"), list(all_nodes()))
def test_list_types_fit_their_items(kind: str, path: str, node: dict[str, Any]) -> None:
    list_type = node.get("x-kubernetes-list-type")
    if list_type == "set":
        assert node["items"]["type"] in {"string", "integer", "number", "boolean"}
    if list_type == "map":
        items = node["items"]
        assert items["type"] == "object"
        for key in node["x-kubernetes-list-map-keys"]:
            assert key in items.get("required", []) or "default" in items["properties"][key], key


@pytest.mark.parametrize(("kind", "path", "node"), list(all_nodes()))
def test_lists_and_strings_are_bounded(kind: str, path: str, node: dict[str, Any]) -> None:
    """The apiserver's CEL cost estimator needs bounds on what a rule may iterate."""
    if node.get("type") == "array":
        assert "maxItems" in node, f"{kind}{path}: unbounded list"
    is_field = path.startswith((".spec", ".status")) and "<anyOf" not in path
    if node.get("type") == "string" and is_field:
        assert "maxLength" in node or "enum" in node, f"{kind}{path}: unbounded string"


@pytest.mark.parametrize(("kind", "path", "node"), list(all_nodes()))
def test_every_field_is_described(kind: str, path: str, node: dict[str, Any]) -> None:
    is_field = path.startswith((".spec", ".status")) and not path.endswith("[]") and "<" not in path
    if is_field:
        assert node.get("description", "").strip(), f"{kind}{path} has no description"


@pytest.mark.parametrize(
    ("kind", "path", "rule"),
    [
        (
            "Site",
            "spec",
            "!has(self.powerCapKW) || self.powerCapKW <= self.powerBudgetKW",
        ),
        ("Site", "spec.jurisdiction", "self in ['AD', "),
        ("EgressDestination", "spec.jurisdiction", "self in ['AD', "),
        ("EgressDestination", "spec.cidrs[]", "isCIDR(self)"),
        (
            "Tenant",
            "spec.namespaces",
            "self.all(n, !n.startsWith('kube-') && n != 'default'",
        ),
        ("Tenant", "spec.quota.cpu", "type(self) == int || (self.matches(r'^[+-]?([0-9]+"),
        ("Tenant", "spec.quota.memory", "type(self) == int || (self.matches(r'^[+-]?([0-9]+"),
    ],
)
def test_promised_cel_rule_is_present(kind: str, path: str, rule: str) -> None:
    assert any(found.startswith(rule) for found in rules_at(kind, path)), rules_at(kind, path)


def test_power_cap_rule_points_at_the_cap() -> None:
    (entry,) = schema_at("Site", "spec")["x-kubernetes-validations"]
    assert entry["fieldPath"] == ".powerCapKW"
    assert entry["message"] == "powerCapKW must not exceed powerBudgetKW"


@pytest.mark.parametrize("kind", ["Site", "EgressDestination"])
def test_jurisdiction_rule_lists_every_iso_code(kind: str) -> None:
    (rule,) = rules_at(kind, "spec.jurisdiction")
    assert tuple(re.findall(r"'([A-Z]{2})'", rule)) == ISO_3166_ALPHA2


@pytest.mark.parametrize(("kind", "path", "node"), list(all_nodes()))
def test_cel_rules_use_only_kubernetes_functions(kind: str, path: str, node: dict[str, Any]) -> None:
    for entry in node.get("x-kubernetes-validations", []):
        assert entry["message"], f"{kind}{path}: rule without message"
        called = set(re.findall(r"([A-Za-z_]\w*)\s*\(", entry["rule"]))
        assert called <= CEL_FUNCTIONS, f"{kind}{path}: {called - CEL_FUNCTIONS}"


def test_quantities_use_the_int_or_string_form() -> None:
    for field in ("cpu", "memory"):
        node = schema_at("Tenant", f"spec.quota.{field}")
        assert "type" not in node
        assert node["anyOf"] == INT_OR_STRING
        assert node["x-kubernetes-int-or-string"] is True


@pytest.mark.parametrize(
    ("kind", "path", "default"),
    [
        ("Site", "spec.dataClasses", ["public", "internal"]),
        ("Site", "spec.lifecycle", "Active"),
        ("Site", "spec.gpuPowerWatts", 700),
        ("Tenant", "spec.members", []),
        ("Tenant", "spec.members[].kind", "User"),
        ("Tenant", "spec.members[].role", "member"),
        ("Tenant", "spec.namespaces", []),
        ("Tenant", "spec.dataClass", "internal"),
        ("Tenant", "spec.egress", []),
        ("EgressDestination", "spec.ports[].protocol", "TCP"),
    ],
)
def test_default_is_in_schema(kind: str, path: str, default: Any) -> None:
    assert schema_at(kind, path)["default"] == default


@pytest.mark.parametrize(
    ("kind", "path"),
    [("Site", "spec.zone"), ("Site", "spec.powerCapKW"), ("Tenant", "spec.allowedSites"),
     ("EgressDestination", "spec.ports"), ("Site", "status.conditions")],
)  # fmt: skip
def test_optional_field_has_no_default(kind: str, path: str) -> None:
    assert "default" not in schema_at(kind, path)


def python_defaults(model: type[BaseModel]) -> Iterator[tuple[str, Any]]:
    for name, field in model.model_fields.items():
        if field.default is not PydanticUndefined and field.default is not None:
            value = field.default
            if isinstance(value, list):
                value = [item.value if isinstance(item, Enum) else item for item in value]
            yield field.alias or name, value.value if isinstance(value, Enum) else value


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.kind)
def test_python_defaults_match_crd_defaults(kind: CrdKind) -> None:
    for alias, value in python_defaults(kind.spec_model):
        assert schema_at(kind.kind, f"spec.{alias}")["default"] == value, alias


@pytest.mark.parametrize(
    ("kind", "plural", "short_names", "required"),
    [
        ("Site", "sites", ["gsite"], ["jurisdiction", "powerBudgetKW"]),
        ("Tenant", "tenants", ["tn"], ["track", "quota"]),
        ("EgressDestination", "egressdestinations", ["egd"], ["cidrs", "jurisdiction"]),
    ],
)
def test_crd_names_and_version(kind: str, plural: str, short_names: list[str], required: list[str]) -> None:
    crd = CRDS[kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{plural}.{GROUP}"
    spec = crd["spec"]
    assert (spec["group"], spec["scope"]) == (GROUP, "Cluster")
    assert spec["names"] == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
        "shortNames": short_names,
        "categories": ["gigafab"],
    }
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (
        VERSION,
        True,
        True,
    )
    assert version["subresources"] == {"status": {}}
    root = root_schema(kind)
    assert root["required"] == ["spec"]
    assert {"spec", "status", "metadata"} <= set(root["properties"])
    assert root["description"]
    assert schema_at(kind, "spec")["required"] == required


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        (
            "Site",
            [
                "Zone",
                "Jurisdiction",
                "Lifecycle",
                "Nodes",
                "GPUs",
                "Healthy",
                "Budget-kW",
                "Ready",
                "Age",
            ],
        ),
        ("Tenant", ["Track", "DataClass", "GPUs", "Used", "Ready", "Age"]),
        ("EgressDestination", ["Jurisdiction", "CIDRs", "Accepted", "Age"]),
    ],
)
def test_printer_columns(kind: str, columns: list[str]) -> None:
    printed = CRDS[kind]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [column["name"] for column in printed] == columns
    for column in printed:
        path = column["jsonPath"]
        if column["name"] == "Age":
            assert (path, column["type"]) == (".metadata.creationTimestamp", "date")
        elif "[?(" in path:
            assert path == f'.status.conditions[?(@.type=="{column["name"]}")].status'
        else:
            node = schema_at(kind, path.removeprefix("."))  # the column points at a real field
            assert column["type"] == ("string" if node["type"] == "array" else node["type"])


def test_render_all_names_files_and_round_trips() -> None:
    files = crdgen.render_all()
    assert list(files) == [f"gigafab.nl_{kind.plural}.yaml" for kind in KINDS]
    for kind in KINDS:
        text = files[crdgen.crd_file_name(kind)]
        assert text.startswith(crdgen.HEADER)
        assert yaml.safe_load(text) == crdgen.render_crd(kind)
    assert crdgen.render_all() == files


def test_checked_in_crds_are_up_to_date() -> None:
    stale = crdgen.stale_files([REPO / "crds", REPO / "charts" / "gigafab" / "crds"])
    assert stale == [], 'run "gigafab crds generate" and commit the result'


def test_stale_files_finds_changed_missing_and_extra_files(tmp_path: Path) -> None:
    first, second = tmp_path / "crds", tmp_path / "chart" / "crds"
    assert len(crdgen.write_all([first, second])) == 2 * len(KINDS)
    assert crdgen.stale_files([first, second]) == []
    changed = first / "gigafab.nl_sites.yaml"
    changed.write_text(changed.read_text() + "# edited by hand\n")
    (second / "gigafab.nl_tenants.yaml").unlink()
    (second / "gigafab.nl_widgets.yaml").write_text("{}\n")
    (second / "README.md").write_text("not generated\n")
    assert crdgen.stale_files([first, second]) == [
        changed,
        second / "gigafab.nl_tenants.yaml",
        second / "gigafab.nl_widgets.yaml",
    ]
    crdgen.write_all([first, second])
    assert crdgen.stale_files([first, second]) == []
    assert not (second / "gigafab.nl_widgets.yaml").exists()
    assert (second / "README.md").exists()


def test_main_checks_then_generates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert crdgen.main(check=True, out_dirs=[tmp_path]) == 1
    assert "stale" in capsys.readouterr().err
    assert crdgen.main(check=False, out_dirs=[tmp_path]) == 0
    assert crdgen.main(check=True, out_dirs=[tmp_path]) == 0


def test_default_out_dirs_are_in_the_repo() -> None:
    assert crdgen.default_out_dirs() == [
        REPO / "crds",
        REPO / "charts" / "gigafab" / "crds",
    ]
    assert (REPO / "pyproject.toml").is_file()


class _Unique(BaseModel):
    tags: set[str]


class _Exclusive(BaseModel):
    count: int = Field(gt=0)


class _Union(BaseModel):
    value: int | str


class _Node(BaseModel):
    children: list[_Node] = Field(default_factory=list)


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        (_Unique, "uniqueItems"),
        (_Exclusive, "exclusiveMinimum"),
        (_Union, "anyOf is only supported"),
        (_Node, "recursive"),
    ],
)
def test_generator_rejects_non_structural_schema(model: type[BaseModel], fragment: str) -> None:
    with pytest.raises(crdgen.CrdSchemaError, match=fragment):
        crdgen.structural_schema(model)


class _Inner(BaseModel):
    """Inner doc."""

    size: int


class _Outer(BaseModel):
    """Outer doc."""

    inner: _Inner | None = Field(default=None, description="Field doc.")
    mode: str = Field(default="a", json_schema_extra={"const": "a"})


def test_generator_inlines_optional_models_without_null() -> None:
    schema = crdgen.structural_schema(_Outer)
    assert schema == {
        "description": "Outer doc.",
        "type": "object",
        "properties": {
            "inner": {
                "description": "Field doc.",
                "type": "object",
                "properties": {"size": {"type": "integer"}},
                "required": ["size"],
            },
            "mode": {"type": "string", "enum": ["a"], "default": "a"},
        },
    }
