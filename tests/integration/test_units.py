# SPDX-License-Identifier: MIT
"""The files around the binary: the unit's sandbox score, unit syntax, sysusers and tmpfiles entries, the
polkit actions as polkitd sees them, the bus activation file."""

import re
import subprocess

import pytest

from harness import AGENT, BRIDGE, BUILD, CONTROLLER, REPO, run


UNITS = {"pureboot-controller.service": CONTROLLER, "pureboot-bridge.service": BRIDGE}


@pytest.mark.parametrize("name", UNITS)
def test_unit_exposure(name):
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", BUILD / "units" / name],
                       capture_output=True, text=True)
    m = re.search(rf"Overall exposure level for {name}: ([0-9.]+)", r.stdout)
    assert m, r.stdout + r.stderr
    score = float(m.group(1))
    print(f"\nsystemd-analyze security: {name} exposure {score}")
    assert score <= 3.0


@pytest.mark.parametrize("name", UNITS)
def test_unit_verifies(tmp_path, name):
    # Point ExecStart at the build tree so verify can check the binary exists and is executable.
    unit = tmp_path / name
    text = (BUILD / "units" / name).read_text()
    unit.write_text(re.sub(r"^ExecStart=.*$", f"ExecStart={UNITS[name]}", text, flags=re.M))
    sockets = []
    if name == "pureboot-bridge.service":
        # The HTTPS socket, the plain HTTP one for firmware without TLS and the TFTP one, all handed to this service.
        for socket in ("pureboot-bridge.socket", "pureboot-bridge-http.socket", "pureboot-bridge-tftp.socket"):
            (tmp_path / socket).write_text((REPO / "units" / socket).read_text())
            sockets.append(tmp_path / socket)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", unit, *sockets], capture_output=True, text=True)
    problems = [l for l in (r.stdout + r.stderr).splitlines() if name in l or ".socket" in l]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


def test_sysusers_and_tmpfiles(tmp_path):
    (tmp_path / "etc").mkdir()
    r = subprocess.run(["systemd-sysusers", "--root", tmp_path, REPO / "units/sysusers-pureboot.conf"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "pureboot-bridge:" in (tmp_path / "etc/passwd").read_text()
    r = subprocess.run(["systemd-tmpfiles", "--create", "--root", tmp_path, REPO / "units/tmpfiles-pureboot.conf"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert oct((tmp_path / "var/lib/pureboot/ca").stat().st_mode & 0o777) == "0o700"
    # The boot files the bridge serves: readable by its user.
    assert oct((tmp_path / "srv/pureboot/boot").stat().st_mode & 0o777) == "0o755"


def test_polkit_actions_as_polkitd_sees_them(system_bus):
    # An erase is asked for every time: never kept.
    for action, defaults in (("manage-clones", "auth_admin_keep"), ("manage-ca", "auth_admin_keep"),
                             ("manage-disks", "auth_admin")):
        r = run(["pkaction", "--verbose", "--action-id", f"org.pureboot.controller1.{action}"], system_bus)
        assert r.returncode == 0, r.stderr
        assert f"implicit active:   {defaults}" in [line.strip() for line in r.stdout.splitlines()], r.stdout
        assert "implicit any:      auth_admin" in r.stdout
    r = run(["pkaction"], system_bus)
    assert {f"org.pureboot.controller1.{a}" for a in
            ("manage-clones", "manage-partitions", "manage-nodes", "manage-storage", "manage-ca", "manage-nfsroot",
             "manage-images", "manage-disks")} \
        <= set(r.stdout.split())


def test_activation_file():
    text = (BUILD / "dbus/org.pureboot.Controller1.service").read_text()
    assert "Name=org.pureboot.Controller1" in text
    assert "SystemdService=dbus-org.pureboot.Controller1.service" in text


def test_man_page_documents_the_whole_api():
    import xml.etree.ElementTree as ET
    page = (REPO / "man/org.pureboot.Controller1.5.scd").read_text()
    missing = []
    for xml in sorted((REPO / "dbus").glob("org.pureboot.Controller1.*.xml")):
        iface = ET.parse(xml).getroot().find("interface")
        for kind in ("method", "property", "signal"):
            for member in iface.findall(kind):
                if f"*{member.get('name')}*" not in page:
                    missing.append(f"{iface.get('name')}.{member.get('name')}")
    errors = re.findall(r'#define PB_ERROR_\w+ PB_ERROR_PREFIX "(\w+)"',
                        (REPO / "src/shared/pureboot-errors.h").read_text())
    missing += [e for e in errors if f"*{e}*" not in page]
    assert not missing, f"org.pureboot.Controller1(5) does not mention: {missing}"
    for page_name in ("pureboot-controller.8", "pureboot-bridge.8", "purebootctl.1", "org.pureboot.Controller1.5"):
        assert (BUILD / "man" / page_name).stat().st_size > 1000


def test_agent_unit_and_generator_verify(tmp_path):
    """The generator, run as systemd runs it, links the instance the command line names; the linked unit
    (ExecStart pointed at the build tree) passes systemd-analyze verify."""
    unit = tmp_path / "units" / "pureboot-agent@.service"
    unit.parent.mkdir()
    text = (BUILD / "deploy" / "pureboot-agent@.service").read_text()
    assert "Restart=on-failure" in text and "StartLimitIntervalSec=0" in text
    unit.write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={AGENT}", text, flags=re.M))
    out = tmp_path / "generated"
    out.mkdir()
    env = {"SYSTEMD_PROC_CMDLINE": "quiet pureboot.mode=clone_target_direct pureboot.session=x"}
    r = subprocess.run([BUILD / "src/generator/pureboot-generator", out], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    link = out / "multi-user.target.wants" / "pureboot-agent@clone_target_direct.service"
    assert link.is_symlink()
    # Verify the instance the generator asked for, from a copy of the template under its instance name.
    instance = tmp_path / "units" / "pureboot-agent@clone_target_direct.service"
    instance.write_text(unit.read_text())
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", instance], capture_output=True, text=True,
                       env={"SYSTEMD_UNIT_PATH": f"{unit.parent}:"})
    problems = [l for l in (r.stdout + r.stderr).splitlines() if "pureboot-agent" in l]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr
