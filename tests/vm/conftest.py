# SPDX-License-Identifier: MIT
"""The VM suite uses the integration suite's fixtures (private system bus, purebootctl, busctl) and runs in a
pytest of its own, so only one private bus lives at a time. Its controller runs in the fleet's network
namespace, where the bridge server, dnsmasq, the VMs and any storage server are: nothing leaves it."""
import importlib.util
import sys
from pathlib import Path

_integration = Path(__file__).resolve().parents[1] / "integration"
sys.path.insert(0, str(_integration))
_spec = importlib.util.spec_from_file_location("integration_conftest", _integration / "conftest.py")
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)

api, busctl, ctl, system_bus = _fixtures.api, _fixtures.busctl, _fixtures.ctl, _fixtures.system_bus
pytest_runtest_makereport = _fixtures.pytest_runtest_makereport

import pytest  # noqa: E402

from harness import Controller  # noqa: E402
from nodes import Network  # noqa: E402
from vm import Fleet  # noqa: E402


@pytest.fixture
def network():
    """The fleet's network: a namespace of the test's own with a Linux bridge in it."""
    with Network(index=9, isolated=True) as net:
        yield net


@pytest.fixture
def controller(system_bus, tmp_path, network):
    c = Controller(system_bus, tmp_path)
    c.netns = network.ns
    c.start()
    yield c
    c.stop()  # checks it ended as it should


@pytest.fixture
def fleet(controller, network, tmp_path):
    with Fleet(controller, network, tmp_path) as f:
        yield f
