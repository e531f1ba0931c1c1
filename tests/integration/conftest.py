"""A real etcd (built from its Go module, see hack/etcd) for the integration tests, on its own ports.

The ports are shifted by 4000; ``GIGAFAB_INTEGRATION_PORT_OFFSET`` moves them elsewhere, so two
sessions can run side by side.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from gigafab.local import components
from gigafab.local.layout import Layout, Ports
from gigafab.local.processes import Supervisor


@pytest.fixture(scope="session")
def etcd_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    offset = int(os.environ.get("GIGAFAB_INTEGRATION_PORT_OFFSET", "4000"))
    layout = Layout(state=tmp_path_factory.mktemp("etcd"), ports=Ports.shifted(offset))
    supervisor = Supervisor(layout.pids, layout.logs)
    supervisor.start(components.etcd(layout))
    yield layout.ports.etcd_client
    supervisor.stop("etcd")
