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
OWN_CA = ("--set", "certificates.ca.create=false", "--set", "certificates.ca.secretName=our-health-ca")


def by_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == kind}


def summary(answer: Any) -> dict[str, int]:
    return dict(json.loads(answer.stdout)["summary"])


def test_helm_lint_passes_strictly() -> None:
    answer = chart.helm("lint", "--strict", str(chart.chart_dir()), "--kube-version", chart.KUBE_VERSION)
    assert answer.returncode == 0, answer.stdout + answer.stderr
    assert "0 chart(s) failed" in answer.stdout


@pytest.mark.parametrize(
    "options", [(), CERT_MANAGER, CERT_MANAGER + OWN_CA], ids=["secrets", "cert-manager", "cert-manager-own-ca"]
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
    certificate = next(doc for doc in broken if doc["kind"] == "Certificate" and "dnsNames" in doc["spec"])
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
    assert set(gateways) == {"gigafab-operator", "gigafab-signer", "gigafab-gateway-niemeyer", "gigafab-gateway-de-halm"}
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


def test_a_real_nodes_agent_keeps_its_fence_on_the_host_and_arms_the_nodes_watchdog() -> None:
    agent = by_kind(chart.render(), "DaemonSet")["gigafab-agent-niemeyer"]["spec"]["template"]["spec"]
    container = agent["containers"][0]
    assert {"--runtime=cri", "--state-dir=/var/lib/gigafab", "--watchdog=/dev/watchdog"} <= set(container["args"])
    assert {"name": "state", "hostPath": {"path": "/var/lib/gigafab", "type": "DirectoryOrCreate"}} in agent["volumes"]
    assert {"name": "state", "mountPath": "/var/lib/gigafab"} in container["volumeMounts"]
    assert container["securityContext"]["privileged"] is True, "a watchdog device opens only in a privileged container"
    assert "allowPrivilegeEscalation" not in container["securityContext"]
    without = by_kind(chart.render("--set", "agent.watchdog=none"), "DaemonSet")["gigafab-agent-niemeyer"]
    unprivileged = without["spec"]["template"]["spec"]["containers"][0]
    assert "--watchdog=none" in unprivileged["args"]
    assert unprivileged["securityContext"]["allowPrivilegeEscalation"] is False
    assert "privileged" not in unprivileged["securityContext"]
    simulated = by_kind(chart.render("--set", "agent.runtime=simulated"), "DaemonSet")["gigafab-agent-niemeyer"]
    args = simulated["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [arg for arg in args if arg.startswith(("--state-dir", "--watchdog"))], "test clusters: nothing on the host"
    with pytest.raises(ValueError, match="at '/agent/watchdog'"):
        chart.render("--set", "agent.watchdog=watchdog")


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
    assert bindings["gigafab-operator"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "gigafab-operator", "namespace": "gigafab-system"}
    ]
    assert {binding["roleRef"]["name"] for binding in bindings.values()} == {
        "gigafab-operator",
        "gigafab-signer",
        "gigafab-health-agent",
    }


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


def test_only_the_agents_and_the_signer_get_an_api_token_and_each_only_its_rules() -> None:
    documents = chart.render()
    assert by_kind(documents, "ServiceAccount")["gigafab-health"]["automountServiceAccountToken"] is False
    for doc in documents:
        if doc["kind"] == "Deployment" and doc["metadata"]["name"].startswith("gigafab-gateway-"):
            assert doc["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    agent = by_kind(documents, "DaemonSet")["gigafab-agent-niemeyer"]["spec"]["template"]["spec"]
    assert (agent["serviceAccountName"], agent["automountServiceAccountToken"]) == ("gigafab-agent", True)
    roles = by_kind(documents, "ClusterRole")
    for role, source in (("gigafab-signer", "signer.yaml"), ("gigafab-health-agent", "health-agent.yaml")):
        rules = next(doc for doc in yaml.safe_load_all((repo_root() / "config" / "rbac" / source).read_text()) if doc)["rules"]
        assert roles[role]["rules"] == rules
    assert roles["gigafab-health-agent"]["rules"] == [
        {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"], "verbs": ["create", "watch"]}
    ]
    signs = [rule for rule in roles["gigafab-signer"]["rules"] if "sign" in rule["verbs"]]
    assert signs == [
        {
            "apiGroups": ["certificates.k8s.io"],
            "resources": ["signers"],
            "resourceNames": ["gigafab.nl/health-agent"],
            "verbs": ["approve", "sign"],
        }
    ]
    publish = by_kind(documents, "Role")["gigafab-signer"]["rules"]
    assert publish == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["gigafab-health-ca"], "verbs": ["create", "patch"]}
    ]


def _volumes(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, dict[str, Any]]:
    return {volume["name"]: volume for volume in by_kind(documents, kind)[name]["spec"]["template"]["spec"]["volumes"]}


@pytest.mark.parametrize("options", [(), CERT_MANAGER, CERT_MANAGER + OWN_CA], ids=["secrets", "cert-manager", "own-ca"])
def test_an_agent_pod_holds_nothing_of_another_node(options: tuple[str, ...]) -> None:
    """No Secret at all: the agent's key is made in its pod, in memory, and its certificate asked for by itself."""
    documents = chart.render(*options)
    for site in ("niemeyer", "de-halm", "eemshaven"):
        volumes = _volumes(documents, "DaemonSet", f"gigafab-agent-{site}")
        assert volumes == {
            "identity": {"name": "identity", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
            "health-ca": {"name": "health-ca", "configMap": {"name": "gigafab-health-ca", "optional": True}},
            "cri": {"name": "cri", "hostPath": {"path": "/run/containerd/containerd.sock", "type": "Socket"}},
            # the node's own fence record (docs/health-plane.md), nothing of another node
            "state": {"name": "state", "hostPath": {"path": "/var/lib/gigafab", "type": "DirectoryOrCreate"}},
        }
        container = by_kind(documents, "DaemonSet")[f"gigafab-agent-{site}"]["spec"]["template"]["spec"]["containers"][0]
        mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
        assert {"--enrol", f"--pki={mounts['identity']}", f"--ca={mounts['health-ca']}/ca.crt"} <= set(container["args"])
        assert f"--site={site}" in container["args"]
    assert not [doc for doc in documents if doc["kind"] == "Certificate" and "agent" in doc["metadata"]["name"]]


def test_the_signer_alone_mounts_the_ca_and_publishes_its_certificate_for_the_agents() -> None:
    documents = chart.render(namespace="platform")
    signer = by_kind(documents, "Deployment")["gigafab-signer"]["spec"]["template"]["spec"]
    args = signer["containers"][0]["args"]
    assert {"--agents=platform/gigafab-agent", "--publish-ca=platform/gigafab-health-ca", "--max-seconds=86400"} <= set(args)
    assert signer["serviceAccountName"] == "gigafab-signer"
    assert _volumes(documents, "Deployment", "gigafab-signer")["ca"]["secret"]["secretName"] == "gigafab-health-ca"
    holders = [
        doc["metadata"]["name"]
        for doc in documents
        if doc["kind"] in ("Deployment", "DaemonSet")
        and any(
            (v.get("secret") or {}).get("secretName") == "gigafab-health-ca" for v in doc["spec"]["template"]["spec"]["volumes"]
        )
    ]
    assert holders == ["gigafab-signer"]
    own = chart.render(*CERT_MANAGER, *OWN_CA)
    assert _volumes(own, "Deployment", "gigafab-signer")["ca"]["secret"]["secretName"] == "our-health-ca"
    assert by_kind(own, "Issuer")["gigafab-health-ca"]["spec"] == {"ca": {"secretName": "our-health-ca"}}
    assert "gigafab-health-ca" not in by_kind(own, "Certificate"), "a CA of your own is not made by the chart"


def test_certificates_come_from_cert_manager_when_it_is_there() -> None:
    without = chart.render()
    assert not by_kind(without, "Certificate")
    assert not by_kind(without, "Issuer")

    documents = chart.render(*CERT_MANAGER)
    certificates = by_kind(documents, "Certificate")
    assert set(certificates) == {"gigafab-health-ca"} | {
        f"gigafab-gateway-{site}" for site in ("niemeyer", "de-halm", "eemshaven")
    }
    ca = certificates["gigafab-health-ca"]["spec"]
    assert (ca["isCA"], ca["secretName"], ca["privateKey"]["rotationPolicy"]) == (True, "gigafab-health-ca", "Never")
    gateway = certificates["gigafab-gateway-niemeyer"]["spec"]
    assert gateway["dnsNames"] == ["gigafab-gateway-niemeyer.gigafab-system.svc"]
    assert gateway["issuerRef"] == {"name": "gigafab-health-ca", "kind": "Issuer", "group": "cert-manager.io"}
    assert by_kind(documents, "Issuer")["gigafab-health-ca"]["spec"] == {"ca": {"secretName": "gigafab-health-ca"}}
    forced_off = chart.render(*CERT_MANAGER, "--set", "certificates.certManager=false")
    assert not by_kind(forced_off, "Certificate")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("operator.replicas=many", "at '/operator/replicas': got string, want integer"),
        ("agent.backnd=nvml", "additional properties 'backnd' not allowed"),
        ("agent.runtime=docker", "at '/agent/runtime'"),
        ("healthEtcd=etcd", "at '/healthEtcd'"),
        ("certificates.nodes.niemeyer=n1", "additional properties 'nodes' not allowed"),
        ("certificates.issuerRef.name=ca", "additional properties 'issuerRef' not allowed"),
        ("agent.certificateSeconds=60", "at '/agent/certificateSeconds'"),
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
    rbac = ("operator", "tenant-roles", *chartgen.IDENTITY_ROLES)
    sources = (*(f"rbac/{name}.yaml" for name in rbac), *(f"admission/{policy}" for policy in chartgen.POLICIES))
    for source in sources:
        (root / "config" / source).parent.mkdir(parents=True, exist_ok=True)
        (root / "config" / source).write_text((repo_root() / "config" / source).read_text())
    assert chartgen.main(check=False, root=root) == 0
    assert chartgen.stale_files(root) == []
    rules = root / "charts" / "gigafab" / "files" / "operator-rules.yaml"
    rules.write_text(rules.read_text() + "- {apiGroups: ['*'], resources: ['*'], verbs: ['*']}\n")
    assert chartgen.stale_files(root) == [rules]
    assert chartgen.main(check=True, root=root) == 1
