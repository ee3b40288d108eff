# SPDX-License-Identifier: MIT
"""A node's power (issue 21, power control, first drivers): manual and Wake-on-LAN. The magic packet really
leaves the controller's host: a listener in a node's network namespace on the test's bridge receives it,
and its bytes are checked. (qemu cannot be woken by one, so the packet is what is tested.)"""

import subprocess

from harness import ROOT, wait_for


def listen(ns, port, out):
    """A UDP listener on every address of namespace ns that writes the first datagram it gets, as hex."""
    code = ("import socket, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n"
            f"s.bind(('0.0.0.0', {port}))\n"
            "open(sys.argv[1] + '.ready', 'w').close()\n"
            "data, peer = s.recvfrom(4096)\n"
            "open(sys.argv[1], 'w').write(data.hex() + ' ' + peer[0])\n")
    proc = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", code, str(out)])
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
    for args, why in ((("--driver=ipmi2",), "is not none, manual or wol"),
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
    assert r.returncode != 0 and "is not on, off, cycle or status" in r.stderr, r.stderr

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
