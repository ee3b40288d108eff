# SPDX-License-Identifier: MIT
"""The VM suite uses the integration suite's fixtures (private system bus, controller, bridge, purebootctl)
and runs in a pytest of its own, so only one private bus lives at a time."""
import importlib.util
import sys
from pathlib import Path

_integration = Path(__file__).resolve().parents[1] / "integration"
sys.path.insert(0, str(_integration))
_spec = importlib.util.spec_from_file_location("integration_conftest", _integration / "conftest.py")
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)

api, busctl, controller, ctl, system_bus = (_fixtures.api, _fixtures.busctl, _fixtures.controller, _fixtures.ctl,
                                            _fixtures.system_bus)
