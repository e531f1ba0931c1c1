"""How long a gateway has had new connections waiting for it.

gRPC core accepts a connection and does its TLS handshake in its own threads, but
grpc.aio starts the connection's ``Report`` stream only when the gateway's event loop
takes it, one call at a time per server. When many agents reconnect at once (a
network blip, a restarted gateway) their new streams wait there, for seconds, while
their nodes' last reports grow old. ``Arrivals`` counts connections from the start of
their handshake (the server credentials' certificate fetcher runs then, in a gRPC core
thread) to the start of a ``Report`` stream, and says for how long there have been
some waiting: the allowance ``Ledger.sweep`` gives to nodes whose stream ended.

Connections that never open a stream (a failed handshake, a probe) are forgotten
after ``forget_after`` seconds, which also bounds the allowance: whoever can open TCP
connections to the gateway can delay, by at most that much, the Silent of a node whose
agent closed its connection, never that of a node that fell quiet on an open one.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable


class Arrivals:
    """Connections whose handshake began and whose stream the gateway has not started yet."""

    def __init__(self, forget_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.forget_after = forget_after
        self.clock = clock
        self._pending: collections.deque[float] = collections.deque()
        self._since: float | None = None
        """When connections began to wait (since then, some always did)."""

    def connecting(self) -> None:
        """A connection's handshake begins (called from a gRPC core thread: deque operations are atomic)."""
        now = self.clock()
        if not self._pending:
            self._since = now
        self._pending.append(now)

    def taken(self) -> None:
        """A ``Report`` stream started: one connection less is waiting."""
        if self._pending:
            self._pending.popleft()

    def waiting(self, now: float) -> float:
        """Seconds connections have been waiting, without a break, at ``now`` (0: none wait)."""
        while self._pending and now - self._pending[0] > self.forget_after:
            self._pending.popleft()
        if not self._pending:
            self._since = None
            return 0.0
        if self._since is None:  # a connection arrived while the last one was being forgotten
            self._since = self._pending[0]
        return min(now - self._since, self.forget_after)

    @property
    def pending(self) -> int:
        return len(self._pending)
