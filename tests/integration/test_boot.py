# SPDX-License-Identifier: MIT
"""Boot answers: what the bridge tells firmware, decided by the controller, shaped by workflows/."""

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness import BRIDGE, REPO, ROOT, Bridge, make_key_and_csr

NODE = "org.pureboot.Node."


def get(bridge, path):
    r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "--cacert", str(bridge.ca), f"{bridge.url}{path}"],
                       capture_output=True, text=True, timeout=30)
    body, _, status = r.stdout.rpartition("\n")
    return int(status), body


def nodes(api):
    return {n[1]: n for n in api.ok(ROOT, "Manager", "ListNodes")[0]}


def test_unknown_machine_is_registered_and_boots_locally(bridge, api):
    status, script = get(bridge, "/boot/ipxe?mac=52:54:00:AB:CD:EF")
    assert status == 200 and script.startswith("#!ipxe\n") and "\nexit\n" in script
    node = nodes(api)["node-525400abcdef"]
    assert node[2] == "52:54:00:ab:cd:ef" and node[4] == "discovered" and node[6] > 0
    # The second boot finds it again rather than registering it twice.
    assert get(bridge, "/boot/ipxe?mac=52:54:00:ab:cd:ef")[0] == 200
    assert len(nodes(api)) == 1


def test_bad_boot_requests(bridge):
    status, body = get(bridge, "/boot/ipxe?mac=52:54:00:zz:cd:ef")
    assert status == 400 and "not a MAC address" in body
    status, body = get(bridge, "/boot/ipxe")
    assert status == 400 and "mac=" in body
    status, body = get(bridge, "/boot/pi?serial=../etc")
    assert status == 400 and "8 hex digits" in body


def test_a_clone_role_boots_the_deploy_image_with_a_working_token(bridge, api, tmp_path):
    api.node("web-01", "aa:bb:cc:00:00:01")
    api.node("web-02", "aa:bb:cc:00:00:02")
    session = api.session("pxe")
    sid = session.rsplit("/", 1)[1]

    status, script = get(bridge, "/boot/ipxe?mac=aa:bb:cc:00:00:01")
    assert status == 200 and "sleep 30" in script and "chain https://127.0.0.1" in script  # not started: wait

    api.ok(session, "CloneSession", "Start", "a{sv}", "0")
    status, script = get(bridge, "/boot/ipxe?mac=aa:bb:cc:00:00:01")
    assert status == 200, script
    kernel = [line for line in script.splitlines() if line.startswith("kernel ")][0]
    settings = dict(re.findall(r"pureboot\.(\w+)=(\S+)", kernel))
    fingerprint = api.prop(f"{ROOT}/ca", "CertificateAuthority", "Fingerprint")
    assert settings["mode"] == "clone_source_direct" and settings["session"] == sid
    assert settings["device"] == "/dev/sda" and settings["ca"] == f"sha256:{fingerprint}"
    assert settings["server"] == f"https://127.0.0.1:{bridge.port}"
    assert settings["client"] == "aa:bb:cc:00:00:01"  # ${mac} from the workflow's cmdline
    assert kernel.startswith(f"kernel https://127.0.0.1:{bridge.port}/boot/files/deploy/vmlinuz ")
    assert f"initrd --name initrd https://127.0.0.1:{bridge.port}/boot/files/deploy/initrd.img" in script
    assert nodes(api)["web-01"][4] == "cloning_source"

    # The token on the command line enrols the node as the session's source.
    key, csr = make_key_and_csr(tmp_path, "pxe")
    r = subprocess.run(["curl", "-s", "--cacert", str(bridge.ca), "-X", "POST",
                        f"{bridge.url}/call/{NODE}Enrol", "--data-binary", "@-"],
                       input=json.dumps({"token": settings["token"], "csr": csr.read_text()}),
                       capture_output=True, text=True)
    reply = json.loads(r.stdout)
    assert reply["role"] == "source" and reply["session"] == sid

    status, script = get(bridge, "/boot/ipxe?mac=aa:bb:cc:00:00:02")
    assert "pureboot.mode=clone_target_direct" in script and "pureboot.device=/dev/sdb" in script
    assert nodes(api)["web-02"][4] == "cloning_target"

    # Once the session is over, neither node is cloning any more; their next boot is their own disk's.
    api.ok(session, "CloneSession", "Cancel", "a{sv}", "0")
    assert nodes(api)["web-01"][4] == "ready" and nodes(api)["web-02"][4] == "ready", nodes(api)
    status, script = get(bridge, "/boot/ipxe?mac=aa:bb:cc:00:00:01")
    assert status == 200 and "pureboot.mode" not in script, script


def test_partition_mode_boots_the_partition_workflow_with_a_node_token(bridge, api, ctl, tmp_path):
    api.node("web-01", "aa:bb:cc:00:00:01")
    assert "\nexit\n" in get(bridge, "/boot/ipxe?mac=aa:bb:cc:00:00:01")[1]
    ctl("node", "set-mode", "web-01", "partition", check=True)
    status, script = get(bridge, "/boot/ipxe?mac=aa:bb:cc:00:00:01")
    settings = dict(re.findall(r"pureboot\.(\w+)=(\S+)", script))
    assert status == 200 and settings["mode"] == "partition" and "session" not in settings
    assert nodes(api)["web-01"][4] == "partitioning"

    # The node token makes a node certificate: CN node-<id>, good for the node's own calls only.
    key, csr = make_key_and_csr(tmp_path, "partition")
    r = subprocess.run(["curl", "-s", "--cacert", str(bridge.ca), "-X", "POST", f"{bridge.url}/call/{NODE}Enrol",
                        "--data-binary", "@-"], input=json.dumps({"token": settings["token"], "csr": csr.read_text()}),
                       capture_output=True, text=True)
    reply = json.loads(r.stdout)
    assert reply["role"] == "node" and reply["session"] is None and reply["node"] == settings["node"]
    (tmp_path / "node.crt").write_text(reply["certificate"])
    info = subprocess.run(["certtool", "--certificate-info", "--infile", tmp_path / "node.crt"], capture_output=True,
                          text=True, check=True).stdout
    assert f"CN=node-{settings['node']}" in info

    # A manual token from purebootctl works the same way, once.
    token = ctl("node", "token", "web-01", check=True).stdout.strip()
    assert len(token) == 48
    ctl("node", "set-mode", "web-01", "local", check=True)
    assert "\nexit\n" in get(bridge, "/boot/ipxe?mac=aa:bb:cc:00:00:01")[1]
    assert ctl("node", "set-mode", "web-01", "reinstall").returncode == 1


def test_pi_boot_answers(bridge, api):
    status, body = get(bridge, "/boot/pi?serial=1000ABCD&mac=dc:a6:32:01:02:03")
    answer = json.loads(body)
    assert status == 200 and answer["action"] == "local_boot" and answer["state"] == "discovered"
    pi = nodes(api)["pi-1000abcd"]
    assert pi[3] == "arm64" and pi[5] == "1000abcd" and pi[2] == "dc:a6:32:01:02:03"

    api.node("web-01", "aa:bb:cc:00:00:01")
    path = api.session("to-pi", "direct", "web-01", "pi-1000abcd", "/dev/sda", "/dev/mmcblk0")
    api.ok(path, "CloneSession", "Start", "a{sv}", "0")
    answer = json.loads(get(bridge, "/boot/pi?serial=1000abcd")[1])
    assert answer["action"] == "deploy_image" and answer["workflow"] == "clone-target-direct"
    assert "pureboot.device=/dev/mmcblk0" in answer["cmdline"] and answer["kernel"] == "deploy/vmlinuz"


def test_every_repo_workflow_loads():
    r = subprocess.run([BRIDGE, f"--check-workflows={REPO / 'workflows'}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    expected = {"clone-source-direct", "clone-target-direct", "clone-source-staged", "clone-target-staged",
                "partition"}
    assert {p.stem for p in (REPO / "workflows").glob("*.yaml")} >= expected
    assert f"{len(list((REPO / 'workflows').glob('*.yaml')))} workflows" in r.stdout


GOOD = ('name: x\nkernel_path: deploy/vmlinuz\ninitrd_path: deploy/initrd.img\narchitecture: x86_64\n'
        'boot_mode: uefi\ninstall_method: deploy\n')
# (case, file name, contents, what the error says)
HOSTILE = [
    ("traversal id", "x.yaml", "id: ../etc\n" + GOOD, "id is required"),
    ("slash id", "x.yaml", "id: a/b\n" + GOOD, "id is required"),
    ("id not the file name", "w.yaml", "id: other\n" + GOOD, "does not match the file name"),
    ("unknown field", "w.yaml", "id: w\nshell: /bin/sh\n" + GOOD, 'unknown field "shell"'),
    ("unknown variable", "w.yaml", "id: w\ncmdline: root=${root}\n" + GOOD, "${root}"),
    ("absolute kernel", "w.yaml", "id: w\n" + GOOD.replace("deploy/vmlinuz", "/etc/shadow"), "kernel_path"),
    ("dotdot kernel", "w.yaml", "id: w\n" + GOOD.replace("deploy/vmlinuz", "../../etc/shadow"), "kernel_path"),
    ("nfs without server", "w.yaml", "id: w\n" + GOOD.replace("install_method: deploy", "install_method: nfs"),
     "nfs_server"),
    ("not yaml", "w.yaml", "id: w\nname: 'unterminated\n", "not valid YAML"),
    ("a list where a value goes", "w.yaml", "id: w\nname: [x]\n", "expected a plain value"),
    ("twice", "w.yaml", "id: w\nid: w\n" + GOOD, "id given twice"),
]


@pytest.mark.parametrize("case", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_bad_workflows_are_refused(tmp_path, case):
    _, name, text, message = case
    (tmp_path / name).write_text(text)
    r = subprocess.run([BRIDGE, f"--check-workflows={tmp_path}"], capture_output=True, text=True)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr


@pytest.fixture
def boot_tree():
    """A boot files directory the bridge's user can read, with a file outside it next to it."""
    top = Path(tempfile.mkdtemp(prefix="pureboot-boot-"))
    try:
        top.chmod(0o755)
        (top / "boot/deploy").mkdir(parents=True)
        (top / "boot/deploy/vmlinuz").write_bytes(os.urandom(3 << 20))
        (top / "boot/deploy/initrd.img").write_bytes(b"initrd")
        (top / "secret").write_text("not for nodes")
        (top / "boot/escape").symlink_to(top / "secret")
        (top / "boot/inside").symlink_to("deploy/initrd.img")
        for p in [top / "boot", top / "boot/deploy", *top.glob("boot/deploy/*"), top / "secret"]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        conf = top / "bridge.conf"
        conf.write_text(f"[Boot]\nPath={top / 'boot'}\n")
        conf.chmod(0o644)
        yield top
    finally:
        shutil.rmtree(top)


def test_boot_files_and_plain_http_for_firmware_without_tls(controller, api, boot_tree, tmp_path):
    """[Boot] Path= is served at /boot/files/ over HTTPS and, for firmware without TLS, over the plain HTTP
    listener, which answers nothing but /boot/; nothing outside Path is reachable."""
    b = Bridge(controller.bus, tmp_path, f"--config={boot_tree / 'bridge.conf'}", http=True).start()
    try:
        def fetch(url, *args):
            r = subprocess.run(["curl", "-s", "--cacert", str(b.ca), "-o", str(tmp_path / "got"), "-w", "%{http_code}",
                                *args, url], capture_output=True, text=True, timeout=30)
            return int(r.stdout), (tmp_path / "got").read_bytes() if (tmp_path / "got").exists() else b""

        kernel = (boot_tree / "boot/deploy/vmlinuz").read_bytes()
        for base in (b.url, b.http_url):
            assert fetch(f"{base}/boot/files/deploy/vmlinuz") == (200, kernel)
            assert fetch(f"{base}/boot/files/inside") == (200, b"initrd")  # a link that stays inside
            for path in ("escape", "../secret", "%2e%2e/secret", "deploy/../../secret", "/etc/passwd", "deploy",
                         "missing", ""):
                status, body = fetch(f"{base}/boot/files/{path}", "--path-as-is")
                assert status == 404 and b"not for nodes" not in body, (base, path, status, body)
            assert fetch(f"{base}/boot/files/deploy/vmlinuz", "-X", "POST")[0] == 405

        # Plain HTTP: the boot answers, and nothing else (no varlink calls, not even the CA).
        for path in ("/ca.crt", "/call/org.varlink.service.GetInfo"):
            status, body = fetch(f"{b.http_url}{path}", "-X", "POST" if path.startswith("/call") else "GET")
            assert status == 404 and b"plain HTTP" in body, (path, body)

        # A boot script asked for over plain HTTP sends the firmware on over plain HTTP; the agent it boots
        # still talks HTTPS to the bridge.
        api.node("web-01", "aa:bb:cc:00:00:01")
        api.node("web-02", "aa:bb:cc:00:00:02")
        session = api.session("plain")
        status, script = fetch(f"{b.http_url}/boot/ipxe?mac=aa:bb:cc:00:00:01")
        assert status == 200 and f"chain {b.http_url}/boot/ipxe?mac=aa:bb:cc:00:00:01".encode() in script
        api.ok(session, "CloneSession", "Start", "a{sv}", "0")
        status, script = fetch(f"{b.http_url}/boot/ipxe?mac=aa:bb:cc:00:00:01")
        script = script.decode()
        assert status == 200 and f"kernel {b.http_url}/boot/files/deploy/vmlinuz " in script, script
        assert f"initrd --name initrd {b.http_url}/boot/files/deploy/initrd.img" in script
        assert f"pureboot.server={b.url} " in script
    finally:
        assert b.stop() == 0, b.log.read_text()


def test_bridge_settings_are_checked(controller, tmp_path):
    """A --config that does not exist, and a listener that is not ADDRESS:PORT, stop the bridge with a reason."""
    missing = Bridge(controller.bus, tmp_path, "--config=/nonexistent/bridge.conf")
    with pytest.raises(AssertionError, match="Failed to read /nonexistent/bridge.conf"):
        missing.start()
    bad = Bridge(controller.bus, tmp_path, "--http-listen=8080")
    with pytest.raises(AssertionError, match="HTTPListen=8080 is not ADDRESS:PORT"):
        bad.start()
    # [Bridge] Address= (what the unit uses instead of --address) is checked as --address is.
    conf = tmp_path / "names.conf"
    conf.write_text("[Bridge]\nHostname=bridge.test\nAddress=bridge.test\n")
    r = subprocess.run([BRIDGE, f"--config={conf}", "--listen=127.0.0.1:0"], env=controller.bus.env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "[Bridge] Address=bridge.test is not an IP address" in r.stderr, r.stderr


def tftp_get(bridge, name, *args):
    """(curl's exit code, what it fetched, its error text) for name from the bridge's TFTP listener."""
    r = subprocess.run(["curl", "-s", "-S", *args, f"tftp://127.0.0.1:{bridge.tftp_port}/{name}"], capture_output=True,
                       timeout=120)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


def tftp_first_packet(bridge, packet):
    """The first packet the bridge's TFTP listener answers packet with: (opcode, the rest)."""
    import socket
    with socket.socket(type=socket.SOCK_DGRAM) as s:
        s.settimeout(10)
        s.sendto(packet, ("127.0.0.1", bridge.tftp_port))
        reply = s.recv(65536)
    return int.from_bytes(reply[:2], "big"), reply[2:]


def tftp_error(bridge, name, mode=b"octet", opcode=1):
    """The error the bridge answers a request for name with: (TFTP error code, message), or None."""
    op, rest = tftp_first_packet(bridge, opcode.to_bytes(2, "big") + name.encode() + b"\0" + mode + b"\0")
    return (int.from_bytes(rest[:2], "big"), rest[2:].rstrip(b"\0").decode()) if op == 5 else None


def tftp_repeated_request(bridge, name, times):
    """name asked for times at once from one port, the blocks acknowledged as they come from the one port
    that must answer; the data."""
    import socket
    with socket.socket(type=socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        for _ in range(times):
            s.sendto(b"\0\1" + name.encode() + b"\0octet\0", ("127.0.0.1", bridge.tftp_port))
        ports, data, done = set(), b"", False
        while True:
            try:
                packet, (_, port) = s.recvfrom(65536)
            except socket.timeout:
                break
            ports.add(port)
            assert packet[:2] == b"\0\3", packet
            block = int.from_bytes(packet[2:4], "big")
            if block == len(data) // 512 + 1 and not done:
                data += packet[4:]
                done = len(packet) - 4 < 512
            s.sendto(b"\0\4" + packet[2:4], ("127.0.0.1", port))
    assert len(ports) == 1 and done, (ports, done)
    return data


def test_tftp_serves_grub_answers_and_boot_files(controller, api, ctl, boot_tree, tmp_path):
    """For boot loaders with TFTP and nothing else (Debian's signed GRUB network image): boot/grub/MAC is the
    controller's answer as a GRUB script, boot/files/ is [Boot] Path=, any other name is under TFTPRoot=;
    nothing outside them is reachable, and nothing is written."""
    root = boot_tree / "tftp"
    (root / "grub").mkdir(parents=True)
    (root / "grub/grub.cfg").write_text("source (tftp,127.0.0.1)/boot/grub/$net_default_mac\n")
    # More blocks than a 16-bit block number counts at the default 512 bytes: the number wraps round.
    (root / "big.efi").write_bytes(os.urandom(33 << 20) + b"tail")
    for p in (root, root / "grub", *root.rglob("*")):
        p.chmod(0o755 if p.is_dir() else 0o644)
    b = Bridge(controller.bus, tmp_path, f"--config={boot_tree / 'bridge.conf'}", f"--tftp-root={root}",
               tftp=True, http=True).start()
    try:
        assert f"Serving TFTP on port {b.tftp_port}" in b.log.read_text()
        # The TFTP root over plain HTTP too, as /boot/NAME, for UEFI HTTP boot: the firmware's URL, and shim's
        # request for the GRUB beside it (with a doubled slash).
        for path, content in (("/boot/big.efi", (root / "big.efi").read_bytes()),
                              ("/boot//grub/grub.cfg", (root / "grub/grub.cfg").read_bytes()),
                              ("/boot/boot/files/inside", b"initrd")):
            r = subprocess.run(["curl", "-sf", "--path-as-is", f"{b.http_url}{path}"], capture_output=True, timeout=60)
            assert r.returncode == 0 and r.stdout == content, (path, r.returncode)
        for path in ("/boot/missing", "/boot/../secret", "/boot/%2e%2e/secret", "/boot//etc/passwd", "/boot/grub/",
                     "/boot/boot/files/escape"):
            r = subprocess.run(["curl", "-s", "--path-as-is", "-w", "\n%{http_code}", f"{b.http_url}{path}"],
                               capture_output=True, text=True, timeout=30)
            assert r.stdout.endswith("\n404") and "not for nodes" not in r.stdout, (path, r.stdout)
        assert tftp_get(b, "grub/grub.cfg")[:2] == (0, (root / "grub/grub.cfg").read_bytes())
        assert tftp_get(b, "/grub/grub.cfg")[:2] == (0, (root / "grub/grub.cfg").read_bytes())  # a leading slash
        kernel = (boot_tree / "boot/deploy/vmlinuz").read_bytes()
        for blksize in (None, "1468", "8"):
            code, body, err = tftp_get(b, "boot/files/deploy/vmlinuz" if blksize != "8" else "boot/files/inside",
                                       *(("--tftp-blksize", blksize) if blksize else ()))
            assert code == 0 and body == (kernel if blksize != "8" else b"initrd"), (blksize, err)
        code, body, err = tftp_get(b, "big.efi")
        assert code == 0 and body == (root / "big.efi").read_bytes(), err
        for name in ("missing", "boot/files/escape", "boot/files/../../secret", "../secret", "boot/files/deploy",
                     "grub"):
            assert tftp_error(b, name) == (1, "no such file"), name
        assert tftp_error(b, "upload", opcode=2) == (4, "this server is read-only")
        assert not (root / "upload").exists() and not (boot_tree / "boot/upload").exists()
        assert tftp_error(b, "grub/grub.cfg", mode=b"netascii") == (4, "only octet mode is served")
        assert tftp_first_packet(b, b"\0\1grub/grub.cfg") == (5, b"\0\0the request has no file name or no mode\0")
        # Options: the blocks are as large as asked for, and tsize is the file's size (RFC 2348, 2349).
        op, rest = tftp_first_packet(b, b"\0\1grub/grub.cfg\0octet\0blksize\x001468\0tsize\x000\0windowsize\x004\0")
        size = (root / "grub/grub.cfg").stat().st_size
        assert (op, rest) == (6, f"blksize\x001468\0tsize\x00{size}\0".encode())

        # An unknown machine: registered, and sent back to its firmware's next boot entry.
        code, script, err = tftp_get(b, "boot/grub/52:54:00:ab:cd:ef")
        script = script.decode()
        # GRUB's exit lands EDK2 firmware in its menu: the disk's OS loader is started from the script.
        assert code == 0 and "chainloader $loader\n" in script and script.endswith("\nexit\n"), err
        for path in ("/EFI/debian/shimx64.efi", "/EFI/Microsoft/Boot/bootmgfw.efi", "/EFI/BOOT/BOOTX64.EFI"):
            assert path in script
        assert nodes(api)["node-525400abcdef"][4] == "discovered"
        code, message = tftp_error(b, "boot/grub/52:54:00:zz:cd:ef")
        assert code == 0 and "not a MAC address" in message, message

        # Partition mode: Debian's kernel and the deploy initrd, by TFTP from this bridge, with the node's
        # token on a command line whose every word GRUB takes as it is.
        api.node("web-01", "aa:bb:cc:00:00:01")
        ctl("node", "set-mode", "web-01", "partition", check=True)
        code, script, err = tftp_get(b, "boot/grub/aa:bb:cc:00:00:01")
        script = script.decode()
        assert code == 0, err
        linux = next(line for line in script.splitlines() if line.startswith("linux "))
        words = linux.split(" ")
        assert words[:2] == ["linux", "(tftp,127.0.0.1)/boot/files/deploy/vmlinuz"], script
        assert all(re.fullmatch(r"'[^' ]+'", w) for w in words[2:]), script
        assert "\ninitrd (tftp,127.0.0.1)/boot/files/deploy/initrd.img\nboot\n" in script
        settings = dict(re.findall(r"'pureboot\.(\w+)=([^' ]+)'", linux))
        assert settings["mode"] == "partition" and len(settings["token"]) == 48
        assert settings["server"] == f"https://127.0.0.1:{b.port}"
        assert nodes(api)["web-01"][4] == "partitioning"
        # The request again before its answer came (GRUB asks again when the controller is slow to answer) is
        # the same transfer: one answer from one port, so one token, the one the client takes.
        assert tftp_repeated_request(b, "boot/grub/aa:bb:cc:00:00:01", 3).count(b"'pureboot.token=") == 1
        # The same answer over HTTP, for GRUB builds that have it.
        status, body = get(b, "/boot/grub?mac=aa:bb:cc:00:00:01")
        assert status == 200 and body.splitlines()[0] == script.splitlines()[0] and "\nboot\n" in body
    finally:
        assert b.stop() == 0, b.log.read_text()
