"""Fault injection into running simulated agents: a small HTTP endpoint on loopback.

``POST /faults`` with JSON ``{"node": …, "fault": "xid", "gpu": 0, "xid": 79}``
injects a fault into that node's simulated backend and makes its agent report at
once. ``gigafab fault inject`` is the client.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from gigafab.agents.agent import Agent
from gigafab.agents.simulated import Fault, SimulatedBackend


class FaultControl:
    """Serves fault injection for the agents of one process."""

    def __init__(self, agents: Mapping[str, Agent]) -> None:
        self.agents = agents

    def apply(self, order: Mapping[str, Any]) -> tuple[int, str]:
        agent = self.agents.get(str(order.get("node")))
        if agent is None:
            return 404, f"no agent for node {order.get('node')!r} here; nodes: {', '.join(sorted(self.agents))}"
        backend = agent.backend
        if not isinstance(backend, SimulatedBackend):
            return 400, f"{agent.node} reads real GPUs; faults go only into simulated ones"
        try:
            fault = Fault(str(order.get("fault")))
            backend.inject(fault, gpu=int(order.get("gpu", 0)), xid=int(order.get("xid", 79)))
        except (ValueError, IndexError) as wrong:
            return 400, f"cannot inject {order}: {wrong}"
        agent.poke()
        return 200, f"{fault} injected into {agent.node}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
            )
            body = await reader.readexactly(min(length, 4096))
            status, message = self.apply(json.loads(body or b"{}"))
        except (ValueError, asyncio.IncompleteReadError) as broken:
            status, message = 400, f"bad request: {broken}"
        payload = json.dumps({"message": message}).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + payload
        )
        await writer.drain()
        writer.close()

    async def serve(self, port: int, host: str = "127.0.0.1") -> asyncio.Server:
        return await asyncio.start_server(self.handle, host, port)


def inject(url: str, order: Mapping[str, Any]) -> tuple[int, str]:
    """POST a fault order to an agent process; (HTTP status, message)."""
    import urllib.error  # the client side only: the agent process does not need urllib
    import urllib.request

    if not url.startswith(("http://127.0.0.1:", "http://localhost:", "http://10.")):
        raise ValueError(f"fault control is on loopback or a site namespace of this machine only, not {url}")
    request = urllib.request.Request(  # noqa: S310 - checked above: http on loopback
        f"{url}/faults",
        data=json.dumps(order).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback URL from the plane
            return answer.status, str(json.loads(answer.read())["message"])
    except urllib.error.HTTPError as refused:
        return refused.code, str(json.loads(refused.read())["message"])
