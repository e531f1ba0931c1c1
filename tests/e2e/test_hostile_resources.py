"""Hostile resources against the real apiserver: none is accepted, and every refusal names the field.

Invariant: an object of any gigafab.nl/v1alpha1 kind that breaks one rule of the API (a type,
a range, a pattern or enum, a required or unknown field, a list's length or keys, a CEL rule)
is refused at create with 422 (400 when strict decoding finds an unknown field), nothing of it
is stored, and the answer names the broken field, such as ``spec.quota.gpus``. Hypothesis
generates the objects (tests/e2e/hostile.py): each violation of each kind in a few examples,
more than 500 in all, each a real create through the Kubernetes client as the admin. The
valid object every violation starts from is accepted, so the refusals are the violations' doing.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client, config

from gigafab.api.v1alpha1 import GROUP, VERSION
from gigafab.local.plane import Plane

from .hostile import DIGITLESS_QUANTITIES, KINDS, POLICY, RUN_LABEL, TENANT, Body, Kind, Violation, names_field, put

RUN = uuid.uuid4().hex[:8]
EXAMPLES_PER_VIOLATION = 4
REQUIRED_TOTAL = 500
CASES = [pytest.param(kind, violation, id=f"{kind.kind}-{violation.id}") for kind in KINDS for violation in kind.violations]
HOSTILE_SETTINGS = settings(
    max_examples=EXAMPLES_PER_VIOLATION,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@dataclass
class Tally:
    """What the hostile objects met, over the whole module."""

    tried: int = 0
    accepted: list[str] = field(default_factory=list)
    named: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    cases: set[str] = field(default_factory=set)

    def line(self) -> str:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.by_kind.items()))
        return (
            f"hostile resources: {self.tried} tried, {len(self.accepted)} accepted, {self.named} named the field "
            f"({len(self.cases)} violations; {kinds})"
        )


TALLY = Tally()


@dataclass(frozen=True)
class Answer:
    status: int
    message: str


class Api:
    """Creates and deletes gigafab objects as the admin, through the Kubernetes client."""

    def __init__(self, plane: Plane, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(config.new_client_from_config(config_file=str(plane.layout.admin_kubeconfig)))
        self.namespace = namespace
        policy = self.get(POLICY, "default")
        assert policy is not None, "the plane has no AllocationPolicy default"
        self.policy_generation = int(policy["metadata"]["generation"])

    def create(self, kind: Kind, body: Body, *, dry_run: bool = False) -> Answer:
        """POST ``body``; strict field validation, as kubectl does, so unknown fields are refused, not dropped."""
        options: dict[str, Any] = {"field_validation": "Strict", **({"dry_run": "All"} if dry_run else {})}
        try:
            if kind.namespaced:
                self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, kind.plural, body, **options)
            else:
                self.custom.create_cluster_custom_object(GROUP, VERSION, kind.plural, body, **options)
        except client.ApiException as refused:
            return Answer(refused.status, _message(refused.body))
        return Answer(201, "")

    def delete(self, kind: Kind, name: str) -> None:
        try:
            if kind.namespaced:
                self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, kind.plural, name)
            else:
                self.custom.delete_cluster_custom_object(GROUP, VERSION, kind.plural, name)
        except client.ApiException as failed:
            if failed.status != 404:
                raise

    def get(self, kind: Kind, name: str) -> dict[str, Any] | None:
        try:
            if kind.namespaced:
                found = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, kind.plural, name)
            else:
                found = self.custom.get_cluster_custom_object(GROUP, VERSION, kind.plural, name)
        except client.ApiException as failed:
            if failed.status == 404:
                return None
            raise
        return dict(found)

    def labelled(self, kind: Kind, selector: str) -> list[str]:
        """Names of the objects of ``kind`` (in every namespace) that carry ``selector``."""
        found = self.custom.list_cluster_custom_object(GROUP, VERSION, kind.plural, label_selector=selector)
        return [item["metadata"]["name"] for item in found["items"]]


def _message(body: str | None) -> str:
    try:
        return str(json.loads(body or "{}").get("message", body))
    except json.JSONDecodeError:
        return str(body)


@pytest.fixture(scope="module")
def api(plane: Plane) -> Iterator[Api]:
    """The client, and a namespace of this module for the namespaced kind (GpuWorkload)."""
    namespace = f"hostile-{RUN}"
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(plane.layout.admin_kubeconfig)))
    core.create_namespace({"metadata": {"name": namespace}})
    yield Api(plane, namespace)
    core.delete_namespace(namespace)


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """The one-line summary, quotable, at the end of the module."""
    yield
    announce(request, TALLY.line())


def announce(request: pytest.FixtureRequest, line: str) -> None:
    """Print ``line`` past pytest's output capture, so the figures show in every run."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n{line}")


def fresh_name() -> str:
    return f"hostile-{RUN}-{uuid.uuid4().hex[:8]}"


def refuse(api: Api, kind: Kind, body: Body, field: str, case: str) -> None:
    """Create ``body``: it must be refused naming ``field``; counted in TALLY."""
    TALLY.tried += 1
    TALLY.by_kind[kind.kind] += 1
    answer = api.create(kind, body)
    if passed_validation(kind, answer):
        TALLY.accepted.append(f"{kind.kind}/{body['metadata'].get('name')}")
    check_refused(api, kind, body, answer, field, case)
    TALLY.named += 1


def passed_validation(kind: Kind, answer: Answer) -> bool:
    """Created, or (for the one AllocationPolicy, named default) valid and only in conflict with the existing one."""
    return answer.status == 201 or (answer.status == 409 and kind.fixed_name is not None)


def check_refused(api: Api, kind: Kind, body: Body, answer: Answer, field: str, case: str) -> None:
    """Refused with 422 (400 from strict decoding) naming ``field``; an object that got in is deleted, and named."""
    name = body["metadata"].get("name")
    if passed_validation(kind, answer):
        if answer.status == 201:
            api.delete(kind, str(name))
        raise AssertionError(f"{case}: {kind.kind} {name!r} was accepted ({answer.status}): {json.dumps(body)[:2000]}")
    assert answer.status in (400, 422), f"{case}: unexpected answer {answer.status}: {answer.message}"
    assert names_field(answer.message, field), f"{case}: the refusal does not name {field}: {answer.message}"


@pytest.mark.parametrize("kind", [pytest.param(kind, id=kind.kind) for kind in KINDS])
def test_the_valid_object_each_violation_starts_from_is_accepted(api: Api, kind: Kind) -> None:
    name = fresh_name()
    body = kind.valid(name, f"{RUN}-valid")
    if kind.fixed_name:
        # the one AllocationPolicy exists: a dry-run replace of it with the valid spec is accepted
        current = api.get(kind, kind.fixed_name)
        assert current is not None
        replaced = put(body, ("metadata", "resourceVersion"), current["metadata"]["resourceVersion"])
        api.custom.replace_cluster_custom_object(GROUP, VERSION, kind.plural, kind.fixed_name, replaced, dry_run="All")
        return
    answer = api.create(kind, body)
    try:
        assert answer.status == 201, f"the valid {kind.kind} was refused: {answer.message}"
        stored = api.get(kind, name)
        assert stored is not None
        assert {key: stored["spec"][key] for key in body["spec"]} == body["spec"]
    finally:
        api.delete(kind, name)


@pytest.mark.parametrize(("kind", "violation"), CASES)
@HOSTILE_SETTINGS
@given(data=st.data())
def test_hostile_resource_is_refused_naming_the_field(api: Api, kind: Kind, violation: Violation, data: st.DataObject) -> None:
    TALLY.cases.add(f"{kind.kind}-{violation.id}")
    hostile = data.draw(violation.change(kind.valid(fresh_name(), RUN)), label=violation.id)
    refuse(api, kind, hostile.body, hostile.field, f"{kind.kind} {violation.id}")


def test_a_quota_without_a_number_is_refused_as_the_operator_would_refuse_it(api: Api) -> None:
    """isQuantity('Gi') is true in the apiserver's CEL, yet the Tenant model (and so the operator) refuses it;
    the CRD's rule also asks for the model's pattern, so such a Tenant is refused, not admitted to stay
    Ready=False InvalidSpec with no namespace (as it was until this test found it)."""
    accepted = []
    for memory in DIGITLESS_QUANTITIES:
        body = put(TENANT.valid(fresh_name(), f"{RUN}-quantity"), ("spec", "quota", "memory"), memory)
        answer = api.create(TENANT, body)
        if answer.status == 201:
            api.delete(TENANT, body["metadata"]["name"])
            accepted.append(memory)
        else:
            assert names_field(answer.message, "spec.quota.memory"), answer.message
    assert accepted == [], f"Tenants admitted with spec.quota.memory {accepted}"


def test_an_allocation_policy_not_named_default_is_refused(api: Api) -> None:
    """A CEL rule on the whole object (it reads metadata.name), which the apiserver reports at the root
    ("<nil>: Invalid value: ..."): its message names the field first."""
    name = fresh_name()
    answer = api.create(POLICY, put(POLICY.valid(name, f"{RUN}-name"), ("metadata", "name"), name))
    if answer.status == 201:
        api.delete(POLICY, name)
    assert answer.status == 422, answer.message
    assert "metadata.name must be default" in answer.message


def test_more_than_500_were_tried_none_accepted_none_left_and_the_policy_unchanged(api: Api) -> None:
    if len(TALLY.cases) < len(CASES):
        pytest.skip(f"only {len(TALLY.cases)} of {len(CASES)} violations ran in this session")
    left = [f"{kind.kind}/{name}" for kind in KINDS for name in api.labelled(kind, f"{RUN_LABEL}={RUN}")]
    assert left == [], f"hostile objects stored: {left}"
    policy = api.get(POLICY, "default")
    assert policy is not None
    assert policy["metadata"]["generation"] == api.policy_generation, "the AllocationPolicy's spec was changed"
    assert TALLY.accepted == []
    assert TALLY.tried >= REQUIRED_TOTAL, TALLY.line()
    assert TALLY.named == TALLY.tried, TALLY.line()
