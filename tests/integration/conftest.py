# SPDX-License-Identifier: MIT
"""pytest fixtures over harness.py: one private system bus with polkitd per run, a fresh controller per
test, and helpers to call it through busctl and purebootctl."""

import json
import subprocess

import pytest

from browser import Browser, CockpitWs, screenshots_dir
from harness import DEST, PUREBOOTCTL, REPO, ROOT, TEST_USER, Bridge, Controller, private_system_bus, run


_failed = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Once a test's fixtures are all torn down, its directory goes if every phase passed: loop files, disk
    images and servers' exports add up to tens of gigabytes over a run. A failed test's directory stays with
    its logs, the artefact to read."""
    report = (yield).get_result()
    failed = item.stash.get(_failed, False) or report.failed
    item.stash[_failed] = failed
    path = (item.funcargs or {}).get("tmp_path")
    if call.when == "teardown" and not failed and path is not None:
        # Never across a mount point a teardown left behind: that would be a server's or the host's files.
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], stderr=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def system_bus():
    with private_system_bus() as bus:
        yield bus


@pytest.fixture
def loops():
    """The Loops a test makes (nodes.Loop), detached when it ends, however it ends."""
    made = []
    yield made
    for loop in made:
        loop.detach()


@pytest.fixture
def bridge(controller, tmp_path):
    """pureboot-bridge in front of the controller, as its own user on a loopback port."""
    b = Bridge(controller.bus, tmp_path).start()
    yield b
    b.stop()  # checks it ended as it should


@pytest.fixture
def controller(system_bus, tmp_path):
    c = Controller(system_bus, tmp_path).start()
    yield c
    # A clean exit on SIGTERM (under ASan, no leak report either), and no death during the test.
    c.stop()


@pytest.fixture
def busctl(system_bus):
    """busctl --system call/get-property…: returns the CompletedProcess."""
    def call(*args, user=None, check=False):
        r = run(["busctl", "--system", *args], system_bus, user=user)
        if check and r.returncode != 0:
            raise AssertionError(f"busctl {' '.join(map(str, args))} failed: {r.stderr}")
        return r
    return call


@pytest.fixture
def ctl(system_bus):
    """purebootctl …: returns the CompletedProcess."""
    def call(*args, user=None, check=False, stdin=None):
        r = run([PUREBOOTCTL, "--no-pager", *args], system_bus, user=user, stdin=stdin)
        if check and r.returncode != 0:
            raise AssertionError(f"purebootctl {' '.join(map(str, args))} failed ({r.returncode}): {r.stderr}")
        return r
    return call


@pytest.fixture
def network():
    """A Linux bridge for simulated nodes (nodes.py), each in a network namespace of its own."""
    from nodes import Network
    with Network() as net:
        yield net


@pytest.fixture
def bridge_on_network(controller, tmp_path, network):
    """pureboot-bridge listening on the nodes' bridge."""
    b = Bridge(controller.bus, tmp_path, address=network.address).start()
    yield b
    b.stop()  # checks it ended as it should


@pytest.fixture
def gateway(busctl):
    """A node call as pureboot-bridge passes it on: (varlink error, "" on success; reply parameters)."""
    def call(method, peer="", params=None, address="127.0.0.1", user="pureboot-bridge"):
        r = busctl("--json=short", "call", DEST, ROOT, f"{DEST}.Gateway", "Call", "ssss", method, peer, address,
                   json.dumps(params or {}), user=user)
        assert r.returncode == 0, r.stderr
        error, reply = json.loads(r.stdout)["data"]
        return error, json.loads(reply)
    return call


def busctl_json(busctl, *args, user=None):
    r = busctl("--json=short", *args, user=user, check=True)
    return json.loads(r.stdout)


@pytest.fixture
def api(busctl):
    """Small wrappers over busctl for the common calls, returning parsed JSON."""
    class Api:
        def call(self, path, iface, method, sig="", *args, user=None):
            return busctl("--json=short", "call", DEST, path, f"{DEST}.{iface}", method, sig, *args, user=user)

        def ok(self, path, iface, method, sig="", *args, user=None):
            r = self.call(path, iface, method, sig, *args, user=user)
            assert r.returncode == 0, f"{method} failed: {r.stderr}"
            return json.loads(r.stdout)["data"] if r.stdout.strip() else None

        def prop(self, path, iface, name, user=None):
            return busctl_json(busctl, "get-property", DEST, path, f"{DEST}.{iface}", name, user=user)["data"]

        def node(self, hostname, mac, arch="x86_64"):
            return self.ok(ROOT, "Manager", "RegisterNode", "sssa{sv}", hostname, mac, arch, "0")[0]

        def session(self, name="s", mode="direct", source="web-01", target="web-02", sdev="/dev/sda",
                    tdev="/dev/sdb", *options):
            opts = [str(len(options) // 3), *options] if options else ["0"]
            return self.ok(ROOT, "Manager", "CreateCloneSession", "ssssssa{sv}", name, mode, source, target, sdev,
                           tdev, *opts)[0]
    return Api()


OPERATORS = "pureboot-operators"


def readme_rules():
    """The polkit rules the README gives a desktop group, as they are written there."""
    import re
    rules = re.findall(r"```js\n(// .*?pureboot-operators.*?)```", (REPO / "README.md").read_text(), re.S)
    assert rules, "the README shows no polkit rule for the pureboot-operators group"
    return "\n".join(rules)


@pytest.fixture
def operators():
    """The README's rules installed, and the test user in their group; all taken away again."""
    from harness import POLKIT_RULES
    added_group = subprocess.run(["getent", "group", OPERATORS], capture_output=True).returncode != 0
    if added_group:
        subprocess.run(["groupadd", "--system", OPERATORS], check=True)
    subprocess.run(["gpasswd", "-a", TEST_USER, OPERATORS], check=True, capture_output=True)
    rule = POLKIT_RULES / "49-pureboot-operators-test.rules"
    rule.write_text(readme_rules())
    rule.chmod(0o644)
    try:
        yield
    finally:
        rule.unlink(missing_ok=True)
        subprocess.run(["gpasswd", "-d", TEST_USER, OPERATORS], capture_output=True)
        if added_group:
            subprocess.run(["groupdel", OPERATORS], capture_output=True)


@pytest.fixture
def cockpit(system_bus, tmp_path):
    """cockpit_ws(): a cockpit-ws for the test user, stopped (with its bridge) when the test ends."""
    made = []

    def start(user=TEST_USER):
        ws = CockpitWs(system_bus, user, tmp_path / f"cockpit-ws-{len(made)}.log")
        made.append(ws)
        return ws.start()
    yield start
    for ws in made:
        ws.stop()


@pytest.fixture
def browser(tmp_path):
    b = Browser(screenshots_dir(tmp_path))
    yield b
    b.quit()
