"""The operator's few Kubernetes calls, over the official client.

Objects are written with server-side apply under one field manager, so applying
the same desired object again is a no-op and a hand edit of a managed field is
taken back. Responses are not deserialised into models: the operator only needs
status codes and a few fields, and skipping that keeps it fast and small.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

FIELD_MANAGER = "gigafab-operator"
REPLACED_WHEN_IMMUTABLE = {("kueue.x-k8s.io/v1beta2", "LocalQueue")}

_PATHS = {
    ("v1", "Namespace"): "/api/v1/namespaces",
    ("v1", "ResourceQuota"): "/api/v1/namespaces/{namespace}/resourcequotas",
    ("v1", "LimitRange"): "/api/v1/namespaces/{namespace}/limitranges",
    ("v1", "Pod"): "/api/v1/namespaces/{namespace}/pods",
    ("v1", "PersistentVolumeClaim"): "/api/v1/namespaces/{namespace}/persistentvolumeclaims",
    ("gigafab.nl/v1alpha1", "GpuWorkload"): "/apis/gigafab.nl/v1alpha1/namespaces/{namespace}/gpuworkloads",
    ("v1", "Event"): "/api/v1/namespaces/{namespace}/events",
    ("apps/v1", "Deployment"): "/apis/apps/v1/namespaces/{namespace}/deployments",
    ("networking.k8s.io/v1", "NetworkPolicy"): "/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
    ("kueue.x-k8s.io/v1beta2", "ResourceFlavor"): "/apis/kueue.x-k8s.io/v1beta2/resourceflavors",
    ("kueue.x-k8s.io/v1beta2", "WorkloadPriorityClass"): "/apis/kueue.x-k8s.io/v1beta2/workloadpriorityclasses",
    ("kueue.x-k8s.io/v1beta2", "ClusterQueue"): "/apis/kueue.x-k8s.io/v1beta2/clusterqueues",
    ("kueue.x-k8s.io/v1beta2", "LocalQueue"): "/apis/kueue.x-k8s.io/v1beta2/namespaces/{namespace}/localqueues",
}


def collection_path(api_version: str, kind: str, namespace: str | None = None) -> str:
    return _PATHS[(api_version, kind)].format(namespace=namespace or "")


def namespace_path(name: str) -> str:
    return f"{collection_path('v1', 'Namespace')}/{name}"


def object_path(manifest: Mapping[str, Any]) -> str:
    meta = manifest["metadata"]
    base = collection_path(manifest["apiVersion"], manifest["kind"], meta.get("namespace"))
    return f"{base}/{meta['name']}"


class Kube:
    """A thin, thread-safe client for the operator's handlers."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    @classmethod
    def connect(cls, kubeconfig: str | None = None, pool: int = 64) -> Kube:
        configuration = client.Configuration()
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig or os.environ.get("KUBECONFIG") or None, client_configuration=configuration
            )
        except config.ConfigException:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        configuration.connection_pool_maxsize = pool
        return cls(client.ApiClient(configuration))

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> Any:
        method, url, headers, _, _ = self.api.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(method, url, header_params=headers, body=body)
        data = response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status < 300:
            raise ApiException(status=response.status, reason=response.reason, body=data.decode(errors="replace"))
        return json.loads(data) if data else None

    def apply(self, manifest: Mapping[str, Any]) -> Any:
        """Server-side apply ``manifest`` (create or update), forcing our ownership."""
        return self._call(
            "PATCH",
            object_path(manifest),
            body=json.dumps(manifest),
            content_type="application/apply-patch+yaml",
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        )

    def ensure(self, manifest: Mapping[str, Any]) -> Any:
        """Create ``manifest``; if it exists already, apply it (a create is far cheaper for the apiserver).
        A kind whose spec is immutable (a LocalQueue's ClusterQueue, when a tenant changes track) is
        replaced instead when the apiserver refuses the change."""
        try:
            return self.create(manifest)
        except ApiException as failure:
            if failure.status != 409:
                raise
        try:
            return self.apply(manifest)
        except ApiException as failure:
            if failure.status != 422 or (manifest["apiVersion"], manifest["kind"]) not in REPLACED_WHEN_IMMUTABLE:
                raise
        self.delete(object_path(manifest))
        return self.create(manifest)

    def create(self, manifest: Mapping[str, Any]) -> Any:
        meta = manifest["metadata"]
        path = collection_path(manifest["apiVersion"], manifest["kind"], meta.get("namespace"))
        return self._call("POST", path, body=dict(manifest), query=[("fieldManager", FIELD_MANAGER)])

    def strategic_patch(self, path: str, patch: Mapping[str, Any]) -> Any:
        return self._call("PATCH", path, body=dict(patch), content_type="application/strategic-merge-patch+json")

    def merge_patch(self, path: str, patch: Mapping[str, Any]) -> Any:
        return self._call("PATCH", path, body=dict(patch), content_type="application/merge-patch+json")

    def get(self, path: str) -> Any | None:
        try:
            return self._call("GET", path)
        except ApiException as failure:
            if failure.status == 404:
                return None
            raise

    def list(self, path: str, *, labels: str | None = None, fields: str | None = None) -> list[Any]:
        query = [(key, value) for key, value in (("labelSelector", labels), ("fieldSelector", fields)) if value]
        answer = self._call("GET", path, query=query)
        return list(answer.get("items", [])) if answer else []

    def delete(self, path: str) -> bool:
        try:
            self._call("DELETE", path)
        except ApiException as failure:
            if failure.status == 404:
                return False
            raise
        return True
