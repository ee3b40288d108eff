# SPDX-License-Identifier: MIT
"""The agent's settings: every option its help names (but --help, --cmdline-file and --json) is read from the
kernel command line as pureboot.NAME= too, checked the same way, and a flag wins over it."""

import json
import subprocess

import pytest

from harness import AGENT
from nodes import Loop, sh

# A value each option refuses, with the words of the refusal.
BAD = {
    "mode": ("sideways", "is not a mode this agent runs"),
    "session": ("not-an-id", "is not an id"),
    "node": ("", "needs a value"),
    "token": ("", "needs a value"),
    "device": ("sda", "is not a device path"),
    "devices": ("/dev/sda,sdb", "is not a device path"),
    "server": ("http://bridge:8443", "must be an https:// URL"),
    "ca": ("sha256:beef", "is not a CA fingerprint"),
    "state-dir": ("relative/dir", "is not an absolute path"),
    "port": ("70000", "is not a port number"),
    "address": ("bridge.example", "is not an IP address"),
    "data-interface": ("eth0/x", "is not a network interface name"),
    "peer-timeout": ("0", "is not a number of seconds"),
    "peer-failure": ("retry", "is not fail or wait"),
    "max-rate": ("fast", "is not a size"),
    "ack-timeout": ("soon", "is not a number of seconds or infinity"),
    "reboot": ("maybe", "is not yes or no"),
    "log-level": ("loud", "is not a log level"),
}


def agent(tmp_path, cmdline, *args):
    f = tmp_path / "cmdline"
    f.write_text(cmdline + "\n")
    return subprocess.run([AGENT, *args, f"--cmdline-file={f}"], capture_output=True, text=True, timeout=60)


def test_help_names_every_option_read_from_the_command_line():
    out = sh(AGENT, "--help").stdout
    for name in BAD:
        assert f"--{name}" in out, name


@pytest.mark.parametrize("name", BAD)
def test_each_option_is_read_from_the_kernel_command_line(tmp_path, name):
    value, words = BAD[name]
    r = agent(tmp_path, f"quiet pureboot.{name}={value}", "scan", "--json")
    assert r.returncode == 2, r.stderr
    assert f"pureboot.{name}={value}" in r.stderr and words in r.stderr, r.stderr


def test_a_flag_wins_over_the_command_line(tmp_path):
    # The bad pureboot.port= is not even looked at when --port says it.
    r = agent(tmp_path, "pureboot.port=70000", "scan", "--json", "--port=9000", "--devices=/dev/null-none")
    assert "pureboot.port" not in r.stderr, r.stderr
    r = agent(tmp_path, "pureboot.port=70000", "scan", "--json", "--port=0")
    assert r.returncode == 2 and "--port=0 is not a port number" in r.stderr, r.stderr


def test_address_and_data_interface_exclude_each_other(tmp_path):
    r = agent(tmp_path, "pureboot.address=10.0.0.1 pureboot.data-interface=eth1", "scan", "--json")
    assert r.returncode == 2 and "not both" in r.stderr, r.stderr


def test_settings_from_the_command_line_take_effect(tmp_path):
    backing = tmp_path / "disk.img"
    with open(backing, "wb") as f:
        f.truncate(32 << 20)
    loop = Loop(backing)
    try:
        r = agent(tmp_path, f"console=ttyS0 pureboot.devices={loop.device}", "scan", "--json")
        assert r.returncode == 0, r.stderr
        assert [d["device"] for d in json.loads(r.stdout)] == [loop.device]
        assert f"Scanned {loop.device}" in r.stderr, r.stderr
        # pureboot.log-level=err leaves out what info would say.
        r = agent(tmp_path, f"pureboot.devices={loop.device} pureboot.log-level=err", "scan", "--json")
        assert r.returncode == 0 and "Scanned" not in r.stderr, r.stderr
    finally:
        loop.detach()
