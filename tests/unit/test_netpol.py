"""Reading the NetworkPolicy analyzer's answer (np-guard's k8snetpolicy), without running it."""

from __future__ import annotations

import json
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from gigafab.local.layout import Layout
from gigafab.local.netpol import (
    Addresses,
    AnalyzerError,
    Connection,
    PortRange,
    Workload,
    analyse,
    ipv6_blocks,
    parse_connections,
    parse_peer,
    parse_ports,
    run_analyzer,
    write_objects,
)

# as k8snetpolicy v1.4.4 prints it for two namespaces of one tenant, a DNS pod and an EU store
ANSWER = json.dumps(
    [
        {"src": "0.0.0.0-255.255.255.255", "dst": "kube-system/coredns[Pod]", "conn": "All Connections"},
        {"src": "clinic-a/worker[Pod]", "dst": "192.0.2.0-192.0.2.127", "conn": "TCP 443"},
        {"src": "clinic-a/worker[Pod]", "dst": "clinic-b/worker[Pod]", "conn": "All Connections"},
        {"src": "clinic-a/worker[Pod]", "dst": "kube-system/coredns[Pod]", "conn": "TCP 53,UDP 53"},
        {"src": "clinic-b/worker[Pod]", "dst": "10.0.0.5-10.0.0.5", "conn": "SCTP 9,TCP 80,8000-8100"},
    ]
)


def test_the_answer_becomes_typed_connections() -> None:
    internet, store, sibling, dns, ranges = parse_connections(ANSWER)
    assert internet.src == parse_peer("0.0.0.0-255.255.255.255")
    assert internet.everything
    assert internet.dst == Workload("kube-system", "coredns")
    assert store.dst == parse_peer("192.0.2.0-192.0.2.127")
    assert store.ports == (PortRange("TCP", 443, 443),)
    assert sibling.src == Workload("clinic-a", "worker")
    assert sibling.everything
    assert dns.ports == (PortRange("TCP", 53, 53), PortRange("UDP", 53, 53))
    assert ranges.ports == (PortRange("SCTP", 9, 9), PortRange("TCP", 80, 80), PortRange("TCP", 8000, 8100))


def addresses(text: str) -> Addresses:
    peer = parse_peer(text)
    assert isinstance(peer, Addresses)
    return peer


def test_address_ranges_become_the_fewest_networks() -> None:
    whole = addresses("0.0.0.0-255.255.255.255")
    assert str(whole) == "0.0.0.0/0"
    assert whole.everywhere
    odd = addresses("192.0.2.1-192.0.2.6,192.0.2.7-192.0.2.7")
    assert str(odd) == "192.0.2.1/32,192.0.2.2/31,192.0.2.4/30"


def test_addresses_within_cidrs_counting_adjacent_ones_together() -> None:
    store = addresses("192.0.2.0-192.0.2.255")
    assert store.within(["192.0.2.0/25", "192.0.2.128/25"])
    assert not store.within(["192.0.2.0/25"])
    assert not store.within([])
    assert store.overlaps("192.0.2.200/32")
    assert not store.overlaps(IPv4Network("198.51.100.0/24"))


def test_a_connection_allows_its_ports_only() -> None:
    dns = Connection(Workload("a", "p"), Workload("kube-system", "dns"), (PortRange("TCP", 53, 53), PortRange("UDP", 53, 53)))
    assert dns.allows("UDP", 53)
    assert dns.allows("TCP", 53)
    assert not dns.allows("TCP", 54)
    assert not dns.allows("SCTP", 53)
    assert dns.only([PortRange("UDP", 53, 53), PortRange("TCP", 1, 1024)])
    assert not dns.only([PortRange("UDP", 53, 53)])


def test_all_connections_is_never_only_some_ports() -> None:
    ports, everything = parse_ports("All Connections")
    anything = Connection(Workload("a", "p"), Workload("b", "q"), ports, everything)
    assert anything.allows("SCTP", 1)
    assert anything.allows("UDP", 65535)
    assert not anything.only([PortRange(protocol) for protocol in ("SCTP", "TCP", "UDP")])
    assert str(anything) == "a/p => b/q : All Connections"


@pytest.mark.parametrize(
    "answer",
    [
        "not json",
        '{"src": "a/p[Pod]"}',
        '[{"src": "a/p[Pod]", "dst": "b/q[Pod]"}]',
        '[{"src": "a/p[Pod]", "dst": "b/q[Pod]", "conn": "ICMP 8"}]',
        '[{"src": "a/p[Pod]", "dst": "b/q[Pod]", "conn": "TCP many"}]',
        '[{"src": "{ingress-controller}", "dst": "b/q[Pod]", "conn": "TCP 80"}]',
        '[{"src": "2001:db8::-2001:db8::1", "dst": "b/q[Pod]", "conn": "TCP 80"}]',
    ],
)
def test_an_answer_not_understood_is_an_error(answer: str) -> None:
    with pytest.raises(AnalyzerError):
        parse_connections(answer)


def test_ipv6_blocks_are_found_and_refused_before_analysis(tmp_path: Path) -> None:
    policy = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "boundary", "namespace": "a"},
        "spec": {"egress": [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}, {"ipBlock": {"cidr": "2001:db8::/32"}}]}]},
    }
    assert ipv6_blocks([policy, {"kind": "Namespace", "metadata": {"name": "a"}}]) == ["2001:db8::/32"]
    with pytest.raises(AnalyzerError, match="IPv6"):
        analyse([policy], layout=Layout(state=tmp_path, cache=tmp_path))


def test_objects_are_written_one_file_each_named_after_them(tmp_path: Path) -> None:
    objects = [{"kind": "Namespace", "metadata": {"name": "a"}}, {"kind": "Pod", "metadata": {"name": "p", "namespace": "a"}}]
    written = write_objects(objects, tmp_path / "input")
    assert [path.name for path in written] == ["0000-Namespace-a.json", "0001-Pod-a-p.json"]
    assert json.loads(written[1].read_text()) == objects[1]


def _fake_analyzer(tmp_path: Path, stdout: str, stderr: str = "", code: int = 0) -> Path:
    script = tmp_path / "k8snetpolicy"
    script.write_text(f"#!/bin/sh\nprintf '%s' '{stdout}'\nprintf '%s' '{stderr}' >&2\nexit {code}\n")
    script.chmod(0o755)
    return script


def test_the_analyzer_answer_is_read_when_it_logs_nothing(tmp_path: Path) -> None:
    binary = _fake_analyzer(tmp_path, '[{"src": "a/p[Pod]", "dst": "b/q[Pod]", "conn": "TCP 80"}]')
    assert run_analyzer(tmp_path, binary) == [Connection(Workload("a", "p"), Workload("b", "q"), (PortRange("TCP", 80, 80),))]


@pytest.mark.parametrize(
    ("stderr", "code"), [("error reading file: error parsing x.json", 0), ("", 1), ("Error getting resourceInfos", 0)]
)
def test_anything_the_analyzer_logs_or_a_failure_is_an_error(tmp_path: Path, stderr: str, code: int) -> None:
    binary = _fake_analyzer(tmp_path, "[]", stderr, code)
    with pytest.raises(AnalyzerError, match="k8snetpolicy"):
        run_analyzer(tmp_path, binary)


def test_analyse_runs_the_cached_analyzer_on_a_fresh_folder_only(tmp_path: Path) -> None:
    layout = Layout(state=tmp_path, cache=tmp_path)
    layout.netpol_analyzer_bin.mkdir(parents=True)
    _fake_analyzer(layout.netpol_analyzer_bin, '[{"src": "a/p[Pod]", "dst": "b/q[Pod]", "conn": "UDP 53"}]')
    objects = [{"kind": "Namespace", "metadata": {"name": "a"}}]
    (connection,) = analyse(objects, folder=tmp_path / "input", layout=layout)
    assert connection.allows("UDP", 53)
    assert (tmp_path / "input" / "0000-Namespace-a.json").exists()
    with pytest.raises(AnalyzerError, match="not empty"):
        analyse(objects, folder=tmp_path / "input", layout=layout)


def test_a_missing_analyzer_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(AnalyzerError, match="gigafab local build"):
        analyse([], layout=Layout(state=tmp_path, cache=tmp_path))
