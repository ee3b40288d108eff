# SPDX-License-Identifier: MIT
"""Direct clones end to end: controller and bridge in the root namespace, a source and a target node each in
its own network namespace, disks on loop devices, pureboot-agent started the way its unit starts it."""

import json
import re
import subprocess
import time

import pytest

from harness import PUREBOOTCTL, Bridge, run, wait_for
from nodes import (Agent, Loop, Network, ca_fingerprint, check_files, cmdline, make_random_disk, make_source_disk,
                   sh)

DISK = 256 << 20


@pytest.fixture
def network():
    with Network() as net:
        yield net


@pytest.fixture
def bridge_on_network(controller, tmp_path, network):
    b = Bridge(controller.bus, tmp_path, address=network.address).start()
    yield b
    b.stop()


@pytest.fixture
def disks(tmp_path):
    made = []

    def source():
        loop, files = make_source_disk(tmp_path)
        made.append(loop)
        return loop, files

    def random(name, size=DISK):
        loop = make_random_disk(tmp_path, name, size)
        made.append(loop)
        return loop
    yield type("Disks", (), {"source": staticmethod(source), "random": staticmethod(random)})
    for loop in made:
        loop.detach()


class Clone:
    """One session between two simulated nodes, with their agents."""

    def __init__(self, tmp_path, ctl, api, network, bridge, source_dev, target_dev, source_args=(), target_args=()):
        self.ctl, self.api = ctl, api
        self.tmp = tmp_path
        api.node("src-node", "aa:bb:cc:00:10:01")
        api.node("tgt-node", "aa:bb:cc:00:10:02")
        r = ctl("clone", "create", "--name=e2e", "--mode=direct", "--source=src-node", "--target=tgt-node",
                f"--source-device={source_dev}", f"--target-device={target_dev}", check=True)
        self.id = r.stdout.strip().split()[-1]
        ctl("clone", "start", self.id, check=True)
        self.path = f"/org/pureboot/Controller1/clone/{self.id}"
        fingerprint = ca_fingerprint(bridge.ca)
        self.agents = {}
        for role, dev, args in (("source", source_dev, source_args), ("target", target_dev, target_args)):
            ns, _ = network.node(role[:3])
            token = ctl("clone", "token", self.id, f"--role={role}", check=True).stdout.strip()
            node = "src-node" if role == "source" else "tgt-node"
            self.agents[role] = Agent(tmp_path, role, ns,
                                      cmdline(f"clone_{role}_direct", self.id, node, bridge.url, token, fingerprint,
                                              dev), *args)

    @property
    def source(self):
        return self.agents["source"]

    @property
    def target(self):
        return self.agents["target"]

    def prop(self, name):
        return self.api.prop(self.path, "CloneSession", name)

    def status(self):
        return self.prop("Status")

    def wait_status(self, *statuses, timeout=120):
        wait_for(lambda: self.status() in statuses, timeout=timeout,
                 what=f"session {self.id} to become {'/'.join(statuses)} (is {self.status()}); source:\n"
                      f"{self.source.text()[-3000:]}\ntarget:\n{self.target.text()[-3000:]}")

    def stop(self):
        for a in self.agents.values():
            a.stop()


@pytest.fixture
def clone_of(tmp_path, ctl, api, network, bridge_on_network):
    made = []

    def make(source_dev, target_dev, **kw):
        c = Clone(tmp_path, ctl, api, network, bridge_on_network, source_dev, target_dev, **kw)
        made.append(c)
        return c
    yield make
    for c in made:
        c.stop()


def test_direct_clone_end_to_end(clone_of, disks, ctl, tmp_path, system_bus):
    source, files = disks.source()
    target = disks.random("target")
    c = clone_of(source.device, target.device)
    c.source.start()
    c.target.start()
    follow = subprocess.run([str(PUREBOOTCTL), "--no-pager", "clone", "status", "--follow", c.id],
                            env=system_bus.env, capture_output=True, text=True, timeout=90)
    assert c.target.wait(60) == 0, c.target.text()
    assert c.source.wait(60) == 0, c.source.text()
    assert c.status() == "completed", c.prop("Error")
    assert follow.returncode == 0, follow.stderr
    assert "completed" in follow.stdout
    sh("cmp", source.device, target.device)
    check_files(target, files, tmp_path)
    assert c.prop("SourceDigest").startswith("xxh3-128:")
    assert c.prop("SourceDigest") == c.prop("TargetDigest")
