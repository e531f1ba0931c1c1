"""The local plane's own pieces, without a cluster: processes, ports, certificates, toolchain."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from gigafab.local import toolchain
from gigafab.local.layout import Layout, Ports
from gigafab.local.nodes import DELETE_AFTER_ANNOTATION, kwok_stage_file
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


def test_cutting_an_unknown_site_or_one_without_a_namespace_is_refused_and_touches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gigafab.cli import main

    monkeypatch.setenv("GIGAFAB_STATE", str(tmp_path))
    monkeypatch.setenv("GIGAFAB_PORT_OFFSET", "7000")  # no plane runs there: no namespace exists
    assert main(["local", "cut", "atlantis"]) == 2
    assert "no site 'atlantis' in the local plane; sites: niemeyer, de-halm, eemshaven" in capsys.readouterr().err
    assert main(["local", "restore", "niemeyer"]) == 1
    assert "only a site whose health plane runs in a network namespace can be cut" in capsys.readouterr().err


def test_each_site_of_each_plane_gets_its_own_namespace_link_names_and_addresses() -> None:
    from gigafab.local.sitenet import site_net

    local, tests = site_net("niemeyer", 20900), site_net("niemeyer", 21900)
    assert (local.namespace, local.host_link, local.inner_link) == ("gigafab-20900", "gf20900h", "gf20900n")
    assert all(len(name) <= 15 for name in (local.host_link, local.inner_link)), "Linux interface names"
    assert (local.host_ip, local.inner_ip) == ("10.81.164.1", "10.81.164.2")
    assert tests.host_ip != local.host_ip
    assert site_net("de-halm", 20901).host_ip != local.host_ip


def test_kwoks_stages_delete_a_pod_at_once_or_after_its_annotation_never_both(tmp_path: Path) -> None:
    """kwok plays one stage at random among those whose selectors match: a deleting pod must match exactly one."""
    stages = list(yaml.safe_load_all(kwok_stage_file(tmp_path / "stages.yaml").read_text()))
    deleting = [
        s
        for s in stages
        if {"key": ".metadata.deletionTimestamp", "operator": "Exists"} in s["spec"]["selector"]["matchExpressions"]
    ]
    by_name = {s["metadata"]["name"]: s["spec"]["selector"]["matchExpressions"] for s in deleting}
    annotation = f'.metadata.annotations["{DELETE_AFTER_ANNOTATION}"]'
    assert by_name == {
        "pod-delete": [
            {"key": ".metadata.deletionTimestamp", "operator": "Exists"},
            {"key": annotation, "operator": "DoesNotExist"},
        ],
        "pod-delete-after": [
            {"key": ".metadata.deletionTimestamp", "operator": "Exists"},
            {"key": annotation, "operator": "Exists"},
        ],
    }
    assert {"node-initialize", "pod-ready", "pod-complete"} <= {s["metadata"]["name"] for s in stages}
