"""RBAC matrix: what each identity of the platform may do, cell by cell, on the real apiserver.

Invariant: for each tenant role (admin, member, viewer, as bound by a Tenant), the operator (the
local plane's user gigafab-operator and the Helm chart's ServiceAccount) and the gateways' and
agents' ServiceAccount, ``kubectl auth can-i`` answers every verb on every relevant resource, in
the tenant's own namespace, another tenant's namespace, kube-system and cluster-wide, exactly as
the EXPECTED grants below say; everything they do not list is "no". So the operator is no
cluster-admin, no tenant role touches quotas, limits, network policies or bindings, nor anything
of another tenant, and the health plane's account may do nothing an unknown user may not.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gigafab.local import chart

from .conftest import Kubectl, condition, eventually, tenant

RUN = uuid.uuid4().hex[:6]
OWN_TENANT = f"rbac-{RUN}"
OTHER_TENANT = f"rbac-{RUN}-nb"
RELEASE = f"rbac-{RUN}"
FULLNAME = f"{RELEASE}-gigafab"  # the chart's fullname for a release without "gigafab" in its name
CHART_NAMESPACE = f"rbac-{RUN}-system"
WORKERS = 8

# -- where: the tenant's own namespace, another tenant's, kube-system, and the whole cluster ------

OWN, OTHER, SYSTEM, CLUSTER = "own", "other-tenant", "kube-system", "cluster"
NAMESPACES = (OWN, OTHER, SYSTEM)
ANYWHERE = (*NAMESPACES, CLUSTER)

# -- what: every verb on every resource that matters, with the verbs that mean something for it --

READ = ("get", "list", "watch")
CHANGE = ("create", "update", "patch", "delete")
VERBS = (*READ, *CHANGE, "deletecollection")
STATUS = ("get", "update", "patch")

NAMESPACED: dict[str, tuple[str, ...]] = {
    "pods": VERBS,
    "pods/exec": ("get", "create"),
    "deployments.apps": VERBS,
    "services": VERBS,
    "configmaps": VERBS,
    "secrets": VERBS,
    "resourcequotas": VERBS,
    "limitranges": VERBS,
    "networkpolicies.networking.k8s.io": VERBS,
    "roles.rbac.authorization.k8s.io": VERBS,
    "rolebindings.rbac.authorization.k8s.io": VERBS,
    "events": VERBS,
    "gpuworkloads.gigafab.nl": VERBS,
    "gpuworkloads.gigafab.nl/status": STATUS,
    "localqueues.kueue.x-k8s.io": VERBS,
    "workloads.kueue.x-k8s.io": VERBS,
}
CLUSTER_SCOPED: dict[str, tuple[str, ...]] = {
    "namespaces": VERBS,
    "nodes": VERBS,
    "clusterroles.rbac.authorization.k8s.io": VERBS,
    "clusterrolebindings.rbac.authorization.k8s.io": VERBS,
    "sites.gigafab.nl": VERBS,
    "sites.gigafab.nl/status": STATUS,
    "tenants.gigafab.nl": VERBS,
    "tenants.gigafab.nl/status": STATUS,
    "egressdestinations.gigafab.nl": VERBS,
    "egressdestinations.gigafab.nl/status": STATUS,
    "allocationpolicies.gigafab.nl": VERBS,
    "allocationpolicies.gigafab.nl/status": STATUS,
    "clusterqueues.kueue.x-k8s.io": VERBS,
    "resourceflavors.kueue.x-k8s.io": VERBS,
    "clusterkopfpeerings.kopf.dev": VERBS,
}
TENANT_ROLES = tuple(
    f"clusterroles.rbac.authorization.k8s.io={role}"
    for role in ("gigafab-tenant-admin", "gigafab-tenant-member", "gigafab-tenant-viewer")
)
POWERFUL_ROLES = ("clusterroles.rbac.authorization.k8s.io=cluster-admin", "clusterroles.rbac.authorization.k8s.io=admin")
SPECIAL: tuple[tuple[str, str, str], ...] = (
    *(("bind", role, CLUSTER) for role in (*TENANT_ROLES, *POWERFUL_ROLES)),
    ("bind", "clusterroles.rbac.authorization.k8s.io", CLUSTER),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", CLUSTER),
    ("bind", "roles.rbac.authorization.k8s.io", OWN),
    ("escalate", "roles.rbac.authorization.k8s.io", OWN),
    ("impersonate", "users", CLUSTER),
    ("impersonate", "groups", CLUSTER),
    ("impersonate", "serviceaccounts", OWN),
    ("*", "*", CLUSTER),
)
"""Cells beyond the verbs above: binding and escalating roles (``=name``: one named role), impersonation, everything."""


@dataclass(frozen=True)
class Grant:
    """Some verbs on some resources in some scopes: "yes" in every such cell."""

    verbs: tuple[str, ...]
    resources: tuple[str, ...]
    scopes: tuple[str, ...] = (OWN,)

    def allows(self, cell: Cell) -> bool:
        return cell.verb in self.verbs and cell.resource in self.resources and cell.scope in self.scopes


# -- the expected matrix: what each subject may do; every other cell is "no" ----------------------

PLATFORM_OWNED = ("resourcequotas", "limitranges", "networkpolicies.networking.k8s.io")
RUN_WORK = ("pods", "services", "configmaps", "deployments.apps", "gpuworkloads.gigafab.nl")
# viewer: reads its work and the platform's objects, in its own namespace only
TENANT_VIEWER = (
    Grant(READ, (*RUN_WORK, "events", *PLATFORM_OWNED)),
    Grant(("get",), ("gpuworkloads.gigafab.nl/status",)),
)
# member: also runs work, Pods and Deployments directly too (not only through GpuWorkloads), and execs into Pods
TENANT_MEMBER = (
    *TENANT_VIEWER,
    Grant(CHANGE, RUN_WORK),
    Grant(("deletecollection",), ("pods", "services", "configmaps")),
    Grant(("get", "create"), ("pods/exec",)),
)
# admin: also keeps the namespace's Secrets and reads its Roles and RoleBindings (never changes them)
TENANT_ADMIN = (
    *TENANT_MEMBER,
    Grant(VERBS, ("secrets",)),
    Grant(READ, ("roles.rbac.authorization.k8s.io", "rolebindings.rbac.authorization.k8s.io")),
)
GIGAFAB_KINDS = ("sites.gigafab.nl", "tenants.gigafab.nl", "egressdestinations.gigafab.nl", "allocationpolicies.gigafab.nl")
# operator (config/rbac/operator.yaml): no Secrets, no Services or ConfigMaps, no cluster roles or bindings;
# it runs GpuWorkloads as Deployments and owns tenant namespaces' quotas, limits, policies, bindings and queues,
# wherever they are by RBAC (a ClusterRole, so kube-system too: the admission policy of test_operator_confined.py
# confines the writes to tenant namespaces); it binds only the three tenant roles
OPERATOR = (
    Grant((*READ, "update", "patch"), ("gpuworkloads.gigafab.nl", "gpuworkloads.gigafab.nl/status"), ANYWHERE),
    Grant((*READ, "update", "patch"), (*GIGAFAB_KINDS, *(f"{kind}/status" for kind in GIGAFAB_KINDS)), (CLUSTER,)),
    Grant((*READ, *CHANGE), ("namespaces", "clusterqueues.kueue.x-k8s.io", "resourceflavors.kueue.x-k8s.io"), (CLUSTER,)),
    Grant((*READ, "patch"), ("nodes",), (CLUSTER,)),
    Grant(READ, ("pods", "workloads.kueue.x-k8s.io"), ANYWHERE),
    Grant(
        (*READ, *CHANGE),
        (*PLATFORM_OWNED, "rolebindings.rbac.authorization.k8s.io", "deployments.apps", "localqueues.kueue.x-k8s.io"),
        ANYWHERE,
    ),
    Grant(("create", "update", "patch"), ("events",), ANYWHERE),
    Grant(("bind",), TENANT_ROLES, (CLUSTER,)),
)
# the chart's operator ServiceAccount: the same, plus kopf's peering
OPERATOR_ACCOUNT = (*OPERATOR, Grant((*READ, "patch"), ("clusterkopfpeerings.kopf.dev",), (CLUSTER,)))
EXPECTED: dict[str, tuple[Grant, ...]] = {
    "tenant-admin": TENANT_ADMIN,
    "tenant-member": TENANT_MEMBER,
    "tenant-viewer": TENANT_VIEWER,
    "operator": OPERATOR,
    "operator-account": OPERATOR_ACCOUNT,
    "health-account": (),  # gateways and agents never call the Kubernetes API
}


@dataclass(frozen=True)
class Subject:
    user: str
    groups: tuple[str, ...] = ()


SUBJECTS: dict[str, Subject] = {
    "tenant-admin": Subject(f"{OWN_TENANT}-ada", (f"{OWN_TENANT}-admins",)),  # a member of the Group the Tenant binds
    "tenant-member": Subject(f"{OWN_TENANT}-mo"),
    "tenant-viewer": Subject(f"{OWN_TENANT}-vi"),
    "operator": Subject("gigafab-operator"),  # the local plane's operator: a client certificate
    "operator-account": Subject(f"system:serviceaccount:{CHART_NAMESPACE}:{FULLNAME}-operator"),
    "health-account": Subject(f"system:serviceaccount:{CHART_NAMESPACE}:{FULLNAME}-health"),
}
TENANT_SUBJECTS = ("tenant-admin", "tenant-member", "tenant-viewer")
NAMESPACE_OF = {OWN: OWN_TENANT, OTHER: OTHER_TENANT, SYSTEM: "kube-system"}


@dataclass(frozen=True)
class Cell:
    subject: str
    verb: str
    resource: str
    scope: str

    def argv(self) -> list[str]:
        """``auth can-i`` for this cell: ``x/sub`` is a subresource, ``x=name`` one named object."""
        resource, _, subresource = self.resource.partition("/")
        resource = resource.replace("=", "/")
        where = ["--all-namespaces"] if self.scope == CLUSTER else ["-n", NAMESPACE_OF[self.scope]]
        if self.resource in CLUSTER_SCOPED or resource.startswith(("clusterroles", "users", "groups")):
            where = []
        subject = SUBJECTS[self.subject]
        identity = [f"--as={subject.user}", *(f"--as-group={group}" for group in subject.groups)]
        extra = [f"--subresource={subresource}"] if subresource else []
        return ["auth", "can-i", self.verb, resource, *extra, *where, *identity]

    def expected(self) -> bool:
        return any(grant.allows(self) for grant in EXPECTED[self.subject])

    def __str__(self) -> str:
        return f"{self.subject:16} {self.verb:16} {self.resource:50} {self.scope}"


def matrix() -> list[Cell]:
    """Every cell: namespaced resources in the namespaces with every verb, and across the whole cluster
    with list and watch (the only verbs a request across all namespaces can carry); cluster-scoped
    resources with every verb; and the special cells. A subject outside the tenant has no namespace
    of its own: for it, the tenant's namespace is the other tenant's, a namespace like any tenant's."""
    cells = []
    for subject in SUBJECTS:
        namespaces = NAMESPACES if subject in TENANT_SUBJECTS else (OTHER, SYSTEM)
        for resource, verbs in NAMESPACED.items():
            cells.extend(Cell(subject, verb, resource, scope) for scope in namespaces for verb in verbs)
            cells.extend(Cell(subject, verb, resource, CLUSTER) for verb in verbs if verb in ("list", "watch"))
        for resource, verbs in CLUSTER_SCOPED.items():
            cells.extend(Cell(subject, verb, resource, CLUSTER) for verb in verbs)
        cells.extend(Cell(subject, verb, resource, scope) for verb, resource, scope in SPECIAL)
    return cells


@dataclass
class CanI:
    """``kubectl auth can-i`` against the test plane, as the admin asking for someone else."""

    kubectl: Kubectl
    cache: Path
    checked: int = 0

    def __call__(self, argv: list[str]) -> bool:
        """One kubectl call: True for yes, False for no, an error for anything else."""
        layout = self.kubectl.plane.layout
        command = [str(layout.binary("kubectl")), f"--kubeconfig={layout.admin_kubeconfig}", f"--cache-dir={self.cache}", *argv]
        # thousands of short-lived kubectls share two cores: no garbage collector, one thread each
        quiet = {**os.environ, "GOGC": "off", "GOMAXPROCS": "1"}
        answer = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60, env=quiet)
        said = answer.stdout.strip()
        if said not in ("yes", "no"):
            raise AssertionError(f"kubectl {' '.join(argv)}: {said} {answer.stderr.strip()}")
        self.checked += 1
        return said == "yes"

    def cells(self, cells: list[Cell]) -> dict[Cell, bool]:
        """Every cell, one kubectl each, in a thread pool."""
        first, *rest = cells
        found = {first: self(first.argv())}  # fills the discovery cache before the pool shares it
        with ThreadPoolExecutor(WORKERS) as pool:
            found.update(zip(rest, pool.map(lambda cell: self(cell.argv()), rest), strict=True))
        return found


@pytest.fixture(scope="module")
def can_i(kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[CanI]:
    asking = CanI(kubectl, tmp_path_factory.mktemp("kube-cache"))
    yield asking
    cells = matrix()
    wanted = sum(cell.expected() for cell in cells)
    line = (
        f"rbac matrix: {asking.checked} cells checked with kubectl auth can-i "
        f"(matrix: {len(cells)} cells, {len(SUBJECTS)} subjects, {wanted} yes expected)"
    )
    announce(request, line)


def announce(request: pytest.FixtureRequest, line: str) -> None:
    """Print ``line`` past pytest's output capture, so the figures show in every run."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n{line}")


# -- the identities: two tenants, and the chart's accounts and roles ------------------------------


def ready(kubectl: Kubectl, name: str) -> None:
    def check() -> None:
        state = condition(kubectl.get("tenant", name), "Ready")
        assert state["status"] == "True", state

    eventually(check, timeout=120)


def chart_rbac() -> list[dict[str, Any]]:
    """The chart's ServiceAccounts, ClusterRoles and ClusterRoleBindings (the tenant roles exist already)."""
    documents = chart.render("--set", "rbac.createTenantRoles=false", release=RELEASE, namespace=CHART_NAMESPACE)
    wanted = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    return [document for document in documents if document["kind"] in wanted]


PEERING_CRD = "clusterkopfpeerings.kopf.dev"


@pytest.fixture(scope="module")
def identities(kubectl: Kubectl) -> Iterator[None]:
    """Tenant one (a Group of admins, a member, a viewer), its neighbour, and the chart's accounts and roles."""
    members = [
        {"kind": "Group", "name": f"{OWN_TENANT}-admins", "role": "admin"},
        {"kind": "User", "name": SUBJECTS["tenant-member"].user, "role": "member"},
        {"kind": "User", "name": SUBJECTS["tenant-viewer"].user, "role": "viewer"},
    ]
    neighbour = [{"name": f"{OTHER_TENANT}-ad", "role": "admin"}]
    kubectl.apply(tenant(OWN_TENANT, members=members), tenant(OTHER_TENANT, members=neighbour))
    peering_installed = _install_peering_crd(kubectl)
    kubectl.run("create", "namespace", CHART_NAMESPACE)
    documents = chart_rbac()
    kubectl.apply(*documents)
    ready(kubectl, OWN_TENANT)
    ready(kubectl, OTHER_TENANT)
    yield
    for document in documents:
        if document["kind"] != "ServiceAccount":
            kubectl.run("delete", document["kind"].lower(), document["metadata"]["name"], "--wait=false", check=False)
    kubectl.run("delete", "namespace", CHART_NAMESPACE, "--wait=false", check=False)
    kubectl.run("delete", "tenant", OWN_TENANT, OTHER_TENANT, "--wait=false", check=False)
    if peering_installed:
        kubectl.run("delete", "crd", PEERING_CRD, "--wait=false", check=False)


def _install_peering_crd(kubectl: Kubectl) -> bool:
    """The chart's kopf peering CRD, so that its resource is known (the chart installs it); True if added here."""
    if kubectl.get("crd", PEERING_CRD) is not None:
        return False
    kubectl.run("apply", "-f", str(chart.chart_dir() / "crds" / "kopf.dev_clusterkopfpeerings.yaml"))
    kubectl.run("wait", "--for=condition=Established", f"crd/{PEERING_CRD}", "--timeout=60s")
    return True


# -- the tests ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("identities")
def test_every_cell_of_the_matrix_is_as_expected(can_i: CanI) -> None:
    cells = matrix()
    found = can_i.cells(cells)
    wrong = [
        f"{cell}: {'yes' if got else 'no'}, expected {'yes' if cell.expected() else 'no'}"
        for cell, got in found.items()
        if got != cell.expected()
    ]
    assert wrong == [], f"{len(wrong)} of {len(cells)} cells differ:\n" + "\n".join(wrong)
    assert any(found.values()), "not one yes: the identities were not bound at all"


@pytest.mark.usefixtures("identities")
def test_the_chart_grants_its_operator_account_what_the_plane_grants_the_operator(kubectl: Kubectl) -> None:
    """The chart's operator ClusterRole is generated from config/rbac: the same rules, plus kopf's peering."""
    plane_rules = kubectl.get("clusterrole", "gigafab-operator")["rules"]
    chart_rules = kubectl.get("clusterrole", f"{FULLNAME}-operator")["rules"]
    peering = [rule for rule in chart_rules if rule["apiGroups"] == ["kopf.dev"]]
    assert [rule for rule in chart_rules if rule not in peering] == plane_rules
    assert peering == [
        {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "verbs": ["get", "list", "watch", "patch"]}
    ]


@pytest.mark.usefixtures("identities")
@pytest.mark.parametrize("subject", list(SUBJECTS))
def test_no_one_is_cluster_admin(can_i: CanI, subject: str) -> None:
    identity = SUBJECTS[subject]
    argv = ["auth", "can-i", "*", "*", "--all-namespaces", f"--as={identity.user}", *(f"--as-group={g}" for g in identity.groups)]
    assert not can_i(argv)


@pytest.mark.usefixtures("identities")
@pytest.mark.parametrize("subject", TENANT_SUBJECTS)
@pytest.mark.parametrize(
    ("action", "namespace"),
    [
        (
            [
                "patch",
                "resourcequota",
                "gigafab-quota",
                "--type=merge",
                "-p",
                '{"spec":{"hard":{"requests.nvidia.com/gpu":"999"}}}',
            ],
            OWN,
        ),
        (["delete", "limitrange", "gigafab-limits"], OWN),
        (["delete", "networkpolicy", "gigafab-tenant-boundary"], OWN),
        (["create", "rolebinding", "sneak", "--clusterrole=gigafab-tenant-admin", "--user=intruder"], OWN),
        (["delete", "rolebinding", "gigafab-admin"], OWN),
        (["get", "pods"], OTHER),
        (["create", "configmap", "sneak", "--from-literal=a=b"], OTHER),
        (["delete", "gpuworkloads.gigafab.nl", "--all"], OTHER),
        (["get", "secrets"], OTHER),
    ],
    ids=[
        "own-quota",
        "own-limits",
        "own-boundary",
        "own-new-binding",
        "own-binding",
        "other-pods",
        "other-configmap",
        "other-workloads",
        "other-secrets",
    ],
)
def test_a_tenant_cannot_touch_platform_objects_nor_another_tenant_for_real(
    kubectl: Kubectl, subject: str, action: list[str], namespace: str
) -> None:
    """Real requests (server-side dry run where they would change something) are forbidden."""
    identity = SUBJECTS[subject]
    dry = ["--dry-run=server"] if action[0] in ("patch", "delete", "create") else []
    answer = kubectl.run(*action, *dry, "-n", NAMESPACE_OF[namespace], as_user=identity.user, groups=identity.groups, check=False)
    assert answer.returncode != 0, f"{subject} may {' '.join(action)}"
    assert "forbidden" in answer.stderr, answer.stderr


@pytest.mark.usefixtures("identities")
def test_the_health_account_may_do_only_what_any_service_account_may(kubectl: Kubectl) -> None:
    """Gateways and agents never call the Kubernetes API: their account holds no rule of its own, anywhere."""
    for namespace in (CHART_NAMESPACE, OWN_TENANT, "kube-system"):
        account = _rules(kubectl, namespace, SUBJECTS["health-account"].user)
        unbound = _rules(kubectl, namespace, f"system:serviceaccount:{CHART_NAMESPACE}:nobody-{RUN}")
        assert account == unbound, f"in {namespace}"
        assert not any("pods" in rule or "secrets" in rule or "nodes" in rule for rule in account), account


def _rules(kubectl: Kubectl, namespace: str, user: str) -> list[str]:
    """The rules ``kubectl auth can-i --list`` shows for ``user`` in ``namespace``, one line each."""
    answer = kubectl.run("auth", "can-i", "--list", "-n", namespace, as_user=user)
    return sorted(line.strip() for line in answer.stdout.splitlines() if line.strip())


def test_the_expected_matrix_names_only_known_subjects_resources_and_scopes() -> None:
    """A typo in EXPECTED would make a grant match no cell and pass as "no"."""
    resources = {*NAMESPACED, *CLUSTER_SCOPED, *(resource for _, resource, _ in SPECIAL)}
    assert set(EXPECTED) == set(SUBJECTS)
    cells = matrix()
    for subject, grants in EXPECTED.items():
        for grant in grants:
            assert set(grant.resources) <= resources, f"{subject}: {set(grant.resources) - resources}"
            assert set(grant.scopes) <= set(ANYWHERE), subject
            assert any(grant.allows(cell) for cell in cells if cell.subject == subject), f"{subject}: {grant} allows no cell"
