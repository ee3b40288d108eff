# SPDX-License-Identifier: MIT
"""A management network and a data network: the nodes enrol and report over the bridge's network, and the
source serves its disk on a second link straight to the target (pureboot.data-interface= or pureboot.address=),
with a certificate that names that address too, within the controller's DataSubnets=. A target that cannot
reach or verify its source says why after pureboot.peer-timeout=: the session fails with the reason, or
(pureboot.peer-failure=wait) shows it and goes on when the source comes back."""

import time

from harness import wait_for
from nodes import data_bytes, sh
from test_clone import clone_of, disks  # noqa: F401 (fixtures)


def allow_data_subnets(controller, *subnets):
    """DataSubnets= in the controller's configuration, read at its start."""
    with open(controller.config, "a") as f:
        f.write(f"[Enrolment]\nDataSubnets={' '.join(subnets)}\n")
    controller.restart()


def add_settings(agent, settings):
    with open(agent.cmdline, "a") as f:
        f.write(settings + "\n")


def random_clone(clone_of, disks):
    """A direct session from a random disk to another; returns (Clone, source, target)."""
    source, target = disks.random("source"), disks.random("target")
    return clone_of(source.device, target.device), source, target


def second_address(c, n):
    """One more address on the source's management link."""
    address = f"{c.network.subnet}.{n}"
    sh("ip", "-n", c.source.netns, "addr", "add", f"{address}/32", "dev", c.network.links[c.source.netns])
    return address


def listening(ns, port):
    return sh("ip", "netns", "exec", ns, "ss", "-Htln", "sport", f"= :{port}").stdout


def test_clone_streams_over_the_data_link(controller, clone_of, disks):
    c, source, target = random_clone(clone_of, disks)
    subnet, source_data, _, source_link = c.network.data_link(c.source.netns, c.target.netns)
    allow_data_subnets(controller, subnet)
    add_settings(c.source, f"pureboot.data-interface={source_link}")
    management_at, data_at = c.network.tx_bytes(c.source.netns), c.network.tx_bytes(c.source.netns, source_link)
    c.source.start()
    c.wait_status("source_ready", timeout=30)
    assert c.prop("SourceAddress") == source_data
    # It serves there only: not on the management network.
    assert listening(c.source.netns, 9999).split()[3] == f"{source_data}:9999"
    c.target.start()
    assert c.target.wait(90) == 0, c.target.text()
    assert c.source.wait(60) == 0, c.source.text()
    assert c.status() == "completed", c.prop("Error")
    sh("cmp", source.device, target.device)
    # The disk went over the data link; the management link carried the reports only.
    sent_data = c.network.tx_bytes(c.source.netns, source_link) - data_at
    sent_management = c.network.tx_bytes(c.source.netns) - management_at
    assert sent_data >= data_bytes(source.device), (sent_data, sent_management)
    assert sent_management < sent_data // 50, (sent_data, sent_management)


def test_source_serves_where_its_command_line_says(controller, clone_of, disks):
    """pureboot.address= and pureboot.port= (as a workflow passes them) decide where the source serves and
    what it reports: a second address on its link, and another port; the clone goes through there."""
    c, _, _ = random_clone(clone_of, disks)
    second = second_address(c, 200)
    allow_data_subnets(controller, f"{second}/32")
    add_settings(c.source, f"pureboot.address={second} pureboot.port=9555")
    c.source.start()
    c.wait_status("source_ready", timeout=30)
    assert (c.prop("SourceAddress"), c.prop("SourcePort")) == (second, 9555)
    assert listening(c.source.netns, 9555).split()[3] == f"{second}:9555"
    c.target.start()
    assert c.target.wait(90) == 0, c.target.text()
    assert c.source.wait(60) == 0, c.source.text()
    assert c.status() == "completed", c.prop("Error")


def test_data_address_outside_the_data_subnets_is_refused(clone_of, disks):
    """No DataSubnets=: a source may serve only where it enrols from. Its enrolment is refused with what to do,
    the token stays unspent and the session is untouched."""
    c, _, _ = random_clone(clone_of, disks)
    _, source_data, _, _ = c.network.data_link(c.source.netns, c.target.netns)
    add_settings(c.source, f"pureboot.address={source_data}")
    c.source.start()
    assert c.source.wait(30) == 3, c.source.text()  # AGENT_EXIT_REFUSED
    assert "refused the address we serve on" in c.source.text() and "DataSubnets=" in c.source.text()
    assert c.status() == "waiting"
    # Without the data address, the same token enrols.
    c.source.cmdline.write_text(c.source.cmdline.read_text().replace(f"pureboot.address={source_data}", ""))
    c.source.start()
    c.wait_status("source_ready", timeout=30)
    c.source.stop()


def test_certificate_mismatch_fails_the_session_with_the_reason(clone_of, disks):
    """The source enrolled from one address, then reports another its certificate does not name (restarted
    with pureboot.address=, its identity kept): the target says so after pureboot.peer-timeout= and the
    session fails with the reason, instead of the target retrying forever."""
    c, _, _ = random_clone(clone_of, disks)
    second = second_address(c, 201)
    c.source.start()
    c.wait_status("source_ready", timeout=30)
    c.source.stop()
    add_settings(c.source, f"pureboot.address={second}")
    c.source.start()
    wait_for(lambda: c.prop("SourceAddress") == second, what="the source to report its second address")
    add_settings(c.target, "pureboot.peer-timeout=5")
    started = time.monotonic()
    c.target.start()
    c.wait_status("failed", timeout=60)
    took = time.monotonic() - started
    assert 5 <= took < 30, took
    error = c.prop("Error")
    assert "certificate name/address mismatch" in error and second in error, error
    assert c.target.wait(30) == 1, c.target.text()


def test_waiting_target_shows_the_problem_and_goes_on(clone_of, disks, ctl):
    """pureboot.peer-failure=wait: nothing serves at the reported address, so after the timeout the session
    shows the refused connection and stays where it is; once the source serves again the clone completes and
    the problem is gone."""
    c, source, target = random_clone(clone_of, disks)
    c.source.start()
    c.wait_status("source_ready", timeout=30)
    c.source.stop()
    add_settings(c.target, "pureboot.peer-timeout=3 pureboot.peer-failure=wait")
    c.target.start()
    wait_for(lambda: "connection refused" in c.prop("Problem"), timeout=30,
             what=f"the session to show the problem; target:\n{c.target.text()[-2000:]}")
    assert c.status() in ("source_ready", "cloning") and c.prop("Error") == ""
    assert c.target.proc.poll() is None
    shown = ctl("clone", "status", c.id, check=True).stdout
    assert "Problem: connection refused" in shown, shown
    c.source.start()
    assert c.target.wait(120) == 0, c.target.text()
    assert c.source.wait(60) == 0, c.source.text()
    assert c.status() == "completed", c.prop("Error")
    assert c.prop("Problem") == ""
    sh("cmp", source.device, target.device)


def test_unreachable_source_is_named_so(clone_of, disks):
    """No route from the target to the address the source reports: the session fails saying so."""
    c, _, _ = random_clone(clone_of, disks)
    c.source.start()
    c.wait_status("source_ready", timeout=30)
    sh("ip", "-n", c.target.netns, "route", "add", "unreachable", f"{c.prop('SourceAddress')}/32")
    add_settings(c.target, "pureboot.peer-timeout=3")
    c.target.start()
    c.wait_status("failed", timeout=60)
    error = c.prop("Error")
    assert "is unreachable from here" in error, error
