"""The agent's Prometheus metrics (``gigafab agent --metrics-address HOST:PORT``, path ``/metrics``).

Written out here in the text exposition format rather than with ``prometheus_client``:
that package imports Python's ``ssl`` module (and urllib), which the agent process never
loads (``agents/cli.py``). Three families, one series per node (and stage):

- ``gigafab_agent_fenced``: 1 while the node is fenced;
- ``gigafab_agent_fence_failures_total{stage}``: failures of the fence loop, by what failed:
  ``stop`` (the runtime could not stop the work), ``lift``, ``record`` (the fence could not be
  kept on the host), ``watchdog`` (a pet failed), ``loop`` (anything else). Each is logged,
  and the loop goes on and tries again at its next tick;
- ``gigafab_agent_watchdog_seconds``: how long the last pet holds, 0 while the agent withholds
  it (the watchdog is about to stop the node) or has no watchdog.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

STAGES = ("stop", "lift", "record", "watchdog", "loop")


class AgentMetrics:
    """The metrics of every agent of one process."""

    def __init__(self) -> None:
        self.fenced: dict[str, bool] = {}
        self.failures: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.watchdog: dict[str, float] = {}

    def failed(self, node: str, stage: str) -> None:
        self.failures[node, stage] += 1

    def render(self) -> str:
        lines = [
            "# HELP gigafab_agent_fenced 1 while the node is fenced (its gigafab work stopped).",
            "# TYPE gigafab_agent_fenced gauge",
            *(f'gigafab_agent_fenced{{node="{node}"}} {int(fenced)}' for node, fenced in sorted(self.fenced.items())),
            "# HELP gigafab_agent_fence_failures_total Failures of the fence loop, by stage; each is retried.",
            "# TYPE gigafab_agent_fence_failures_total counter",
            *(
                f'gigafab_agent_fence_failures_total{{node="{node}",stage="{stage}"}} {self.failures[node, stage]}'
                for node in sorted(self.fenced)
                for stage in STAGES
            ),
            "# HELP gigafab_agent_watchdog_seconds How long the watchdog's last pet holds; 0: withheld or none.",
            "# TYPE gigafab_agent_watchdog_seconds gauge",
            *(f'gigafab_agent_watchdog_seconds{{node="{node}"}} {seconds:g}' for node, seconds in sorted(self.watchdog.items())),
        ]
        return "\n".join(lines) + "\n"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            writer.close()
            return
        found = request.split(b" ", 2)[1:2] in ([b"/metrics"], [b"/"])
        body = self.render().encode() if found else b"not found: try /metrics\n"
        writer.write(
            f"HTTP/1.1 {200 if found else 404} {'OK' if found else 'Not Found'}\r\n"
            "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    async def serve(self, address: str) -> asyncio.Server:
        host, port = address.rsplit(":", 1)
        return await asyncio.start_server(self.handle, host.strip("[]"), int(port))
