# SPDX-License-Identifier: MIT
"""A node's power (issue 21, power control): manual, Wake-on-LAN and IPMI. The magic packet really leaves
the controller's host: a listener in a node's network namespace on the test's bridge receives it, and its
bytes are checked (qemu cannot be woken by one, so the packet is what is tested). IPMI goes through Debian's
ipmitool to OpenIPMI's BMC simulator, ipmi_sim, in a node's namespace, whose chassis control program keeps
the machine's power state and boot device in a file."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bmc import Bmc
from harness import ROOT, wait_for
from nodes import Clone, make_blank_disk, make_source_disk


def listen(ns, port, out):
    """A UDP listener on every address of namespace ns that writes the first datagram it gets, as hex."""
    code = ("import socket, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n"
            f"s.bind(('0.0.0.0', {port}))\n"
            "open(sys.argv[1] + '.ready', 'w').close()\n"
            "data, peer = s.recvfrom(4096)\n"
            "open(sys.argv[1], 'w').write(data.hex() + ' ' + peer[0])\n")
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code, str(out)])
    wait_for(lambda: out.with_suffix(".ready").exists(), timeout=10, what="the listener")
    return proc


def test_wake_on_lan_and_manual(controller, ctl, api, network, tmp_path):
    mac = "52:54:00:aa:0b:01"
    api.ok(ROOT, "Manager", "RegisterNode", "sssa{sv}", "sleeper", mac, "x86_64", "0")
    path = api.ok(ROOT, "Manager", "GetNode", "s", "sleeper")[0]
    assert api.prop(path, "Node", "PowerDriver") == "none"
    r = ctl("node", "power", "sleeper", "on")
    assert r.returncode != 0 and "has no power driver" in r.stderr and "set-power sleeper" in r.stderr, r.stderr

    # Settings are checked before anything is stored.
    for args, why in ((("--driver=ipmi2",), "is not none, manual, wol, ipmi or redfish"),
                      (("--driver=wol", "address=10.0.0.1"), "has no setting \"address\""),
                      (("--driver=wol", "broadcast=10.0.0.300"), "broadcast is an IPv4 broadcast address"),
                      (("--driver=wol", "port=0"), "port is a UDP port"),
                      (("--driver=wol", "interface=bad/name"), "interface is a network interface"),
                      (("--driver=wol", "interface=eth0", "broadcast=10.0.0.255"), "not both")):
        r = ctl("node", "set-power", "sleeper", *args)
        assert r.returncode != 0 and why in r.stderr, (args, r.stderr)
    assert api.prop(path, "Node", "PowerDriver") == "none"

    ns, _ = network.node("wol")
    got = tmp_path / "packet"
    listener = listen(ns, 9, got)
    try:
        ctl("node", "set-power", "sleeper", "--driver=wol", f"interface={network.bridge}", check=True)
        assert api.prop(path, "Node", "PowerDriver") == "wol"
        assert api.prop(path, "Node", "PowerSettings") == {"interface": network.bridge}
        r = ctl("node", "power", "sleeper", "on", check=True)
        broadcast = f"{network.subnet}.255"
        assert f"magic packet for {mac} went to {broadcast}:9" in r.stdout, r.stdout
        listener.wait(10)
    finally:
        listener.kill()
    payload, sender = got.read_text().split()
    assert payload == "ff" * 6 + mac.replace(":", "") * 16, payload
    assert sender == network.address  # from the controller's side of the bridge

    # A broadcast address and port of one's own; and what Wake-on-LAN cannot do.
    got7 = tmp_path / "packet7"
    listener = listen(ns, 7, got7)
    try:
        ctl("node", "set-power", "sleeper", "--driver=wol", f"broadcast={broadcast}", "port=7", check=True)
        assert f"went to {broadcast}:7" in ctl("node", "power", "sleeper", "on", check=True).stdout
        listener.wait(10)
    finally:
        listener.kill()
    assert got7.read_text().split()[0] == payload
    for action in ("off", "cycle", "status"):
        r = ctl("node", "power", "sleeper", action)
        assert r.returncode != 0 and "Wake-on-LAN can only wake node sleeper" in r.stderr, r.stderr
    r = ctl("node", "power", "sleeper", "reboot-now")
    assert r.returncode != 0 and "is not on, off, cycle, status or netboot" in r.stderr, r.stderr

    # Manual: the operator switches it, and is told so. The settings stay across a restart.
    ctl("node", "set-power", "sleeper", "--driver=manual", check=True)
    r = ctl("node", "power", "sleeper", "cycle")
    assert r.returncode != 0 and "switched by hand (power driver manual): restart it yourself" in r.stderr, r.stderr
    ctl("node", "set-power", "sleeper", "--driver=wol", "interface=lo0x", check=True)
    r = ctl("node", "power", "sleeper", "on")
    assert r.returncode != 0 and "interface lo0x of this host has no IPv4 broadcast address" in r.stderr, r.stderr
    controller.restart()
    assert api.prop(path, "Node", "PowerDriver") == "wol"
    assert api.prop(path, "Node", "PowerSettings") == {"interface": "lo0x"}
    shown = ctl("node", "show", "sleeper", check=True).stdout
    assert "PowerDriver: wol" in shown and "interface=lo0x" in shown, shown
    # Each change and each action is in the audit log, with how it went.
    node = path.rsplit("/", 1)[1]
    events = [(action, result) for _, action, obj, result in controller.events()
              if action in ("SetPower", "Power") and obj == node]
    assert events == [("SetPower", "wol"), ("Power", "ok"), ("SetPower", "wol"), ("Power", "ok"),
                      ("SetPower", "manual"), ("SetPower", "wol"), ("Power", "failed")], events


@pytest.fixture
def bmc(network, tmp_path):
    """ipmi_sim in a node's namespace on the bridge (bmc.py): user admin, its password in a file; the machine
    off."""
    ns, address = network.node("bmc")
    b = Bmc(ns, address, tmp_path / "bmc").start()
    try:
        yield b
    finally:
        b.stop()


def test_ipmi(controller, ctl, api, bmc, tmp_path):
    api.ok(ROOT, "Manager", "RegisterNode", "sssa{sv}", "racked", "52:54:00:aa:0b:02", "x86_64", "0")
    path = api.ok(ROOT, "Manager", "GetNode", "s", "racked")[0]
    set_power = ("node", "set-power", "racked", "--driver=ipmi")
    for args, why in (((f"address={bmc.address}", "user=admin"), "needs the BMC user's password"),
                      ((f"address={bmc.address}", "user=admin", "password=s3cret-pw"), "password-file=FILE"),
                      (("user=admin", f"password-file={bmc.password}"), "needs address="),
                      ((f"address={bmc.address}", "user=a-user-name-too-long", f"password-file={bmc.password}"),
                       "user is an IPMI user name"),
                      ((f"address={bmc.address}", "user=admin", f"password-file={tmp_path}/none"),
                       "Cannot read the password")):
        r = ctl(*set_power, *args)
        assert r.returncode != 0 and why in r.stderr, (args, r.stderr)
    assert api.prop(path, "Node", "PowerDriver") == "none" and not api.prop(path, "Node", "PowerCredentialsSet")

    r = ctl(*set_power, f"address={bmc.address}", "user=admin", "cipher=18", f"password-file={bmc.password}")
    assert r.returncode != 0 and "cipher is an IPMI 2.0 cipher suite, 0 to 17" in r.stderr, r.stderr
    # ipmi_sim does not list its cipher suites (ipmitool would wait seconds for that): named, 3.
    ctl(*set_power, f"address={bmc.address}", "user=admin", "cipher=3", f"password-file={bmc.password}", check=True)
    # The password is kept, never shown: the settings and the property say only that it is set.
    assert api.prop(path, "Node", "PowerSettings") == {"address": bmc.address, "user": "admin", "cipher": "3"}
    assert api.prop(path, "Node", "PowerCredentialsSet")
    assert "s3cret-pw" not in ctl("node", "show", "racked", check=True).stdout
    assert ctl("node", "power", "racked", "status", check=True).stdout.strip() == "off"
    r = ctl("node", "power", "racked", "on", check=True)
    assert f"The BMC at {bmc.address} was told power on; the machine was off." in r.stdout, r.stdout
    assert bmc.state()["power"] == "1"
    assert ctl("node", "power", "racked", "status", check=True).stdout.strip() == "on"
    ctl("node", "power", "racked", "cycle", check=True)
    # The BMC switches it off, and on again a moment later: what it was told is done by then.
    wait_for(lambda: bmc.log()[-2:] == ["power 0", "power 1"], timeout=30, what="the cycle")
    ctl("node", "power", "racked", "off", check=True)
    assert bmc.state()["power"] == "0"
    # A cycle of a machine that is off switches it on.
    assert "told power on; the machine was off" in ctl("node", "power", "racked", "cycle", check=True).stdout
    assert bmc.state()["power"] == "1"
    # What the BMC did: on; the cycle as off and on; off; on.
    assert bmc.log() == ["power 1", "power 0", "power 1", "power 0", "power 1"], bmc.log()

    # The same driver again without a password keeps it; a wrong one is the BMC's refusal, said.
    ctl(*set_power, f"address={bmc.address}", "user=admin", "port=623", "cipher=3", check=True)
    assert ctl("node", "power", "racked", "status", check=True).stdout.strip() == "on"
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    ctl(*set_power, f"address={bmc.address}", "user=admin", "cipher=3", f"password-file={wrong}", check=True)
    r = ctl("node", "power", "racked", "status")
    assert r.returncode != 0 and f"racked's BMC at {bmc.address}:623 did not do power status" in r.stderr, r.stderr
    assert "check its address=, user= and password" in r.stderr, r.stderr
    # Only the controller reads it: in its database, which is the controller's alone.
    assert oct(os.stat(controller.state / "pureboot.db").st_mode & 0o777) == "0o600"


def test_a_session_boots_its_nodes_and_switches_them_off(controller, ctl, api, bmc, network, bridge_on_network,
                                                         loops, tmp_path):
    """--power-cycle: when the session starts, the controller has each of its machines boot from the network
    next (a BMC's boot device, for that boot only) and switches it on or cycles it; --power-off: when the
    session ends, it switches them off. What each did is in the session's PowerNotes; a node without a driver
    is noted, not failed."""
    source, _ = make_source_disk(tmp_path)
    loops.append(source)
    target = make_blank_disk(tmp_path, loops, "target", 256 << 20)
    # The target's machine has a BMC; the source's is switched by hand. (Clone registers them if new.)
    api.ok(ROOT, "Manager", "RegisterNode", "sssa{sv}", "tgt-node", "aa:bb:cc:00:10:02", "x86_64", "0")
    api.ok(ROOT, "Manager", "RegisterNode", "sssa{sv}", "src-node", "aa:bb:cc:00:10:01", "x86_64", "0")
    ctl("node", "set-power", "tgt-node", "--driver=ipmi", f"address={bmc.address}", "user=admin", "cipher=3",
        f"password-file={bmc.password}", check=True)
    ctl("node", "set-power", "src-node", "--driver=manual", check=True)
    c = Clone(tmp_path, ctl, api, network, bridge_on_network, source.device, target.device, tag="p",
              create_args=("--power-cycle", "--power-off"))
    try:
        assert c.prop("PowerCycle") and c.prop("PowerOff")
        wait_for(lambda: len(c.prop("PowerNotes")) == 2, timeout=30, what="both machines to be switched")
        notes = sorted(c.prop("PowerNotes"))
        assert notes[0].startswith("src-node: Node src-node is switched by hand (power driver manual): boot it "
                                   "from the network yourself."), notes
        assert notes[1] == (f"tgt-node: The BMC at {bmc.address} was told to boot from the network next, and power "
                            "on; the machine was off."), notes
        assert bmc.state()["boot"] == "pxe" and bmc.state()["power"] == "1"
        c.source.start()
        c.target.start()
        c.wait_status("completed", "failed", timeout=180)
        assert c.status() == "completed", c.prop("Error")
        # The note comes once the driver is done, after the BMC switched the machine off.
        wait_for(lambda: any(n.startswith("tgt-node: The BMC at") and "told power off" in n
                             for n in c.prop("PowerNotes")), timeout=30, what="the target to be switched off")
        assert bmc.state()["power"] == "0"
    finally:
        c.stop()
    assert bmc.log() == ["boot pxe", "power 1", "power 0"], bmc.log()


@pytest.fixture
def redfish(tmp_path):
    """tests/integration/redfish_bmc.py on loopback, over HTTPS with a certificate of its own (made with
    GnuTLS's certtool): user root, its password in a file; the machine off."""
    d = tmp_path / "redfish"
    d.mkdir()
    (d / "template").write_text('cn = "pureboot-test-bmc"\nip_address = "127.0.0.1"\nexpiration_days = 2\n'
                                "ca\ncert_signing_key\nsigning_key\nencryption_key\ntls_www_server\n")
    subprocess.run(["certtool", "--generate-privkey", "--outfile", d / "key.pem"], check=True, capture_output=True)
    subprocess.run(["certtool", "--generate-self-signed", "--load-privkey", d / "key.pem", "--template",
                    d / "template", "--outfile", d / "cert.pem"], check=True, capture_output=True)
    (d / "password").write_text("calvin-pw\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = d / "state.json"
    log = open(d / "server.log", "w")
    proc = subprocess.Popen([sys.executable, Path(__file__).with_name("redfish_bmc.py"), "127.0.0.1", str(port),
                             d / "cert.pem", d / "key.pem", "root", "calvin-pw", state],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: state.exists() or proc.poll() is not None, timeout=20, what="the Redfish service")
        assert proc.poll() is None, (d / "server.log").read_text()
        yield type("Redfish", (), {"port": port, "cert": d / "cert.pem", "password": d / "password",
                                   "state": lambda: json.loads(state.read_text())})
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_redfish(controller, ctl, api, redfish, tmp_path):
    """The redfish driver against a minimal Redfish service of the test's own (no real one runs here; README):
    status from PowerState, ComputerSystem.Reset for on, off and restart, BootSourceOverride Pxe once for a
    network boot; the BMC's certificate checked against ca-file=, refused without it, not checked with
    verify=no; a wrong password is the BMC's 401, said."""
    api.ok(ROOT, "Manager", "RegisterNode", "sssa{sv}", "blade", "52:54:00:aa:0b:03", "x86_64", "0")
    path = api.ok(ROOT, "Manager", "GetNode", "s", "blade")[0]
    set_power = ("node", "set-power", "blade", "--driver=redfish", "address=127.0.0.1", f"port={redfish.port}",
                 "user=root")
    for args, why in (((), "needs the BMC user's password"),
                      ((f"password-file={redfish.password}", "ca-file=cert.pem"), "ca-file is the absolute path"),
                      ((f"password-file={redfish.password}", "verify=maybe"), "verify is yes or no"),
                      ((f"password-file={redfish.password}", "system=/api/systems/1"), "system is a Redfish system"),
                      ((f"password-file={redfish.password}", f"ca-file={redfish.cert}", "verify=no"), "not both"),
                      ((f"password-file={redfish.password}", "cipher=3"), "redfish has no setting \"cipher\"")):
        r = ctl(*set_power, *args)
        assert r.returncode != 0 and why in r.stderr, (args, r.stderr)
    assert api.prop(path, "Node", "PowerDriver") == "none"

    # Its certificate is its own: not trusted until the operator says which to trust.
    ctl(*set_power, f"password-file={redfish.password}", check=True)
    r = ctl("node", "power", "blade", "status")
    assert r.returncode != 0 and "its certificate cannot be checked" in r.stderr and "ca-file=PATH" in r.stderr, \
        r.stderr
    ctl(*set_power, f"ca-file={redfish.cert}", check=True)  # the password kept
    assert api.prop(path, "Node", "PowerSettings") == {"address": "127.0.0.1", "port": str(redfish.port),
                                                       "user": "root", "ca-file": str(redfish.cert)}
    assert api.prop(path, "Node", "PowerCredentialsSet")
    assert ctl("node", "power", "blade", "status", check=True).stdout.strip() == "off"
    bmc = f"https://127.0.0.1:{redfish.port}"
    r = ctl("node", "power", "blade", "netboot", check=True)
    assert (f"The BMC at {bmc} was told to boot from the network next (BootSourceOverride Pxe, once), and Reset "
            "On for /redfish/v1/Systems/1; the machine was off.") in r.stdout, r.stdout
    assert redfish.state()["power"] == "On"
    assert ctl("node", "power", "blade", "status", check=True).stdout.strip() == "on"
    r = ctl("node", "power", "blade", "cycle", check=True)
    assert "Reset ForceRestart for /redfish/v1/Systems/1; the machine was on." in r.stdout, r.stdout
    ctl("node", "power", "blade", "off", check=True)
    assert redfish.state()["power"] == "Off"
    # The network boot was for one boot only: the BMC spent it, and the restart booted from the disk.
    assert redfish.state()["log"] == ["boot Pxe Once", "reset On", "booted from Pxe", "reset ForceRestart",
                                      "booted from its disk", "reset ForceOff"], redfish.state()["log"]

    # verify=no: not checked at all, said so by the operator.
    ctl(*set_power, "verify=no", "system=/redfish/v1/Systems/1", check=True)
    assert ctl("node", "power", "blade", "on", check=True).stdout.strip().endswith("the machine was off.")
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    ctl(*set_power, "verify=no", f"password-file={wrong}", check=True)
    r = ctl("node", "power", "blade", "status")
    assert r.returncode != 0 and f"blade's BMC at {bmc} refused user root (HTTP 401)" in r.stderr, r.stderr
    # The BMC's own words when it refuses what it was asked: a system that is not there.
    ctl(*set_power, "verify=no", "system=/redfish/v1/Systems/9", f"password-file={redfish.password}", check=True)
    r = ctl("node", "power", "blade", "on")
    assert r.returncode != 0 and "(HTTP 404): There is no resource at /redfish/v1/Systems/9." in r.stderr, r.stderr
    assert "calvin-pw" not in ctl("node", "show", "blade", check=True).stdout
