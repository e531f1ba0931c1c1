"""A real etcd (built from its Go module, see hack/etcd) for the integration tests, on its own ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gigafab.local import components
from gigafab.local.layout import Layout, Ports
from gigafab.local.processes import Supervisor


@pytest.fixture(scope="session")
def etcd_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    layout = Layout(state=tmp_path_factory.mktemp("etcd"), ports=Ports.shifted(4000))
    supervisor = Supervisor(layout.pids, layout.logs)
    supervisor.start(components.etcd(layout))
    yield layout.ports.etcd_client
    supervisor.stop("etcd")
