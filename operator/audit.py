"""Events and structured log lines: the trail of every decision the operator makes.

kopf's own per-handler events are switched off (they say nothing a user needs);
these explicit ones say what was decided and why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import kopf

log = logging.getLogger("gigafab.audit")


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


def normal(obj: Mapping[str, Any], reason: str, message: str) -> None:
    log.info(_line("Normal", obj, reason, message))
    kopf.event(obj, type="Normal", reason=reason, message=message)  # type: ignore[arg-type]


def warning(obj: Mapping[str, Any], reason: str, message: str) -> None:
    log.warning(_line("Warning", obj, reason, message))
    kopf.event(obj, type="Warning", reason=reason, message=message)  # type: ignore[arg-type]
