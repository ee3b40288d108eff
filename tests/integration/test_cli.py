# SPDX-License-Identifier: MIT
"""purebootctl against the real controller: what people and scripts see."""

import json
import subprocess
import time

from harness import PUREBOOTCTL


def test_node_commands(controller, ctl):
    r = ctl("node", "add", "--mac", "AA:BB:CC:00:00:01", "--hostname", "web-01", check=True)
    node_id = r.stdout.strip()
    assert len(node_id) == 32
    ctl("node", "add", "--mac", "aa:bb:cc:00:00:02", "--hostname", "pi-01", "--arch", "arm64", "--serial",
        "10000000", check=True)
    listing = ctl("node", "list", check=True).stdout
    assert "web-01" in listing and "aa:bb:cc:00:00:01" in listing and "2 nodes listed." in listing
    assert ctl("node", "list", "--no-legend", check=True).stdout.count("\n") == 2
    rows = json.loads(ctl("node", "list", "--json=short", check=True).stdout)
    assert {r["hostname"] for r in rows} == {"web-01", "pi-01"}
    assert json.loads(ctl("node", "list", "--json=pretty", check=True).stdout) == rows
    show = ctl("node", "show", node_id[:6], check=True).stdout
    assert "Hostname: web-01" in show
    assert json.loads(ctl("node", "show", "pi-01", "--json=short", check=True).stdout)["Serial"] == "10000000"
    r = ctl("node", "add", "--mac", "aa:bb:cc:00:00:01", "--hostname", "dup")
    assert r.returncode == 1 and "already has this MAC address" in r.stderr
    r = ctl("node", "show", "nobody")
    assert r.returncode == 4 and "No node" in r.stderr
    ctl("node", "remove", "pi-01", check=True)
    assert "pi-01" not in ctl("node", "list", check=True).stdout


def test_usage_errors(controller, ctl):
    assert ctl().returncode == 2
    assert ctl("frobnicate").returncode == 2
    assert ctl("node", "add", "--hostname", "x").returncode == 2
    assert ctl("--json=yaml", "node", "list").returncode == 2
    assert ctl("clone", "create", "--source", "a").returncode == 2
    assert ctl("--help").returncode == 0


def setup_nodes(ctl):
    ctl("node", "add", "--mac", "aa:bb:cc:00:00:01", "--hostname", "web-01", check=True)
    ctl("node", "add", "--mac", "aa:bb:cc:00:00:02", "--hostname", "web-02", check=True)


def test_clone_commands(controller, ctl):
    setup_nodes(ctl)
    sid = ctl("clone", "create", "--source", "web-01", "--target", "web-02", "--mode", "direct",
              "--source-device", "/dev/sda", "--target-device", "/dev/sdb", "--name", "nightly",
              "--resize", "grow_target", check=True).stdout.strip()
    listing = ctl("clone", "list", check=True).stdout
    assert "nightly" in listing and "web-01" in listing and "pending" in listing
    rows = json.loads(ctl("clone", "list", "--json=short", check=True).stdout)
    assert rows[0]["id"] == sid and rows[0]["status"] == "pending"
    show = ctl("clone", "show", "nightly", check=True).stdout
    assert "ResizeMode: grow_target" in show and "Status: pending" in show
    ctl("clone", "update", "nightly", "--target-device", "/dev/nvme0n1", check=True)
    assert json.loads(ctl("clone", "show", sid, "--json=short", check=True).stdout)["TargetDevice"] == "/dev/nvme0n1"
    ctl("clone", "start", sid, check=True)
    r = ctl("clone", "start", sid)
    assert r.returncode == 1 and "already been started" in r.stderr
    token = ctl("clone", "token", sid, "--role", "source", check=True).stdout.strip()
    assert len(token) == 48
    status = json.loads(ctl("clone", "status", sid, "--json=short", check=True).stdout)
    assert status["status"] == "waiting"
    r = ctl("clone", "delete", sid, check=True)
    assert "cancelled now" in r.stdout
    ctl("clone", "delete", sid, check=True)
    assert ctl("clone", "show", sid).returncode == 4


def test_clone_status_follow_ends_with_the_session(controller, ctl, system_bus):
    """--follow stays until the session ends, driven by PropertiesChanged, and its exit code tells how."""
    setup_nodes(ctl)
    sid = ctl("clone", "create", "--source", "web-01", "--target", "web-02", "--mode", "direct",
              "--source-device", "/dev/sda", "--target-device", "/dev/sdb", check=True).stdout.strip()
    ctl("clone", "start", sid, check=True)
    follow = subprocess.Popen([str(PUREBOOTCTL), "clone", "status", sid, "--follow"], env=system_bus.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    assert follow.poll() is None, "status --follow returned before the session ended"
    ctl("clone", "cancel", sid, check=True)
    out, err = follow.communicate(timeout=10)
    assert follow.returncode == 1
    assert "waiting" in out and "cancelled" in out
    assert "Cancelled by an administrator" in err


def test_storage_and_ca_commands(controller, ctl, tmp_path):
    bid = ctl("storage", "add", "nfs1", "--type", "nfs", "server=127.0.0.1", "export=/srv/pureboot",
              "version=3", check=True).stdout.strip()
    ctl("storage", "add", "lab-iscsi", "--type", "iscsi", "portal=127.0.0.1:3260",
        "target=iqn.2026-01.org.pureboot:lab", "lun=1", "chap_user=pb", "chap_secret=0123456789abcdef", check=True)
    listing = ctl("storage", "list", check=True).stdout
    assert "nfs1" in listing and "lab-iscsi" in listing and "2 storage backends listed." in listing
    show = ctl("storage", "show", "lab-iscsi", check=True).stdout
    assert "chap_secret_set=true" in show and "0123456789abcdef" not in show
    assert "0123456789abcdef" not in ctl("storage", "list", "--json=short", check=True).stdout
    r = ctl("storage", "add", "bad", "--type", "nfs", "server=127.0.0.1")
    assert r.returncode == 1 and "export=PATH" in r.stderr
    ctl("storage", "update", "nfs1", "enabled=no", check=True)
    assert json.loads(ctl("storage", "show", bid, "--json=short", check=True).stdout)["Enabled"] is False
    ctl("storage", "remove", "nfs1", check=True)

    ca = ctl("ca", "show", check=True).stdout
    assert "Algorithm: ecdsa-p256" in ca and "Fingerprint:" in ca and "BEGIN X509 CRL" in ca
    setup_nodes(ctl)
    subprocess.run(["certtool", "--generate-privkey", "--key-type=ecdsa", "--outfile", tmp_path / "k.pem"],
                   check=True, capture_output=True)
    (tmp_path / "t.cfg").write_text('cn = "anything"\n')
    subprocess.run(["certtool", "--generate-request", "--load-privkey", tmp_path / "k.pem", "--template",
                    tmp_path / "t.cfg", "--outfile", tmp_path / "req.pem"], check=True, capture_output=True)
    r = ctl("ca", "issue", "web-01", "--csr", tmp_path / "req.pem", "--role", "node", check=True)
    assert "BEGIN CERTIFICATE" in r.stdout
    serial = r.stderr.split("serial ")[1].split(".")[0]
    issued = json.loads(ctl("ca", "list-issued", "--json=short", check=True).stdout)
    assert issued[0]["serial"] == serial and issued[0]["subject"].startswith("node-") and issued[0]["revoked"] == 0
    ctl("ca", "revoke", serial, check=True)
    assert json.loads(ctl("ca", "list-issued", "--json=short", check=True).stdout)[0]["revoked"] > 0
    r = ctl("ca", "revoke", serial)
    assert r.returncode == 1 and "revoked already" in r.stderr


def test_controller_unreachable(system_bus, ctl):
    r = ctl("node", "list")
    assert r.returncode == 6
    assert "org.pureboot.Controller1" in r.stderr and "systemctl start pureboot-controller" in r.stderr


def test_bash_completion(controller, ctl, system_bus):
    """The completion script completes verbs, options and live host names from the controller."""
    from harness import BUILD, REPO
    setup_nodes(ctl)

    def complete(line):
        words = line.split(" ")
        script = (f"source {REPO}/shell-completion/purebootctl.bash; COMP_WORDS=({' '.join(repr(w) for w in words)}); "
                  f"COMP_CWORD={len(words) - 1}; _purebootctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
        env = dict(system_bus.env, PATH=f"{BUILD / 'src/ctl'}:{system_bus.env['PATH']}")
        return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                              check=True).stdout.split()

    assert complete("purebootctl cl") == ["clone"]
    assert set(complete("purebootctl clone s")) == {"show", "start", "status"}
    assert "--follow" in complete("purebootctl clone status x --")
    assert complete("purebootctl node show web-0") == ["web-01", "web-02"]
    assert complete("purebootctl clone create --mode d") == ["direct"]
