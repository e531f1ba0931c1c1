"""Events and structured log lines: the trail of every decision the operator makes.

Events are written as core/v1 Events. For a cluster-scoped object (Site, Tenant,
EgressDestination) the Event lives in ``default`` and its ``involvedObject`` has no
namespace, as Kubernetes does for Nodes, so ``kubectl describe`` finds it. kopf's
own per-handler events are switched off: they say nothing a user needs.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Mapping
from typing import Any

from gigafab.operator.conditions import now_rfc3339
from gigafab.operator.state import Client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("gigafab.audit")
COMPONENT = "gigafab-operator"
INSTANCE = socket.gethostname()


def _line(kind: str, obj: Mapping[str, Any], reason: str, message: str) -> str:
    meta = obj.get("metadata") or {}
    return json.dumps(
        {
            "event": kind,
            "kind": obj.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "reason": reason,
            "message": message,
        }
    )


def event_for(obj: Mapping[str, Any], kind: str, reason: str, message: str) -> dict[str, Any]:
    """The core/v1 Event that records a decision about ``obj``."""
    meta = obj.get("metadata") or {}
    involved = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": meta.get("name"), "uid": meta.get("uid")}
    if meta.get("namespace"):
        involved["namespace"] = meta["namespace"]
    now = now_rfc3339()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta.get("namespace") or "default"},
        "involvedObject": involved,
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": INSTANCE,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def _post(obj: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
    try:
        Client.get().create(event_for(obj, kind, reason, message))
    except ApiException as failure:  # an event lost must not fail the decision it records
        log.warning("could not post event %s on %s: %s", reason, (obj.get("metadata") or {}).get("name"), failure.status)


def normal(obj: Mapping[str, Any], reason: str, message: str) -> None:
    log.info(_line("Normal", obj, reason, message))
    _post(obj, "Normal", reason, message)


def warning(obj: Mapping[str, Any], reason: str, message: str) -> None:
    log.warning(_line("Warning", obj, reason, message))
    _post(obj, "Warning", reason, message)


def verdict(obj: Mapping[str, Any], good: bool, *, reason: str, message: str) -> None:
    """A Normal event for a good outcome, a Warning for a bad one."""
    (normal if good else warning)(obj, reason, message)
