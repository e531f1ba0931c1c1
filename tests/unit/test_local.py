"""The local plane's own pieces, without a cluster: processes, ports, certificates, toolchain."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from gigafab.local import toolchain
from gigafab.local.layout import Layout, Ports
from gigafab.local.pki import APISERVER_NAMES, Authority, ClientIdentity
from gigafab.local.processes import Component, PlaneError, Supervisor, port_in_use


def test_port_in_use_sees_a_listener() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert port_in_use(listener.getsockname()[1])


def test_supervisor_starts_finds_and_stops_a_process(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "pids", tmp_path / "logs")
    sleeper = Component("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], lambda: True)
    pid = supervisor.start(sleeper)
    assert supervisor.start(sleeper) == pid
    assert supervisor.running() == {"sleeper": pid}
    assert supervisor.stop("sleeper")
    assert supervisor.running() == {}
    assert not supervisor.stop("sleeper")


def test_a_program_that_dies_while_starting_is_reported_with_its_log(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "pids", tmp_path / "logs")
    failing = Component("broken", [sys.executable, "-c", "import sys; print('bad flag'); sys.exit(3)"], lambda: False)
    with pytest.raises(PlaneError, match=r"exited with code 3(.|\n)*bad flag"):
        supervisor.start(failing)


def test_a_recycled_pid_is_not_taken_for_ours(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "pids", tmp_path / "logs")
    (tmp_path / "pids").mkdir()
    (tmp_path / "pids" / "etcd.pid").write_text("1\n/some/other/etcd")
    assert supervisor.pid_of("etcd") is None


def test_client_certificates_carry_user_and_groups(tmp_path: Path) -> None:
    authority = Authority(tmp_path)
    authority.ensure()
    pair = authority.issue_client(ClientIdentity("admin", "gigafab-admin", ("system:masters",)))
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gigafab-admin"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    serving = x509.load_pem_x509_certificate(authority.issue_server("apiserver", APISERVER_NAMES).cert.read_bytes())
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes.default.svc" in names.get_values_for_type(x509.DNSName)
    assert oct(pair.key.stat().st_mode)[-3:] == "600"


def test_missing_go_gives_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    layout = Layout(state=tmp_path / "state", cache=tmp_path / "cache")
    with pytest.raises(PlaneError, match="Install Go"):
        toolchain.ensure_binaries(layout)


def test_shifted_ports_move_every_port() -> None:
    base, shifted = Ports().all(), Ports.shifted(100).all()
    assert all(shifted[name] == port + 100 for name, port in base.items())
    assert len(set(base.values())) == len(base)
