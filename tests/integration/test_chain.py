# SPDX-License-Identifier: MIT
"""Chains: the targets of a direct session pull from each other in a line — the first from the source, each
one after from the one before it, which forwards what it verified and wrote — so the source sends its disk
once. Each node in its own network namespace, disks on loop devices, agents as their units start them."""

import re
import subprocess
import time

import pytest

from harness import stop_all, wait_for
from nodes import Clone, check_files, make_random_disk, make_source_disk, sh, stream_bytes
from test_clone import another_sessions_target, wire_bytes

DISK = 256 << 20


class Chain:
    """A direct session of a source and n targets (the first made with the session, the others added), none
    started: paths[i] and agents[i] are target i + 1's."""

    def __init__(self, clone, loops, paths, agents):
        self.clone, self.loops, self.paths, self.agents = clone, loops, paths, agents

    def upstream(self, i):
        return self.clone.api.prop(self.paths[i - 1], "CloneTarget", "Upstream")

    def written(self, i):
        return self.clone.api.prop(self.paths[i - 1], "CloneTarget", "BytesTransferred")

    def start_in_order(self):
        """The source, then each target once the one before it forwards: the line as it forms when nodes
        boot one after another."""
        self.clone.source.start()
        for i, agent in enumerate(self.agents, 1):
            if i > 1:
                self.relay_address(i - 1)
                assert self.upstream(i) == i - 1
            agent.start()

    def relay_address(self, i):
        """Where target i forwards, once it does."""
        def said():
            return re.search(r"Forwarding what is written to \S+ on (\S+):(\d+)", self.agents[i - 1].text())
        wait_for(said, timeout=60, what=f"target {i} to forward:\n{self.agents[i - 1].text()[-2000:]}")
        return said().group(1), said().group(2)


@pytest.fixture
def chain(tmp_path, ctl, api, network, bridge_on_network):
    made, loops = [], []

    def make(n, random_source=False, head_rate=None, grown=None):
        """random_source: 256 MiB of random bytes (nothing to skip or compress), else a GPT disk with
        files; head_rate: the first target reads at most that; grown: this target's disk is 1.5 times the
        source's and grows to it."""
        if random_source:
            source, files = make_random_disk(tmp_path, "source", DISK), None
        else:
            source, files = make_source_disk(tmp_path)
        loops.append(source)
        disks = [make_random_disk(tmp_path, f"t{i}", DISK * 3 // 2 if i == grown else DISK) for i in range(1, n + 1)]
        loops.extend(disks)
        c = Clone(tmp_path, ctl, api, network, bridge_on_network, source.device, disks[0].device,
                  target_args=[f"--max-rate={head_rate}"] if head_rate else [])
        made.append(c)
        paths, agents = [f"{c.path}/target/1"], [c.target]
        for i in range(2, n + 1):
            path, agent = c.add_target(disks[i - 1].device, hostname=f"tgt{i}-node", mac=f"aa:bb:cc:00:10:{i + 2:02x}",
                                       resize="grow_target" if i == grown else None)
            paths.append(path)
            agents.append(agent)
        return Chain(c, (source, files, disks), paths, agents)
    yield make
    try:
        stop_all(made)
    finally:
        for loop in loops:
            loop.detach()


def finish(ch, timeout=180):
    c = ch.clone
    c.wait_status("completed", "failed", timeout=timeout)
    texts = "\n".join(f"target {i}:\n{a.text()[-2500:]}" for i, a in enumerate(ch.agents, 1))
    assert c.status() == "completed", (c.prop("Error"), texts)
    for a in (c.source, *ch.agents):
        assert a.wait(90) == 0, a.text()[-3000:]
    digest = c.prop("SourceDigest")
    for path in ch.paths:
        assert c.api.prop(path, "CloneTarget", "Digest") == digest


def test_four_targets_in_a_chain(chain, tmp_path):
    """Four targets, the third on a disk half as large again that grows: each forwards to the next, the
    source sends its disk once, and every target's filesystems check clean with every file intact."""
    ch = chain(4, grown=3)
    ch.start_in_order()
    finish(ch)
    c = ch.clone
    source, files, disks = ch.loops
    for i, disk in enumerate(disks, 1):
        if i != 3:
            sh("cmp", source.device, disk.device)
        check_files(disk, files, tmp_path)
    for i in (2, 3, 4):
        assert "Now pulling from" not in ch.agents[i - 1].text(), ch.agents[i - 1].text()[-2000:]
    for i in (1, 2, 3):
        text = ch.agents[i - 1].text()
        assert "A downstream starts at 0 B" in text, text[-2000:]
        assert re.search(r"A downstream's stream ended at 256.0 MiB", text), text[-2000:]
    # What follows the copy (the grown target's resize, identity) waited until the chain after it was done.
    assert "what follows the copy waits until then" in ch.agents[2].text()
    # The source served one stream; its link carried it once (TLS, TCP/IP and reports on top).
    assert len(re.findall(r"A stream ended at", c.source.text())) == 1, c.source.text()[-3000:]
    sent = stream_bytes(c.source)
    assert wire_bytes(c) < sent * 1.1 + (2 << 20), (wire_bytes(c), sent)


def lost_then_relinked(ch, killed, downstream, to):
    """Target `killed` dies mid-stream: its downstream reports it lost and the controller relinks it to `to`
    (0: the source)."""
    wait_for(lambda: ch.written(downstream) > 48 << 20, timeout=90, what="the chain to be under way")
    ch.agents[killed - 1].kill()
    wait_for(lambda: ch.upstream(downstream) == to, timeout=30,
             what=f"target {downstream} to be relinked:\n{ch.agents[downstream - 1].text()[-2000:]}")
    agent = ch.agents[downstream - 1]
    upstream = f"target-{to}" if to else "source"
    wait_for(lambda: f"Now pulling from clone-{ch.clone.id}-{upstream}" in agent.text(), timeout=10,
             what=f"target {downstream} to follow:\n{agent.text()[-2000:]}")
    text = agent.text()
    assert f"Lost clone-{ch.clone.id}-target-{killed}, our upstream in the chain" in text, text[-2000:]


def test_the_middle_target_killed(chain, tmp_path):
    """The middle one of three dies: the last is relinked to the first and resumes from its journal; the
    killed one, started again, rejoins at the tail (pulling from the last) and resumes from its own."""
    ch = chain(3, random_source=True, head_rate="24M")
    ch.start_in_order()
    lost_then_relinked(ch, killed=2, downstream=3, to=1)
    ch.agents[1].start()
    wait_for(lambda: ch.upstream(2) == 3 or ch.clone.api.prop(ch.paths[2], "CloneTarget", "Status") == "completed",
             timeout=60, what=f"target 2 to rejoin at the tail:\n{ch.agents[1].text()[-2000:]}")
    finish(ch)
    source, _, disks = ch.loops
    for disk in disks:
        sh("cmp", source.device, disk.device)
    assert re.search(r"Resuming at offset [1-9]", ch.agents[1].text()), ch.agents[1].text()[-2000:]
    assert "A downstream resumes at" in ch.agents[0].text(), ch.agents[0].text()[-2000:]


def test_the_head_target_killed(chain, tmp_path):
    """The first of three dies: the second is relinked to the source; the first rejoins at the tail."""
    ch = chain(3, random_source=True, head_rate="24M")
    ch.start_in_order()
    lost_then_relinked(ch, killed=1, downstream=2, to=0)
    ch.agents[0].start()
    finish(ch)
    source, _, disks = ch.loops
    for disk in disks:
        sh("cmp", source.device, disk.device)
    assert "The target resumes at" in ch.clone.source.text(), ch.clone.source.text()[-2000:]


def test_a_certificate_of_another_session_cannot_pull_from_a_target(chain, tmp_path, api, ctl, bridge_on_network):
    ch = chain(2, random_source=True, head_rate="16M")
    ch.start_in_order()
    address, port = ch.relay_address(1)
    other, cert, key = another_sessions_target(api, ctl, bridge_on_network, tmp_path)
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(bridge_on_network.ca), "--cert", str(cert), "--key", str(key),
                        f"https://{address}:{port}/disk?offset=0"], capture_output=True, text=True)
    assert r.stdout == "403", (r.stdout, r.stderr)
    assert f"Refused a peer with certificate clone-{other}-target" in ch.agents[0].text()
    finish(ch)
    source, _, disks = ch.loops
    for disk in disks:
        sh("cmp", source.device, disk.device)


def test_the_controller_stopped_mid_chain(chain, tmp_path, controller, bridge_on_network, network):
    """The controller and the bridge stop for 30 s while three targets stream down the chain: the copy goes on
    peer to peer meanwhile, and once they are back every report is taken and every target completes."""
    ch = chain(3, random_source=True, head_rate="6M")
    ch.start_in_order()
    wait_for(lambda: ch.written(3) > 16 << 20, timeout=90, what="the chain to be under way")
    middle = ch.agents[1].netns
    bridge_on_network.stop()
    assert controller.stop() == 0
    before = network.tx_bytes(middle)
    time.sleep(30)
    # The middle target forwarded to the last while the controller was away: counted on its link.
    assert network.tx_bytes(middle) - before > 64 << 20, (before, network.tx_bytes(middle))
    controller.start()
    bridge_on_network.start()
    finish(ch)
    source, _, disks = ch.loops
    for disk in disks:
        sh("cmp", source.device, disk.device)
    for agent in (ch.clone.source, *ch.agents):
        assert not list((agent.state / "queue").iterdir()), f"reports left in {agent.state}/queue"
