"""The Helm chart: helm lint, and every rendered resource validated by kubeconform (strict)
against the schemas of Kubernetes 1.36, gigafab's CRDs, kopf's peering and cert-manager."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from gigafab import chartgen
from gigafab.api.crdgen import repo_root
from gigafab.local import chart

CERT_MANAGER = ("--api-versions", "cert-manager.io/v1")
NODES = ("--set-json", 'certificates.nodes={"niemeyer":["niemeyer-gpu-01","niemeyer-gpu-02"]}')


def by_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == kind}


def summary(answer: Any) -> dict[str, int]:
    return dict(json.loads(answer.stdout)["summary"])


def test_helm_lint_passes_strictly() -> None:
    answer = chart.helm("lint", "--strict", str(chart.chart_dir()), "--kube-version", chart.KUBE_VERSION)
    assert answer.returncode == 0, answer.stdout + answer.stderr
    assert "0 chart(s) failed" in answer.stdout


@pytest.mark.parametrize(
    "options", [(), CERT_MANAGER, CERT_MANAGER + NODES], ids=["secrets", "cert-manager", "cert-manager-nodes"]
)
def test_every_rendered_resource_is_valid(options: tuple[str, ...]) -> None:
    documents = chart.render(*options)
    answer = chart.validate(documents)
    assert answer.returncode == 0, answer.stdout
    assert summary(answer) == {"valid": len(documents), "invalid": 0, "errors": 0, "skipped": 0}


def test_the_validator_refuses_a_misspelt_field() -> None:
    documents = chart.render(*CERT_MANAGER)
    broken = copy.deepcopy(documents)
    operator = next(doc for doc in broken if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "gigafab-operator")
    operator["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    certificate = next(doc for doc in broken if doc["kind"] == "Certificate")
    certificate["spec"]["dnsName"] = certificate["spec"].pop("dnsNames")
    answer = chart.validate(broken)
    assert answer.returncode != 0
    assert summary(answer)["invalid"] == 2
    assert "imagePullPolicyy" in answer.stdout
    assert "dnsName" in answer.stdout


def test_a_gateway_and_an_agent_daemonset_per_site() -> None:
    documents = chart.render("--set-json", 'sites=[{"name":"niemeyer"},{"name":"de-halm","zone":"dh"}]')
    gateways = by_kind(documents, "Deployment")
    agents = by_kind(documents, "DaemonSet")
    assert set(gateways) == {"gigafab-operator", "gigafab-gateway-niemeyer", "gigafab-gateway-de-halm"}
    assert set(agents) == {"gigafab-agent-niemeyer", "gigafab-agent-de-halm"}
    spec = agents["gigafab-agent-de-halm"]["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"topology.kubernetes.io/zone": "dh", "nvidia.com/gpu.present": "true"}
    args = spec["containers"][0]["args"]
    host = "gigafab-gateway-de-halm.gigafab-system.svc"
    assert {f"--gateway={host}:50051", f"--server-name={host}", "--node=$(NODE_NAME)"} <= set(args)
    gateway = gateways["gigafab-gateway-de-halm"]["spec"]["template"]["spec"]
    assert gateway["nodeSelector"] == {"topology.kubernetes.io/zone": "dh"}
    assert "--site=de-halm" in gateway["containers"][0]["args"]
    assert gateway["containers"][0]["readinessProbe"] == {"httpGet": {"path": "/metrics", "port": "metrics"}}
    assert "--edge=/usr/local/bin/gigafab-edge" in gateway["containers"][0]["args"], "the edge, by default"


def test_the_gateway_can_serve_without_its_edge() -> None:
    documents = chart.render("--set", "gateway.edge=false")
    for name, gateway in by_kind(documents, "Deployment").items():
        if name.startswith("gigafab-gateway-"):
            assert not [arg for arg in gateway["spec"]["template"]["spec"]["containers"][0]["args"] if arg.startswith("--edge")]


def test_operator_runs_peered_with_its_rules_and_no_more() -> None:
    documents = chart.render("--set", "operator.peering.priority=7")
    operator = by_kind(documents, "Deployment")["gigafab-operator"]
    assert {"--peering=gigafab", "--priority=7"} <= set(operator["spec"]["template"]["spec"]["containers"][0]["args"])
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    assert "gigafab" in by_kind(documents, "ClusterKopfPeering")
    rules = by_kind(documents, "ClusterRole")["gigafab-operator"]["rules"]
    source = yaml.safe_load_all((repo_root() / "config" / "rbac" / "operator.yaml").read_text())
    expected = next(doc for doc in source if doc["kind"] == "ClusterRole")["rules"]
    assert rules[:-1] == expected
    assert rules[-1] == {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings"],
        "verbs": ["get", "list", "watch", "patch"],
    }
    assert all("*" not in rule["verbs"] for rule in rules)
    bindings = by_kind(documents, "ClusterRoleBinding")
    assert [binding["roleRef"]["name"] for binding in bindings.values()] == ["gigafab-operator"]


TENANT_BOUNDARY = {
    "gigafab-tenant-pods-on-lawful-sites",
    "gigafab-tenant-pods",
    "gigafab-workload-labels",
    "gigafab-workload-data-class",
}


def test_admission_policies_name_the_release_operator() -> None:
    """The policies are the ones in config/admission/, with the chart's operator ServiceAccount in place of
    the local plane's user; each can be left out."""
    documents = chart.render(namespace="platform")
    policies = by_kind(documents, "ValidatingAdmissionPolicy")
    assert set(policies) == {"gigafab-gpus-through-workloads", "gigafab-operator-in-tenant-namespaces", *TENANT_BOUNDARY}
    assert set(by_kind(documents, "ValidatingAdmissionPolicyBinding")) == set(policies)
    assert set(by_kind(documents, "MutatingAdmissionPolicy")) == {"gigafab-tenant-pods-on-lawful-sites"}
    assert set(by_kind(documents, "MutatingAdmissionPolicyBinding")) == {"gigafab-tenant-pods-on-lawful-sites"}
    operator = "'system:serviceaccount:platform:gigafab-operator'"
    confined = policies["gigafab-operator-in-tenant-namespaces"]["spec"]["matchConditions"]
    assert confined == [{"name": "written-by-the-operator", "expression": f"request.userInfo.username == {operator}"}]
    trusted = {v["name"]: v["expression"] for v in policies["gigafab-gpus-through-workloads"]["spec"]["variables"]}["trusted"]
    assert f"request.userInfo.username == {operator}" in trusted
    assert "'gigafab-operator'" not in json.dumps(documents)
    for name in ("gigafab-tenant-pods", "gigafab-workload-labels"):
        conditions = json.dumps(policies[name]["spec"]["matchConditions"])
        assert f"request.userInfo.username != {operator}" in conditions, name
    without = chart.render("--set", "rbac.operatorInTenantNamespaces=false", "--set", "rbac.tenantBoundary=false")
    assert set(by_kind(without, "ValidatingAdmissionPolicy")) == {"gigafab-gpus-through-workloads"}
    assert by_kind(without, "MutatingAdmissionPolicy") == {}
    neither = chart.render(
        "--set",
        "rbac.operatorInTenantNamespaces=false",
        "--set",
        "rbac.gpusThroughWorkloads=false",
        "--set",
        "rbac.tenantBoundary=false",
    )
    assert by_kind(neither, "ValidatingAdmissionPolicy") == {}


def test_tenant_priority_classes_and_cluster_networks_come_from_the_values() -> None:
    """The allow-list of PriorityClasses becomes the policy's CEL list; the cluster's networks reach the operator."""
    default = by_kind(chart.render(), "ValidatingAdmissionPolicy")["gigafab-tenant-pods"]
    assert {v["name"]: v["expression"] for v in default["spec"]["variables"]}["allowedPriorityClasses"] == "[]"
    documents = chart.render(
        "--set-json",
        'rbac.tenantPriorityClasses=["research-high","batch"]',
        "--set-json",
        'clusterNetworks=["10.244.0.0/16","fd00::/108"]',
    )
    policy = by_kind(documents, "ValidatingAdmissionPolicy")["gigafab-tenant-pods"]
    allowed = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}["allowedPriorityClasses"]
    assert allowed == '["research-high","batch"]'
    operator = by_kind(documents, "Deployment")["gigafab-operator"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "GIGAFAB_CLUSTER_NETWORKS", "value": "10.244.0.0/16,fd00::/108"} in operator["env"]
    assert "env" not in by_kind(chart.render(), "Deployment")["gigafab-operator"]["spec"]["template"]["spec"]["containers"][0]


def test_gateways_and_agents_get_no_api_token() -> None:
    documents = chart.render()
    assert by_kind(documents, "ServiceAccount")["gigafab-health"]["automountServiceAccountToken"] is False
    for doc in documents:
        if doc["kind"] in ("Deployment", "DaemonSet") and doc["metadata"]["name"] != "gigafab-operator":
            assert doc["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_certificates_come_from_cert_manager_when_it_is_there() -> None:
    without = chart.render()
    assert not by_kind(without, "Certificate")
    agent = by_kind(without, "DaemonSet")["gigafab-agent-niemeyer"]["spec"]["template"]["spec"]
    assert {"name": "pki", "secret": {"secretName": "gigafab-agents-niemeyer"}} in agent["volumes"]

    documents = chart.render(*CERT_MANAGER, *NODES)
    certificates = by_kind(documents, "Certificate")
    assert certificates["gigafab-agent-niemeyer-gpu-01"]["spec"]["commonName"] == "niemeyer-gpu-01"
    assert certificates["gigafab-agent-niemeyer-gpu-01"]["spec"]["usages"] == ["client auth"]
    gateway = certificates["gigafab-gateway-niemeyer"]["spec"]
    assert gateway["dnsNames"] == ["gigafab-gateway-niemeyer.gigafab-system.svc"]
    pki = next(
        v
        for v in by_kind(documents, "DaemonSet")["gigafab-agent-niemeyer"]["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "pki"
    )
    paths = [item["path"] for source in pki["projected"]["sources"] for item in source["secret"]["items"]]
    assert paths == ["niemeyer-gpu-01.crt", "niemeyer-gpu-01.key", "ca.crt", "niemeyer-gpu-02.crt", "niemeyer-gpu-02.key"]
    forced_off = chart.render(*CERT_MANAGER, "--set", "certificates.certManager=false")
    assert not by_kind(forced_off, "Certificate")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("operator.replicas=many", "at '/operator/replicas': got string, want integer"),
        ("agent.backnd=nvml", "additional properties 'backnd' not allowed"),
        ("agent.runtime=docker", "at '/agent/runtime'"),
        ("healthEtcd=etcd", "at '/healthEtcd'"),
        ("rbac.tenantPriorityClasses={a'b}", "at '/rbac/tenantPriorityClasses/0'"),
        ("clusterNetworks={everything}", "at '/clusterNetworks/0'"),
    ],
)
def test_bad_values_are_refused_with_the_field(option: str, message: str) -> None:
    with pytest.raises(ValueError, match="values don't meet the specifications") as refused:
        chart.render("--set", option)
    assert message in str(refused.value)


def test_crds_and_copied_files_are_generated_and_fresh() -> None:
    assert chartgen.stale_files(repo_root()) == []
    crds = {path.name for path in (chart.chart_dir() / "crds").glob("*.yaml")}
    assert crds == {path.name for path in (repo_root() / "crds").glob("*.yaml")} | {"kopf.dev_clusterkopfpeerings.yaml"}
    for path in (repo_root() / "crds").glob("*.yaml"):
        assert (chart.chart_dir() / "crds" / path.name).read_text() == path.read_text()


def test_a_stale_copy_is_reported(tmp_path: Any) -> None:
    root = tmp_path / "repo"
    sources = ("rbac/operator.yaml", "rbac/tenant-roles.yaml", *(f"admission/{policy}" for policy in chartgen.POLICIES))
    for source in sources:
        (root / "config" / source).parent.mkdir(parents=True, exist_ok=True)
        (root / "config" / source).write_text((repo_root() / "config" / source).read_text())
    assert chartgen.main(check=False, root=root) == 0
    assert chartgen.stale_files(root) == []
    rules = root / "charts" / "gigafab" / "files" / "operator-rules.yaml"
    rules.write_text(rules.read_text() + "- {apiGroups: ['*'], resources: ['*'], verbs: ['*']}\n")
    assert chartgen.stale_files(root) == [rules]
    assert chartgen.main(check=True, root=root) == 1
