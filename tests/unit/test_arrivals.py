"""How long a gateway has had connections waiting for it (agents/arrivals.py)."""

from __future__ import annotations

from collections.abc import Callable

from gigafab.agents.arrivals import Arrivals


def clock_at(moments: list[float]) -> Callable[[], float]:
    """A clock that reads the last of ``moments`` (append to move it on)."""
    return lambda: moments[-1]


def test_connections_wait_from_the_first_handshake_until_every_one_has_its_stream() -> None:
    moments = [0.0]
    arrivals = Arrivals(forget_after=30.0, clock=clock_at(moments))
    assert arrivals.waiting(0.0) == 0.0
    for at in (1.0, 1.5, 2.0):
        moments.append(at)
        arrivals.connecting()
    arrivals.taken()
    assert arrivals.waiting(5.0) == 4.0, "since the first began: the oldest still waiting may be any of them"
    arrivals.taken()
    assert arrivals.waiting(9.0) == 8.0
    arrivals.taken()
    assert arrivals.waiting(9.5) == 0.0
    moments.append(10.0)
    arrivals.connecting()
    assert arrivals.waiting(10.5) == 0.5, "a new wait starts with the next connection"


def test_a_connection_that_never_opens_a_stream_is_forgotten_and_bounds_the_wait() -> None:
    moments = [0.0]
    arrivals = Arrivals(forget_after=10.0, clock=clock_at(moments))
    arrivals.connecting()  # a failed handshake at 0
    assert arrivals.waiting(8.0) == 8.0
    moments.append(9.0)
    arrivals.connecting()  # and another at 9: the wait goes on, but no longer than forget_after
    assert arrivals.waiting(15.0) == 10.0
    assert arrivals.pending == 1
    assert arrivals.waiting(19.5) == 0.0
    assert arrivals.pending == 0


def test_a_stream_without_a_counted_connection_counts_nothing() -> None:
    arrivals = Arrivals(forget_after=10.0, clock=clock_at([0.0]))
    arrivals.taken()
    assert (arrivals.pending, arrivals.waiting(1.0)) == (0, 0.0)
