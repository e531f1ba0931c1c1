"""``gigafab local``: idempotent up, clear refusals, and a down that leaves nothing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from gigafab.local.layout import Layout, Ports
from gigafab.local.plane import Options, Plane
from gigafab.local.processes import PlaneError, port_in_use


def test_up_again_keeps_what_runs(kubectl: object, plane: Plane) -> None:
    before = plane.supervisor.running()
    plane.up(Options(nodes_per_site=2, gpus_per_node=8))
    assert plane.supervisor.running() == before


def test_taken_port_is_refused_and_nothing_starts(tmp_path: Path) -> None:
    layout = Layout(state=tmp_path / "state", ports=Ports.shifted(2000))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", layout.ports.apiserver))
        squatter.listen()
        with pytest.raises(PlaneError, match=f"{layout.ports.apiserver} \\(kube-apiserver\\)"):
            Plane(layout).up(Options(operator=False, samples=False))
    assert Plane(layout).supervisor.running() == {}
    assert not any(port_in_use(port) for port in layout.ports.all().values())


def test_second_plane_starts_and_down_leaves_no_process_or_port(tmp_path: Path) -> None:
    layout = Layout(state=tmp_path / "state", ports=Ports.shifted(3000))
    second = Plane(layout)
    second.up(Options(nodes_per_site=1, gpus_per_node=4, operator=False, samples=False, health=False))
    running = second.supervisor.running()
    try:
        assert set(running) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kueue", "kwok"}
        assert all(row["running"] for name, row in second.status().items() if name in running)
    finally:
        stopped = second.down()  # even when an assertion fails: nothing may outlive the test
    assert set(stopped) == set(running)
    assert second.supervisor.running() == {}
    for pid in running.values():
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(") ")[1][:1]
    assert not any(port_in_use(port) for port in layout.ports.all().values())
