"""Hostile resources: a valid object of each gigafab.nl/v1alpha1 kind and the ways to break it.

Each ``Violation`` breaks one field of a valid object in one way (a wrong type, a number out of
range, a string off its pattern or enum, a missing required field, an unknown field, a list
too long or with a repeated key, a broken CEL rule) and knows the field the apiserver must
name when it refuses the result. The constraints are written here from the pydantic models
(src/gigafab/api/v1alpha1), not read from the generated CRDs, so a constraint the generator
drops makes an accepted object, not a quietly shorter test.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from gigafab.api.v1alpha1 import (
    DNS1123_LABEL_PATTERN,
    DNS1123_SUBDOMAIN_PATTERN,
    ISO_3166_ALPHA2,
    Criticality,
    DataClass,
    Lifecycle,
    MemberKind,
    MemberRole,
    Protocol,
    Track,
)
from gigafab.api.v1alpha1.common import QUANTITY_PATTERN
from gigafab.api.v1alpha1.egress import SHORTEST_IPV4_PREFIX, SHORTEST_IPV6_PREFIX

Body = dict[str, Any]
Path = tuple[str | int, ...]
RUN_LABEL = "gigafab.nl/hostile-run"
"""Every hostile object carries it, so a sweep finds any that got in."""
LABEL_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
LABEL_VALUE = rf"({LABEL_NAME})?"
LIMIT = 2**53
"""Integers stay exact in JSON and in Go's int64."""


# -- paths and changes ----------------------------------------------------------------------------


def parse(field: str) -> Path:
    """``spec.members[0].name`` as ("spec", "members", 0, "name")."""
    return tuple(int(index) if index else name for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", field))


def put(body: Body, path: Path, value: Any) -> Body:
    """A deep copy of ``body`` with ``value`` at ``path`` (missing mappings on the way are added)."""
    changed = copy.deepcopy(body)
    parent: Any = changed
    for part in path[:-1]:
        if isinstance(part, str):
            parent.setdefault(part, {})
        parent = parent[part]
    parent[path[-1]] = value
    return changed


def drop(body: Body, path: Path) -> Body:
    changed = copy.deepcopy(body)
    parent: Any = changed
    for part in path[:-1]:
        parent = parent[part]
    del parent[path[-1]]
    return changed


def get(body: Body, path: Path) -> Any:
    found: Any = body
    for part in path:
        found = found[part]
    return found


@dataclass(frozen=True)
class Hostile:
    """An invalid object and the field its rejection must name."""

    body: Body
    field: str


Change = Callable[[Body], st.SearchStrategy[Hostile]]


@dataclass(frozen=True)
class Violation:
    """One way to break one field of a valid object."""

    field: str
    what: str
    change: Change

    @property
    def id(self) -> str:
        return f"{self.field or '<root>'}:{self.what}"


def setting(field: str, what: str, values: st.SearchStrategy[Any], named: str | None = None) -> Violation:
    """Put one of ``values`` at ``field``; the rejection names ``named`` (default: ``field``)."""
    path = parse(field)
    return Violation(field, what, lambda body: values.map(lambda value: Hostile(put(body, path, value), named or field)))


def removing(field: str) -> Violation:
    path = parse(field)
    return Violation(field, "missing", lambda body: st.just(Hostile(drop(body, path), field)))


def _unknown_key(field: str) -> Change:
    path = parse(field)
    keys = st.from_regex(r"[a-zA-Z][a-zA-Z0-9]{0,15}", fullmatch=True).filter(lambda key: key.lower() not in KNOWN_NAMES)

    def change(body: Body) -> st.SearchStrategy[Hostile]:
        return keys.map(lambda key: Hostile(put(body, (*path, key), 1), f"{field}.{key}" if field else key))

    return change


def unknown_field(field: str) -> Violation:
    return Violation(field, "unknown field", _unknown_key(field))


# -- values of the wrong type ---------------------------------------------------------------------

_FLOATS = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6).filter(lambda x: x != int(x))
_JSON_TYPES: dict[str, st.SearchStrategy[Any]] = {
    "integer": st.integers(-LIMIT, LIMIT),
    "number": _FLOATS,  # a whole float such as 3.0 counts as an integer in JSON Schema
    "string": st.text(max_size=20),
    "boolean": st.booleans(),
    "array": st.lists(st.integers(0, 9), max_size=3),
    "object": st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.integers(0, 9), max_size=2),
}


def wrong_type(field: str, *expected: str) -> Violation:
    others = [values for name, values in _JSON_TYPES.items() if name not in expected]
    return setting(field, f"not {' or '.join(expected)}", st.one_of(*others))


# -- field builders: every way to break a field of one shape --------------------------------------


def integer(field: str, low: int | None = None, high: int | None = None) -> list[Violation]:
    found = [wrong_type(field, "integer")]
    if low is not None:
        found.append(setting(field, f"below {low}", st.integers(-LIMIT, low - 1)))
    if high is not None:
        found.append(setting(field, f"above {high}", st.integers(high + 1, LIMIT)))
    return found


def boolean(field: str) -> list[Violation]:
    return [wrong_type(field, "boolean")]


def text(field: str, *, pattern: str | None = None, max_length: int | None = None, min_length: int = 0) -> list[Violation]:
    found = [wrong_type(field, "string")]
    if pattern is not None:
        limit = max_length or 40
        off = st.text(max_size=limit).filter(lambda value: re.fullmatch(pattern, value) is None)
        found.append(setting(field, "off pattern", off))
    if max_length is not None:
        found.append(setting(field, f"longer than {max_length}", st.text(min_size=max_length + 1, max_size=max_length + 40)))
    if min_length:
        found.append(setting(field, f"shorter than {min_length}", st.text(max_size=min_length - 1)))
    return found


def label(field: str) -> list[Violation]:
    return text(field, pattern=DNS1123_LABEL_PATTERN, max_length=63)


def subdomain(field: str) -> list[Violation]:
    return text(field, pattern=DNS1123_SUBDOMAIN_PATTERN, max_length=253)


def choice(field: str, allowed: Iterable[str]) -> list[Violation]:
    known = set(allowed)
    cased = sorted({variant for value in known for variant in (value.lower(), value.upper(), value.title())} - known)
    other = st.one_of(st.sampled_from(cased), st.text(max_size=20)).filter(lambda value: value not in known)
    return [wrong_type(field, "string"), setting(field, "not one of the enum", other)]


def country(field: str) -> list[Violation]:
    codes = set(ISO_3166_ALPHA2)
    pairs = st.one_of(st.sampled_from(["EU", "EL", "UK", "XX"]), st.text(min_size=2, max_size=2))
    lower = st.sampled_from(sorted(code.lower() for code in codes))
    length = st.one_of(st.text(max_size=1), st.text(min_size=3, max_size=8), st.sampled_from(["NLD", "DEU", "NL ", " NL"]))
    return [
        wrong_type(field, "string"),
        setting(field, "not an ISO 3166-1 code", pairs.filter(lambda value: value not in codes)),
        setting(field, "lower case", lower),
        setting(field, "not two letters", length.filter(lambda value: value not in codes)),
    ]


QUANTITY_ALPHABET = frozenset("0123456789+-.eEKMGTPinumk")
"""Every character a Kubernetes quantity may hold (signs, digits, point, exponent, suffixes)."""
DIGITLESS_QUANTITIES = ("Gi", "Ki", "m", "k", "M", "+", "-", ".", "e3", ".Gi")
"""Strings Kubernetes' isQuantity accepts though they hold no number; the models refuse them."""


def quantity(field: str) -> list[Violation]:
    """Strings that are no quantity for Kubernetes nor for the models (see DIGITLESS_QUANTITIES for the rest)."""
    words = st.from_regex(r"[a-zA-Z0-9 ,_/.-]{1,12}", fullmatch=True).filter(lambda value: not set(value) <= QUANTITY_ALPHABET)
    malformed = st.sampled_from(["1.2.3", "12 Gi", "5GB", "0x10", "1e", "--1", "1,5", "∞", "1Qi", ""])
    values = st.one_of(words, malformed).filter(lambda value: re.fullmatch(QUANTITY_PATTERN, value) is None)
    return [wrong_type(field, "integer", "string"), setting(field, "not a quantity", values)]


def cidr(field: str) -> list[Violation]:
    octet = st.integers(0, 255)
    bad = st.one_of(
        st.tuples(octet, octet, octet, octet).map(lambda ip: ".".join(map(str, ip))),  # no prefix length
        st.tuples(st.integers(256, 999), octet, st.integers(0, 32)).map(lambda v: f"{v[0]}.{v[1]}.0.0/{v[2]}"),
        st.tuples(octet, st.integers(33, 999)).map(lambda v: f"{v[0]}.0.0.0/{v[1]}"),
        st.integers(129, 999).map(lambda length: f"2001:db8::/{length}"),
        st.from_regex(r"[a-z ]{1,20}(/[0-9]{1,2})?", fullmatch=True),
        st.sampled_from(["::ffff:192.0.2.0/120", "192.0.2.0/024", "192.0.2.0/ 24", "fe80::1%eth0/64"]),
    )
    broad = st.one_of(
        st.tuples(octet, st.integers(0, SHORTEST_IPV4_PREFIX - 1)).map(lambda v: f"{v[0]}.0.0.0/{v[1]}"),
        st.integers(0, SHORTEST_IPV6_PREFIX - 1).map(lambda length: f"2001:db8::/{length}"),
        st.sampled_from(["0.0.0.0/0", "::/0"]),
    )
    return [
        wrong_type(field, "string"),
        setting(field, "not a CIDR", bad),
        setting(field, "longer than 64", st.just("1" * 65)),
        setting(field, "broader than the shortest prefix (CEL)", broad),
    ]


def listing(field: str, fill: Callable[[int], Any], *, max_items: int, min_items: int = 0) -> list[Violation]:
    """The list itself: type, length and repeated entries (every list here is a set or a map)."""
    path = parse(field)
    too_many = st.integers(max_items + 1, max_items + 8).map(lambda n: [fill(i) for i in range(n)])
    found = [wrong_type(field, "array"), setting(field, f"more than {max_items} items", too_many)]
    if min_items:
        found.append(setting(field, f"fewer than {min_items} items", st.just([])))

    def repeat(body: Body) -> st.SearchStrategy[Hostile]:
        items = get(body, path)
        return st.sampled_from(items).map(lambda item: Hostile(put(body, path, [*items, item]), f"{field}[{len(items)}]"))

    found.append(Violation(field, "repeated entry", repeat))
    return found


def record(field: str, *, required: Iterable[str] = (), root: bool = False) -> list[Violation]:
    """An object: its type, unknown fields and required fields."""
    found = [] if root else [wrong_type(field, "object")]
    found.append(unknown_field(field))
    found.extend(removing(f"{field}.{name}" if field else name) for name in required)
    return found


# -- metadata, the same for every kind ------------------------------------------------------------


def _qualified_name(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and not (0 < len(prefix) <= 253 and re.fullmatch(DNS1123_SUBDOMAIN_PATTERN, prefix)):
        return False
    return len(name) <= 63 and re.fullmatch(LABEL_NAME, name) is not None


def _bad_key(field: str, value: str) -> Violation:
    path = parse(field)
    keys = st.text(max_size=40).filter(lambda key: not _qualified_name(key))
    return Violation(field, "bad key", lambda body: keys.map(lambda key: Hostile(put(body, (*path, key), value), field)))


def metadata() -> list[Violation]:
    bad_value = st.text(max_size=80).filter(lambda value: len(value) > 63 or re.fullmatch(LABEL_VALUE, value) is None)
    off_pattern = st.text(min_size=1, max_size=60).filter(lambda name: re.fullmatch(DNS1123_SUBDOMAIN_PATTERN, name) is None)
    return [
        setting("metadata.name", "off pattern", off_pattern),
        setting("metadata.name", "longer than 253", st.from_regex(r"[a-z]{254,300}", fullmatch=True)),
        setting("metadata.labels.hostile", "bad label value", bad_value, named="metadata.labels"),
        _bad_key("metadata.labels", "v"),
        _bad_key("metadata.annotations", "v"),
        unknown_field("metadata"),
        unknown_field(""),
        removing("spec"),
    ]


# -- the five kinds -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """A kind under test: how to write a valid object of it, and how to break one."""

    kind: str
    plural: str
    namespaced: bool
    spec: Callable[[str], Body]
    violations: tuple[Violation, ...]
    fixed_name: str | None = None
    """The one name the kind allows (AllocationPolicy: default)."""

    def valid(self, name: str, run: str) -> Body:
        """A valid object; ``name`` is used unless the kind fixes it."""
        meta = {"name": self.fixed_name or name, "labels": {RUN_LABEL: run}}
        return {"apiVersion": "gigafab.nl/v1alpha1", "kind": self.kind, "metadata": meta, "spec": self.spec(name)}


def _site(_: str) -> Body:
    return {
        "zone": "hostile-zone",
        "jurisdiction": "NL",
        "dataClasses": ["public", "internal"],
        "powerBudgetKW": 500,
        "powerCapKW": 400,
        "lifecycle": "Planned",
        "gpuPowerWatts": 700,
    }


def _cap_above_budget(body: Body) -> st.SearchStrategy[Hostile]:
    budget = body["spec"]["powerBudgetKW"]
    return st.integers(budget + 1, LIMIT).map(lambda cap: Hostile(put(body, parse("spec.powerCapKW"), cap), "spec.powerCapKW"))


SITE = Kind(
    "Site",
    "sites",
    False,
    _site,
    (
        *metadata(),
        *record("spec", required=("jurisdiction", "powerBudgetKW")),
        *label("spec.zone"),
        *country("spec.jurisdiction"),
        *listing("spec.dataClasses", lambda i: list(DataClass)[i % 4].value, max_items=4),
        *choice("spec.dataClasses[0]", DataClass),
        *integer("spec.powerBudgetKW", low=1),
        *integer("spec.powerCapKW", low=0),
        Violation("spec.powerCapKW", "above powerBudgetKW (CEL)", _cap_above_budget),
        *choice("spec.lifecycle", Lifecycle),
        *integer("spec.gpuPowerWatts", low=1, high=5000),
    ),
)


def _tenant(name: str) -> Body:
    return {
        "track": "euro-hpc",
        "members": [
            {"kind": "User", "name": "hostile-user", "role": "member"},
            {"kind": "Group", "name": "hostile-group", "role": "admin"},
        ],
        "namespaces": [f"{name}-a", f"{name}-b"],
        "quota": {"gpus": 4, "cpu": "500m", "memory": "512Gi"},
        "dataClass": "personal",
        "allowedSites": ["niemeyer"],
        "egress": ["surf-object-store"],
    }


RESERVED_NAMESPACES = st.one_of(
    st.just("default"),
    st.from_regex(r"kube-[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True),
    st.from_regex(r"gigafab-system([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True),
)

TENANT = Kind(
    "Tenant",
    "tenants",
    False,
    _tenant,
    (
        *metadata(),
        *record("spec", required=("track", "quota")),
        *choice("spec.track", Track),
        *listing("spec.members", lambda i: {"name": f"user-{i}"}, max_items=256),
        *record("spec.members[0]", required=("name",)),
        *choice("spec.members[0].kind", MemberKind),
        *text("spec.members[0].name", max_length=253, min_length=1),
        *choice("spec.members[0].role", MemberRole),
        *listing("spec.namespaces", lambda i: f"ns-{i}", max_items=32),
        *label("spec.namespaces[0]"),
        setting("spec.namespaces", "a reserved namespace (CEL)", RESERVED_NAMESPACES.map(lambda ns: [ns])),
        *record("spec.quota", required=("gpus",)),
        *integer("spec.quota.gpus", low=0),
        *quantity("spec.quota.cpu"),
        *quantity("spec.quota.memory"),
        *choice("spec.dataClass", DataClass),
        *listing("spec.allowedSites", lambda i: f"site-{i}", max_items=64),
        *label("spec.allowedSites[0]"),
        *listing("spec.egress", lambda i: f"dest-{i}", max_items=64),
        *subdomain("spec.egress[0]"),
    ),
)


def _destination(_: str) -> Body:
    return {
        "cidrs": ["192.0.2.0/24", "2001:db8::/32"],
        "jurisdiction": "NL",
        "ports": [{"port": 443, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
        "description": "SURF object store",
    }


EGRESS = Kind(
    "EgressDestination",
    "egressdestinations",
    False,
    _destination,
    (
        *metadata(),
        *record("spec", required=("cidrs", "jurisdiction")),
        *listing("spec.cidrs", lambda i: f"10.{i}.0.0/16", max_items=64, min_items=1),
        *cidr("spec.cidrs[0]"),
        *country("spec.jurisdiction"),
        *listing("spec.ports", lambda i: {"port": 1000 + i}, max_items=32),
        *record("spec.ports[0]", required=("port",)),
        *integer("spec.ports[0].port", low=1, high=65535),
        *choice("spec.ports[0].protocol", Protocol),
        *text("spec.description", max_length=1024),
    ),
)


def _workload(_: str) -> Body:
    return {
        "gpus": 1,
        "replicas": 2,
        "template": {"spec": {"containers": [{"name": "train", "image": "registry.example/train:1"}]}},
        "dataClass": "internal",
        "criticality": "standard",
        "sites": ["niemeyer", "de-halm"],
        "failover": {"enabled": True},
    }


WORKLOAD = Kind(
    "GpuWorkload",
    "gpuworkloads",
    True,
    _workload,
    (
        *metadata(),
        *record("spec", required=("gpus", "template")),
        *integer("spec.gpus", low=1, high=64),
        *integer("spec.replicas", low=1, high=1024),
        wrong_type("spec.template", "object"),
        *choice("spec.dataClass", DataClass),
        *choice("spec.criticality", Criticality),
        *listing("spec.sites", lambda i: f"site-{i}", max_items=16),
        *label("spec.sites[0]"),
        *record("spec.failover"),
        *boolean("spec.failover.enabled"),
    ),
)


def _policy(_: str) -> Body:
    return {
        "tracks": [
            {"name": "euro-hpc", "share": 50, "priority": 100, "lending": True},
            {"name": "national", "share": 25, "priority": 100, "lending": True},
            {"name": "regional", "share": 25, "priority": 200, "lending": False},
        ]
    }


def _shares_not_100(body: Body) -> st.SearchStrategy[Hostile]:
    names = st.lists(st.sampled_from([track.value for track in Track]), min_size=1, max_size=3, unique=True)
    tracks = names.flatmap(
        lambda chosen: st.lists(st.integers(0, 100), min_size=len(chosen), max_size=len(chosen)).map(
            lambda shares: [{"name": name, "share": share} for name, share in zip(chosen, shares, strict=True)]
        )
    )
    wrong = tracks.filter(lambda given: sum(track["share"] for track in given) != 100)
    return wrong.map(lambda given: Hostile(put(body, parse("spec.tracks"), given), "spec.tracks"))


POLICY = Kind(
    "AllocationPolicy",
    "allocationpolicies",
    False,
    _policy,
    (
        *metadata(),  # a valid name other than default breaks a rule that names no field: see the test
        *record("spec", required=("tracks",)),
        *listing("spec.tracks", lambda i: {"name": list(Track)[i % 3].value, "share": 0}, max_items=3, min_items=1),
        Violation("spec.tracks", "shares not adding up to 100 (CEL)", _shares_not_100),
        *record("spec.tracks[0]", required=("name", "share")),
        *choice("spec.tracks[0].name", Track),
        *integer("spec.tracks[0].share", low=0, high=100),
        *integer("spec.tracks[0].priority", low=0, high=1000),
        *boolean("spec.tracks[0].lending"),
    ),
    fixed_name="default",
)

KINDS: tuple[Kind, ...] = (SITE, TENANT, EGRESS, WORKLOAD, POLICY)

OBJECT_META = ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp")
OBJECT_META_MORE = ("deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers")


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value).union(*(_keys(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(_keys(item) for item in value))
    return set()


KNOWN_NAMES = frozenset(
    name.lower()
    for name in set().union(*(_keys(kind.valid("x", "x")) for kind in KINDS))
    | {"status", "managedFields", *OBJECT_META, *OBJECT_META_MORE}
)
"""Field names (lower case) an unknown field must not take: every property of the kinds and of ObjectMeta."""


def names_field(message: str, field: str) -> bool:
    """The apiserver's message names ``field``: ``spec.x: ...`` (422) or ``unknown field "spec.x..."`` (400)."""
    invalid = re.search(rf"(?:^|[\s\[,]){re.escape(field)}:", message)
    unknown = re.search(rf'unknown field "{re.escape(field)}(?:[.\[][^"]*)?"', message)
    return bool(invalid or unknown)
