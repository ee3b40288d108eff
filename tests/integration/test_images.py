# SPDX-License-Identifier: MIT
"""The image library against a real nfs-ganesha: a staged session keeps its upload as an image, one session
deploys that image to several targets (each its own agent in a network namespace, each checked against the
image's digest) in a chain — the first reads the staging area, each other one pulls from the one before it —
and the image's data stays until the image itself is deleted, which is refused while a session uses it."""

import json
import os
import re
import sqlite3
import subprocess
import time
from types import SimpleNamespace

import pytest

from harness import PUREBOOTCTL, Bridge, Controller, make_key_and_csr, stop_all, wait_for
from nodes import (Agent, Clone, Network, ca_fingerprint, check_files, check_root_last_disk, cmdline,
                   make_blank_disk, make_random_disk, make_root_last_disk, make_source_disk, random_file, sh)
from storage_servers import NfsServer
from test_clone import another_sessions_target

ROOT = "/org/pureboot/Controller1"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    directory = tmp_path_factory.mktemp("servers")
    with Network(index=5) as net, NfsServer(net, directory) as nfs:
        yield type("Servers", (), {"network": net, "nfs": nfs, "dir": directory})


@pytest.fixture(autouse=True)
def controller(system_bus, tmp_path, servers):
    c = Controller(system_bus, tmp_path).start()
    yield c
    c.stop()


@pytest.fixture
def bridge(controller, tmp_path, servers):
    b = Bridge(controller.bus, tmp_path, address=servers.network.address).start()
    yield b
    b.stop()


def image_path(api, name):
    return api.ok(ROOT, "Manager", "GetImage", "s", name)[0]


def areas(servers):
    top = servers.nfs.export / "pureboot"
    return sorted(p.name for p in top.iterdir()) if top.exists() else []


def deploy_agents(ctl, servers, bridge, tmp_path, session, nodes, prefix="d", head_args=()):
    """An agent per target of session (nodes: [(hostname, device)], in target order), not started; their
    namespaces are named prefix<n>, unique on the module's network. head_args: the first one's options."""
    agents = []
    for index, (hostname, device) in enumerate(nodes, 1):
        ns, _ = servers.network.node(f"{prefix}{index}")
        token = ctl("clone", "token", session, f"--target={index}", check=True).stdout.strip()
        agents.append(Agent(tmp_path, f"deploy-{index}", ns,
                            cmdline("clone_target_staged", session, hostname, bridge.url, token,
                                    ca_fingerprint(bridge.ca), device), *(head_args if index == 1 else ())))
    return agents


def readers_of_the_store(agents):
    """The agents that read the staging area themselves."""
    return [i for i, a in enumerate(agents, 1) if "Reading the image from the staging area" in a.text()]


def capture(ctl, api, servers, bridge, tmp_path, name, source, storage, agents):
    """image capture of source (a loop device) into storage, through a source agent in its own namespace."""
    api.ok(ROOT, "Manager", "RegisterNode", "sssa{sv}", f"{name}-src", "aa:bb:cc:00:31:01", "x86_64", "0")
    session = ctl("image", "capture", name, f"--source={name}-src", f"--source-device={source.device}",
                  f"--storage={storage}", check=True).stdout.strip()
    ns, _ = servers.network.node(f"{name}-cap")
    token = ctl("clone", "token", session, "--role=source", check=True).stdout.strip()
    agent = Agent(tmp_path, f"{name}-capture", ns, cmdline("clone_source_staged", session, f"{name}-src", bridge.url,
                                                           token, ca_fingerprint(bridge.ca), source.device))
    agents.append(agent)
    agent.start()
    assert agent.wait(180) == 0, agent.text()
    path = image_path(api, name)
    wait_for(lambda: api.prop(path, "Image", "State") == "ready", what=f"image {name} to be ready")
    return path


def run_to_end(api, spath, agents, timeout):
    """Starts the agents of session spath and waits for it to complete."""
    for a in agents:
        a.start()
    wait_for(lambda: api.prop(spath, "CloneSession", "Status") in ("completed", "failed"), timeout=timeout,
             what="the deploy to end", interval=0.5)
    assert api.prop(spath, "CloneSession", "Status") == "completed", \
        (api.prop(spath, "CloneSession", "Error"), [a.text()[-2000:] for a in agents])


def test_capture_alone_then_deploy_to_four_the_middle_one_killed(ctl, api, servers, bridge, controller, tmp_path):
    """image capture: a session whose only target is the image (it completes once the image is ready); then
    the image to four machines in one session, one of them 1.5 times as large, which grows its root. The
    second dies mid-stream: the third is relinked to the first and completes; the second, started again,
    rejoins at the tail and resumes from its journal."""
    ctl("storage", "add", "shelf", "--type=nfs", *servers.nfs.config(), check=True)
    loops, agents = [], []
    try:
        source, files = make_root_last_disk(tmp_path, loops)
        api.ok(ROOT, "Manager", "RegisterNode", "sssa{sv}", "golden-src", "aa:bb:cc:00:30:01", "x86_64", "0")
        r = ctl("image", "capture", "base", "--source=golden-src", "--source-device=/dev/nonsense/../sda",
                "--storage=shelf")
        assert r.returncode != 0 and "not a device path" in r.stderr, r.stderr
        assert ctl("image", "list", "--json=short", check=True).stdout.strip() in ("", "[]")
        session = ctl("image", "capture", "base", "--source=golden-src", f"--source-device={source.device}",
                      "--storage=shelf", check=True).stdout.strip()
        spath = f"{ROOT}/clone/{session}"
        path = image_path(api, "base")
        assert api.prop(spath, "CloneSession", "Status") == "waiting"
        assert api.prop(spath, "CloneSession", "Targets") == []
        assert api.prop(spath, "CloneSession", "KeepAs") == "base"
        assert api.prop(path, "Image", "Sessions") == [spath]
        ns, _ = servers.network.node("cap")
        token = ctl("clone", "token", session, "--role=source", check=True).stdout.strip()
        capture = Agent(tmp_path, "capture", ns, cmdline("clone_source_staged", session, "golden-src", bridge.url,
                                                         token, ca_fingerprint(bridge.ca), source.device))
        agents.append(capture)
        capture.start()
        assert capture.wait(180) == 0, capture.text()
        wait_for(lambda: api.prop(spath, "CloneSession", "Status") != "cloning", what="the capture to end")
        assert api.prop(spath, "CloneSession", "Status") == "completed", api.prop(spath, "CloneSession", "Error")
        assert api.prop(path, "Image", "State") == "ready"
        assert api.prop(path, "Image", "SizeBytes") == 1 << 30
        wait_for(lambda: api.prop(spath, "CloneSession", "StagingStatus") == "kept", what="the staging to be kept")
        assert session in areas(servers)

        sizes = (("same-1", 1 << 30), ("same-2", 1 << 30), ("same-3", 1 << 30), ("large", 1536 << 20))
        targets = []
        for n, (name, size) in enumerate(sizes, 1):
            api.ok(ROOT, "Manager", "RegisterNode", "sssa{sv}", name, f"aa:bb:cc:00:30:1{n}", "x86_64", "0")
            targets.append((name, make_blank_disk(tmp_path, loops, name, size)))
        deploy = ctl("image", "deploy", "base", "--resize=grow_target", *(f"--target={n}" for n, _ in targets),
                     *(f"--target-device={loop.device}" for _, loop in targets), check=True).stdout.strip()
        dpath = f"{ROOT}/clone/{deploy}"
        deployed = deploy_agents(ctl, servers, bridge, tmp_path, deploy, [(n, loop.device) for n, loop in targets],
                                 prefix="g", head_args=("--max-rate=40M",))
        agents += deployed
        target = lambda i, prop: api.prop(f"{dpath}/target/{i}", "CloneTarget", prop)  # noqa: E731
        for a in deployed:
            a.start()
        wait_for(lambda: target(3, "BytesTransferred") > 160 << 20, timeout=90, what="the chain to be under way")
        assert [target(i, "Upstream") for i in (2, 3, 4)] == [1, 2, 3]
        deployed[1].kill()
        wait_for(lambda: target(3, "Upstream") == 1, timeout=30,
                 what=f"target 3 to be relinked:\n{deployed[2].text()[-2000:]}")
        assert f"Lost clone-{deploy}-target-2, our upstream in the chain" in deployed[2].text()
        deployed[1].start()
        run_to_end(api, dpath, [], 240)
        for a in deployed:
            assert a.wait(60) == 0, a.text()
        # The second, back, resumed from its journal, pulling from a target (the last in the line).
        again = deployed[1].text().split("--- run 2", 1)[1]
        assert re.search(r"Resuming at offset [1-9]", again), again[-2000:]
        # A chain: the first read the staging area, and each forwarded to the next.
        assert readers_of_the_store(deployed) == [1], [a.text()[-2000:] for a in deployed]
        for a in (deployed[0], deployed[2]):
            assert re.search(r"A downstream's stream ended at 1.0 GiB", a.text()), a.text()[-2000:]
        for (name, loop), root in zip(targets, [(1023 - 65) << 20] * 3 + [(1535 - 65) << 20]):
            check_root_last_disk(loop, files, tmp_path, root)
        # A byte of the stored image damaged: a check finds where, the image is broken, deploys are refused.
        on_export = sum(p.stat().st_size for p in (servers.nfs.export / "pureboot" / session).iterdir())
        assert api.prop(path, "Image", "StoredBytes") == on_export
        # A check measures it again: a value lost (as for an image captured before it was counted) comes back.
        assert controller.stop() == 0, controller.log.read_text()
        with sqlite3.connect(controller.state / "pureboot.db") as db:
            db.execute("UPDATE images SET stored_bytes = 0")
        controller.start()
        assert api.prop(path, "Image", "StoredBytes") == 0
        r = ctl("image", "verify", "base", check=True)
        assert "is whole" in r.stdout and api.prop(path, "Image", "VerifiedAt") > 0, r.stdout
        assert api.prop(path, "Image", "StoredBytes") == on_export
        stored = servers.nfs.export / "pureboot" / session / "disk.img.zst"
        with open(stored, "r+b") as f:
            f.seek(os.path.getsize(stored) // 3)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x5A]))
        r = ctl("image", "verify", "base")
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert api.prop(path, "Image", "State") == "broken"
        error = api.prop(path, "Image", "VerifyError")
        assert error.startswith("Damaged: ") and ("the chunk at" in error or "does not decompress" in error), error
        assert error in r.stderr
        r = ctl("image", "deploy", "base", "--target=same-1", f"--target-device={targets[0][1].device}")
        assert r.returncode != 0 and "is broken" in r.stderr, r.stderr
        ctl("image", "delete", "base", check=True)
        assert session not in areas(servers)
    finally:
        stop_all(agents)
        for loop in loops:
            loop.detach()


def test_capture_keep_deploy_to_two_and_delete(ctl, api, servers, bridge, tmp_path):
    ctl("storage", "add", "library", "--type=nfs", *servers.nfs.config(), check=True)
    loops, agents = [], []
    try:
        source, files = make_source_disk(tmp_path)
        loops.append(source)
        size = os.path.getsize(source.backing)
        first = make_random_disk(tmp_path, "first", size)
        loops.append(first)

        # Capture: a staged session with --keep-as; its name is reserved from the start.
        c = Clone(tmp_path, ctl, api, servers.network, bridge, source.device, first.device, mode="staged",
                  storage="library", tag="c", create_args=("--keep-as=golden",))
        agents += c.agents.values()
        path = image_path(api, "golden")
        assert api.prop(path, "Image", "State") == "capturing"
        assert c.prop("KeepAs") == "golden"
        r = ctl("clone", "create", "--name=again", "--mode=staged", "--source=src-node", "--target=tgt-node",
                f"--source-device={source.device}", f"--target-device={first.device}", "--storage=library",
                "--keep-as=golden")
        assert r.returncode != 0 and "There is an image named golden already" in r.stderr, r.stderr
        r = ctl("image", "delete", "golden")
        assert r.returncode != 0 and "being captured by session" in r.stderr, r.stderr
        c.source.start()
        c.target.start()
        c.wait_status("completed", "failed", timeout=180)
        assert c.status() == "completed", (c.prop("Error"), c.source.text()[-2000:], c.target.text()[-2000:])
        check_files(first, files, tmp_path)

        # The upload is the image's now: the session says so, and its area stays on the export.
        assert api.prop(path, "Image", "State") == "ready"
        assert api.prop(path, "Image", "Digest") == c.prop("SourceDigest")
        assert api.prop(path, "Image", "SizeBytes") == size
        assert api.prop(path, "Image", "SourceDevice") == source.device
        assert api.prop(path, "Image", "SourceHostname") == "src-node"
        assert api.prop(path, "Image", "CaptureSession") == c.id
        layout = json.loads(api.prop(path, "Image", "Layout"))
        assert [p["number"] for p in layout["partitions"]] == [1, 2], layout
        wait_for(lambda: c.prop("StagingStatus") == "kept", what="the session to say its staging is kept")
        assert c.id in areas(servers)
        manifest = json.loads((servers.nfs.export / "pureboot" / c.id / "manifest.json").read_text())
        assert manifest["digest"] == api.prop(path, "Image", "Digest")
        listed = ctl("image", "list", check=True).stdout
        assert "golden" in listed and "ready" in listed and "library" in listed, listed
        ctl("clone", "delete", c.id, check=True)
        assert c.id in areas(servers), "deleting the capturing session leaves the image"

        # Deploy to two machines in one session, each target checked against the image.
        targets = []
        for n in (1, 2):
            loop = make_random_disk(tmp_path, f"deploy{n}", size)
            loops.append(loop)
            api.ok(ROOT, "Manager", "RegisterNode", "sssa{sv}", f"dep{n}", f"aa:bb:cc:00:20:0{n}", "x86_64", "0")
            targets.append((f"dep{n}", loop))
        # A target that does not exist: nothing is left half made.
        r = ctl("image", "deploy", "golden", "--target=dep1", "--target=nobody", f"--target-device={first.device}")
        assert r.returncode == 4 and "No node" in r.stderr and "removed again" in r.stderr, r.stderr
        assert api.prop(path, "Image", "Sessions") == []
        r = ctl("image", "deploy", "golden", "--name=rollout", "--target=dep1", "--target=dep2",
                *(f"--target-device={loop.device}" for _, loop in targets), check=True)
        session = r.stdout.strip()
        spath = f"{ROOT}/clone/{session}"
        assert api.prop(spath, "CloneSession", "Image") == api.prop(path, "Image", "Id")
        assert api.prop(spath, "CloneSession", "SourceNode") == ""
        assert api.prop(path, "Image", "Sessions") == [spath]
        # Its targets need no source: the image is ready, so they are too.
        assert api.prop(spath, "CloneSession", "Status") == "source_ready"
        r = ctl("clone", "token", session, "--role=source")
        assert r.returncode != 0 and "no source node" in r.stderr, r.stderr
        _, csr = make_key_and_csr(tmp_path, "image-source")
        r = ctl("ca", "issue", session, "--csr", csr, "--role", "source")
        assert r.returncode != 0 and "no source node to certify" in r.stderr, r.stderr
        r = ctl("image", "delete", "golden")
        assert r.returncode != 0 and "used by clone sessions" in r.stderr, r.stderr
        deployed = deploy_agents(ctl, servers, bridge, tmp_path, session, [(h, loop.device) for h, loop in targets])
        agents += deployed
        run_to_end(api, spath, deployed, 180)
        digest = api.prop(path, "Image", "Digest")
        for index, (hostname, loop) in enumerate(targets, 1):
            target = f"{spath}/target/{index}"
            assert api.prop(target, "CloneTarget", "Status") == "completed"
            assert api.prop(target, "CloneTarget", "Digest") == digest
            check_files(loop, files, tmp_path)
        for a in deployed:
            assert a.wait(60) == 0, a.text()
        wait_for(lambda: api.prop(spath, "CloneSession", "StagingStatus") == "kept", what="the deploy to keep it")
        assert c.id in areas(servers), "a deploy leaves the image's data"

        # Rename and describe; then delete, which removes the data.
        ctl("image", "rename", "golden", "golden-2026", check=True)
        ctl("image", "describe", "golden-2026", "Debian 12 lab image", check=True)
        assert api.prop(path, "Image", "Name") == "golden-2026"
        assert api.prop(path, "Image", "Description") == "Debian 12 lab image"
        r = ctl("image", "rename", "golden-2026", "../etc")
        assert r.returncode != 0 and "image name" in r.stderr, r.stderr
        ctl("image", "delete", "golden-2026", check=True)
        assert c.id not in areas(servers)
        r = ctl("image", "show", "golden-2026")
        assert r.returncode == 4, r.stderr
        # The finished deploy keeps its record, without the image.
        assert api.prop(spath, "CloneSession", "Status") == "completed"
    finally:
        stop_all(agents)
        for loop in loops:
            loop.detach()


def test_controller_restarts_during_a_capture(ctl, api, servers, bridge, controller, tmp_path):
    """The name reserved, the upload under way, the controller restarted: the source's reports wait in its
    queue, and the capture ends with the image ready."""
    ctl("storage", "add", "vault", "--type=nfs", *servers.nfs.config(), check=True)
    source, files = make_source_disk(tmp_path)
    agent = None
    try:
        api.ok(ROOT, "Manager", "RegisterNode", "sssa{sv}", "vault-src", "aa:bb:cc:00:40:01", "x86_64", "0")
        session = ctl("image", "capture", "vaulted", "--source=vault-src", f"--source-device={source.device}",
                      "--storage=vault", check=True).stdout.strip()
        spath = f"{ROOT}/clone/{session}"
        ns, _ = servers.network.node("rst")
        token = ctl("clone", "token", session, "--role=source", check=True).stdout.strip()
        agent = Agent(tmp_path, "capture", ns, cmdline("clone_source_staged", session, "vault-src", bridge.url,
                                                       token, ca_fingerprint(bridge.ca), source.device),
                      "--max-rate=40M").start()
        wait_for(lambda: 0 < api.prop(spath, "CloneSession", "BytesUploaded") < 160 << 20, timeout=60,
                 what="the upload to be under way")
        controller.restart()
        assert api.prop(image_path(api, "vaulted"), "Image", "State") == "capturing"
        assert agent.wait(180) == 0, agent.text()
        wait_for(lambda: api.prop(spath, "CloneSession", "Status") == "completed", timeout=30,
                 what="the capture to complete")
        path = image_path(api, "vaulted")
        assert api.prop(path, "Image", "State") == "ready"
        assert api.prop(path, "Image", "Digest") == api.prop(spath, "CloneSession", "SourceDigest")
        ctl("image", "delete", "vaulted", check=True)
        assert session not in areas(servers)
    finally:
        stop_all([agent] if agent else [])
        source.detach()


def random_deploy(ctl, api, servers, bridge, tmp_path, name, storage, prefix, head_rate, loops, agents):
    """A 256 MiB disk of random bytes captured as image name on storage, then a session deploying it to three
    blank machines (nodes and namespaces prefix<n>), their agents made but not started; the first reads at
    most head_rate."""
    source = make_random_disk(tmp_path, f"{name}-golden", 256 << 20)
    loops.append(source)
    image = capture(ctl, api, servers, bridge, tmp_path, name, source, storage, agents)
    targets = []
    for n in (1, 2, 3):
        api.node(f"{prefix}{n}", f"aa:bb:cc:{ord(prefix[0]):02x}:00:0{n}")
        targets.append((f"{prefix}{n}", make_blank_disk(tmp_path, loops, f"{prefix}{n}", 256 << 20)))
    deploy = ctl("image", "deploy", name, *(f"--target={n}" for n, _ in targets),
                 *(f"--target-device={loop.device}" for _, loop in targets), check=True).stdout.strip()
    deployed = deploy_agents(ctl, servers, bridge, tmp_path, deploy, [(n, loop.device) for n, loop in targets],
                             prefix=prefix, head_args=(f"--max-rate={head_rate}",))
    agents += deployed
    return SimpleNamespace(id=deploy, path=f"{ROOT}/clone/{deploy}", image=image, source=source, targets=targets,
                           agents=deployed,
                           target=lambda i, prop: api.prop(f"{ROOT}/clone/{deploy}/target/{i}", "CloneTarget", prop))


def deploy_completes(api, d, timeout=180):
    """The session ends completed, every agent exits 0, and every target is the image, byte for byte."""
    wait_for(lambda: api.prop(d.path, "CloneSession", "Status") in ("completed", "failed"), timeout=timeout,
             what="the deploy to end", interval=0.5)
    assert api.prop(d.path, "CloneSession", "Status") == "completed", \
        (api.prop(d.path, "CloneSession", "Error"), [a.text()[-2000:] for a in d.agents])
    for a in d.agents:
        assert a.wait(60) == 0, a.text()[-3000:]
    digest = api.prop(d.image, "Image", "Digest")
    for i, (_, loop) in enumerate(d.targets, 1):
        assert d.target(i, "Digest") == digest
        sh("cmp", d.source.device, loop.device)


def test_the_head_of_a_deploy_killed(ctl, api, servers, bridge, tmp_path):
    """An image to three machines: the first reads the staging area, the others pull from the one before. The
    first dies mid-stream: the second reads the staging area itself from where its journal says; the first,
    started again, rejoins at the tail, pulls from the last and resumes from its own journal."""
    ctl("storage", "add", "shelf", "--type=nfs", *servers.nfs.config(), check=True)
    loops, agents = [], []
    try:
        d = random_deploy(ctl, api, servers, bridge, tmp_path, "noise", "shelf", "k", "24M", loops, agents)
        for a in d.agents:
            a.start()
        wait_for(lambda: d.target(2, "BytesTransferred") > 48 << 20, timeout=90, what="the chain to be under way")
        assert d.target(2, "Upstream") == 1 and d.target(3, "Upstream") == 2
        d.agents[0].kill()
        wait_for(lambda: d.target(2, "Upstream") == 0, timeout=30,
                 what=f"target 2 to be relinked:\n{d.agents[1].text()[-2000:]}")
        wait_for(lambda: "Now reading from the staging area." in d.agents[1].text(), timeout=10,
                 what=f"target 2 to read the staging area:\n{d.agents[1].text()[-2000:]}")
        assert f"Lost clone-{d.id}-target-1, our upstream in the chain" in d.agents[1].text()
        d.agents[0].start()
        deploy_completes(api, d)
        # The first, back, pulled from a target (the last in the line) from where its journal said.
        first = d.agents[0].text().split("--- run 2", 1)[1]
        assert re.search(r"Resuming at offset [1-9]", first), first[-2000:]
        assert "Reading the image from the staging area" not in first, first[-2000:]
        assert readers_of_the_store(d.agents) == [1, 2]
    finally:
        stop_all(agents)
        for loop in loops:
            loop.detach()


def staging_request(bridge, cert, key, method, name, data=None, offset=None):
    """curl on the bridge's /staging/NAME with a clone certificate: (HTTP status, body)."""
    url = f"{bridge.url}/staging/{name}" + (f"?offset={offset}" if offset is not None else "")
    argv = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert", str(bridge.ca), "--cert", str(cert),
            "--key", str(key), "-X", method, url]
    if data is not None:
        argv += ["--data-binary", data]
    r = subprocess.run(argv, capture_output=True, text=True)
    body, _, status = r.stdout.rpartition("\n")
    return int(status or 0), body


def test_the_local_backend(ctl, api, servers, bridge, tmp_path):
    """No storage server: the image lives in a directory on the controller's host, which the bridge serves over
    the same mutual TLS, only to the certificates of the session that uses it (the source writes while it
    uploads, its targets read once it is whole). Captured, deployed to two machines in a chain, verified on
    the controller's host, then a damaged byte makes it broken."""
    top = tmp_path / "images"
    r = ctl("storage", "add", "nowhere", "--type=local", "path=relative/dir")
    assert r.returncode != 0 and "absolute path" in r.stderr, r.stderr
    ctl("storage", "add", "here", "--type=local", f"path={top}", check=True)
    r = ctl("storage", "test", "here", check=True)
    assert "probe file was written, read back and removed" in r.stdout, r.stdout
    loops, agents = [], []
    try:
        source, files = make_source_disk(tmp_path)
        loops.append(source)
        # Free space that held data once: 96 MiB of random bytes written to the root, then deleted.
        mnt = tmp_path / "fill"
        mnt.mkdir()
        sh("mount", source.partition(1), mnt)
        try:
            random_file(mnt / "scratch.bin", 96 << 20)
            sh("sync")
            (mnt / "scratch.bin").unlink()
        finally:
            sh("umount", mnt)
        path = capture(ctl, api, servers, bridge, tmp_path, "homemade", source, "here", agents)
        area = top / api.prop(path, "Image", "CaptureSession")
        assert sorted(p.name for p in area.iterdir()) == ["disk.img.zst", "manifest.json"]
        # What the filesystems use (48 MiB of random files), not what they once held.
        stored = os.path.getsize(area / "disk.img.zst")
        assert 48 << 20 < stored < 64 << 20, stored
        assert api.prop(path, "Image", "StoredBytes") == stored + os.path.getsize(area / "manifest.json")
        assert json.loads((area / "manifest.json").read_text())["digest"] == api.prop(path, "Image", "Digest")

        size = os.path.getsize(source.backing)
        targets = []
        for n in (1, 2):
            api.ok(ROOT, "Manager", "RegisterNode", "sssa{sv}", f"loc{n}", f"aa:bb:cc:00:33:0{n}", "x86_64", "0")
            targets.append((f"loc{n}", make_random_disk(tmp_path, f"loc{n}", size)))
            loops.append(targets[-1][1])
        deploy = ctl("image", "deploy", "homemade", *(f"--target={h}" for h, _ in targets),
                     *(f"--target-device={loop.device}" for _, loop in targets), check=True).stdout.strip()
        dpath = f"{ROOT}/clone/{deploy}"
        # A certificate reaches only its own session's area: another session's sees none.
        other, cert, key = another_sessions_target(api, ctl, bridge, tmp_path)
        status, body = staging_request(bridge, cert, key, "GET", "manifest.json")
        assert status == 409 and "does not stage on a local backend" in body, (status, body)
        ctl("clone", "cancel", other, check=True)

        deployed = deploy_agents(ctl, servers, bridge, tmp_path, deploy, [(h, loop.device) for h, loop in targets],
                                 prefix="l")
        agents += deployed
        run_to_end(api, dpath, deployed, 180)
        for a in deployed:
            assert a.wait(60) == 0, a.text()[-3000:]
        assert readers_of_the_store(deployed) == [1], [a.text()[-2000:] for a in deployed]
        assert "Reading the image from the staging area (local) from 0 B on." in deployed[0].text()
        digest = api.prop(path, "Image", "Digest")
        for i, (_, loop) in enumerate(targets, 1):
            assert api.prop(f"{dpath}/target/{i}", "CloneTarget", "Digest") == digest
            check_files(loop, files, tmp_path)
        # A target's certificate never writes; once its session is over it reads nothing either.
        cert, key = deployed[0].state / "cert.pem", deployed[0].state / "key.pem"
        status, body = staging_request(bridge, cert, key, "PUT", "manifest.json.partial", data="{}", offset=0)
        assert status == 403 and "Only the source" in body, (status, body)
        status, body = staging_request(bridge, cert, key, "GET", "manifest.json")
        assert status == 409 and "is completed" in body, (status, body)

        # Checked on the controller's host, then damaged there.
        r = ctl("image", "verify", "homemade", check=True)
        assert "is whole" in r.stdout, r.stdout
        stored = area / "disk.img.zst"
        with open(stored, "r+b") as f:
            f.seek(os.path.getsize(stored) // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x5A]))
        r = ctl("image", "verify", "homemade")
        assert r.returncode == 1 and api.prop(path, "Image", "State") == "broken", (r.stdout, r.stderr)
        ctl("image", "delete", "homemade", check=True)
        assert not area.exists()
    finally:
        stop_all(agents)
        for loop in loops:
            loop.detach()


def test_the_controller_stopped_mid_deploy(ctl, api, servers, bridge, controller, tmp_path):
    """An image on the local backend to three machines; the controller and the bridge stop for 30 s mid-deploy.
    The first cannot read the image meanwhile (its reads go through the bridge) and tries again; the others
    go on from the targets before them. Once both are back every target completes, and no report is lost."""
    ctl("storage", "add", "here", "--type=local", f"path={tmp_path / 'images'}", check=True)
    loops, agents = [], []
    try:
        d = random_deploy(ctl, api, servers, bridge, tmp_path, "outage", "here", "o", "8M", loops, agents)
        for a in d.agents:
            a.start()
        wait_for(lambda: d.target(3, "BytesTransferred") > 16 << 20, timeout=90, what="the chain to be under way")
        bridge.stop()
        assert controller.stop() == 0
        time.sleep(30)
        controller.start()
        bridge.start()
        deploy_completes(api, d, timeout=240)
        head = d.agents[0].text()
        assert "Reading the image from the staging area stopped at" in head, head[-3000:]
        assert readers_of_the_store(d.agents) == [1]
        for a in d.agents:
            assert not list((a.state / "queue").iterdir()), f"reports left in {a.state}/queue"
    finally:
        stop_all(agents)
        for loop in loops:
            loop.detach()


def partclone_of(part, compress, out, split=None):
    """partclone's image of a partition (by its filesystem, as Clonezilla and FOG pick the program), through
    compress (gzip or zstd), into out, or split into pieces named out + aa, ab, … of split bytes."""
    fs = sh("blkid", "-o", "value", "-s", "TYPE", part).stdout.strip()
    pipe = f"partclone.{fs} -c -q -s {part} -o - -L /dev/null | {compress} -c"
    pipe += f" | split -b {split} - {out}" if split else f" > {out}"
    sh("sh", "-c", pipe)
    return fs


def clonezilla_image(directory, loop):
    """A Clonezilla image of the disk (savedisk: disk, parts, the sfdisk dump, the MBR, each partition by
    partclone through gzip, split into 16 MiB pieces) in directory."""
    directory.mkdir()
    dump = sh("sfdisk", "--dump", loop.device).stdout.replace(loop.device, "/dev/sda")
    (directory / "sda-pt.sf").write_text(dump)
    (directory / "disk").write_text("sda\n")
    (directory / "parts").write_text("sda1 sda2\n")
    (directory / "clonezilla-img").write_text("This is a Clonezilla image directory.\n")
    sh("dd", f"if={loop.device}", f"of={directory / 'sda-mbr'}", "bs=512", "count=1", "status=none")
    for n in (1, 2):
        fs = sh("blkid", "-o", "value", "-s", "TYPE", loop.partition(n)).stdout.strip()
        partclone_of(loop.partition(n), "gzip", directory / f"sda{n}.{fs}-ptcl-img.gz.", split="16M")
    return directory


def fog_image(directory, loop):
    """A FOG image of the disk (d1.partitions, d1.mbr, d1p<N>.img by partclone through zstd) in directory."""
    directory.mkdir()
    (directory / "d1.partitions").write_text(sh("sfdisk", "--dump", loop.device).stdout
                                             .replace(loop.device, "/dev/sda"))
    sh("dd", f"if={loop.device}", f"of={directory / 'd1.mbr'}", "bs=512", "count=1", "status=none")
    for n in (1, 2):
        partclone_of(loop.partition(n), "zstd", directory / f"d1p{n}.img")
    return directory


def hostile_images(tmp_path, good):
    """Six Clonezilla image directories, each made from good with one thing wrong, and what the refusal says."""
    made = []

    def variant(name, change, expect):
        d = tmp_path / f"hostile-{name}"
        sh("cp", "-a", good, d)
        change(d)
        made.append((name, d, expect))

    def table_with(d, old, new):
        text = (d / "sda-pt.sf").read_text()
        assert old in text, text
        (d / "sda-pt.sf").write_text(text.replace(old, new, 1))

    variant("path", lambda d: (d / "parts").write_text("sda1 ../../etc/shadow\n"), "not a partition's name")
    def link(d):
        for p in d.glob("sda2.*"):
            p.unlink()
        (d / "sda2.vfat-ptcl-img.gz.aa").symlink_to("/etc/shadow")

    variant("link", link, "symbolic link")
    variant("cut", lambda d: [p.unlink() for p in sorted(d.glob("sda1.*-ptcl-img.gz.*"))[1:]], "partition sda1")
    # Partition 1 said to be 32 MiB: partclone's image of its 160 MiB filesystem does not fit.
    variant("size", lambda d: table_with(d, "size=      327680", "size=       65536"), "smaller than source")
    variant("missing", lambda d: [p.unlink() for p in d.glob("sda2.*")], "no image of partition sda2")
    variant("table", lambda d: table_with(d, "start=        2048", "start=   999999999"), "sfdisk refused")
    return made


def test_import_clonezilla_and_fog_export_and_hostile_input(ctl, api, servers, bridge, controller, system_bus,
                                                           tmp_path):
    """A Clonezilla image (partclone, gzip, split) and a FOG image (partclone, zstd) of one disk, made by those
    tools' own programs, imported into the local backend through sfdisk and partclone.restore: both give the
    same image; deployed, the target's filesystems check clean and every file matches. Exported to one file
    and imported back, it has the same digest. Six hostile directories and a damaged export are refused, and
    nothing of them is left: no image, no staging area, no work directory."""
    top, work = tmp_path / "images", tmp_path / "work"
    ctl("storage", "add", "here", "--type=local", f"path={top}", check=True)
    loops, agents = [], []
    try:
        source, files = make_source_disk(tmp_path)
        loops.append(source)
        size = os.path.getsize(source.backing)
        cz = clonezilla_image(tmp_path / "clonezilla", source)
        fog = fog_image(tmp_path / "fog", source)
        assert len(list(cz.glob("sda1.ext4-ptcl-img.gz.*"))) > 1, "the partition is split into pieces"

        r = ctl("image", "import", "from-clonezilla", str(cz))
        assert r.returncode != 0 and "--storage" in r.stderr, r.stderr
        ctl("image", "import", "from-clonezilla", str(cz), "--storage=here", check=True)
        path = image_path(api, "from-clonezilla")
        assert api.prop(path, "Image", "State") == "ready"
        assert api.prop(path, "Image", "SizeBytes") == size
        area = top / api.prop(path, "Image", "Id")
        assert api.prop(path, "Image", "StoredBytes") == sum(p.stat().st_size for p in area.iterdir())
        assert api.prop(path, "Image", "Description") == "Imported from a Clonezilla image of sda (2 partitions)."
        layout = json.loads(api.prop(path, "Image", "Layout"))
        assert [(p["number"], p.get("filesystem")) for p in layout["partitions"]] == [(1, "ext4"), (2, "vfat")]
        digest = api.prop(path, "Image", "Digest")
        ctl("image", "import", "from-fog", str(fog), "--storage=here", "--description=FOG lab image", check=True)
        fpath = image_path(api, "from-fog")
        assert api.prop(fpath, "Image", "Digest") == digest, "both tools' images of one disk are one image"
        assert api.prop(fpath, "Image", "Description") == "FOG lab image"
        assert not list(work.iterdir()), "an import leaves its work directory behind"

        # Deployed: what partclone restored is the disk, file for file.
        api.node("imported", "aa:bb:cc:00:35:01")
        target = make_blank_disk(tmp_path, loops, "imported", size)
        session = ctl("image", "deploy", "from-clonezilla", "--target=imported", f"--target-device={target.device}",
                      check=True).stdout.strip()
        deployed = deploy_agents(ctl, servers, bridge, tmp_path, session, [("imported", target.device)], prefix="z")
        agents += deployed
        run_to_end(api, f"{ROOT}/clone/{session}", deployed, 180)
        check_files(target, files, tmp_path)

        # One file out, the same image back in.
        exported = tmp_path / "from-fog.pbimg"
        ctl("image", "export", "from-fog", str(exported), check=True)
        r = ctl("image", "export", "from-fog", str(exported))
        assert r.returncode != 0 and "exists" in r.stderr, r.stderr
        ctl("image", "import", "round-trip", str(exported), "--storage=here", check=True)
        rpath = image_path(api, "round-trip")
        assert api.prop(rpath, "Image", "Digest") == digest
        assert api.prop(rpath, "Image", "Description") == "FOG lab image"
        assert "is whole" in ctl("image", "verify", "round-trip", check=True).stdout

        # Hostile input: refused, with nothing left of it.
        kept = sorted(p.name for p in top.iterdir())
        damaged = tmp_path / "damaged.pbimg"
        sh("cp", exported, damaged)
        with open(damaged, "r+b") as f:
            f.seek(os.path.getsize(damaged) // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x5A]))
        cases = hostile_images(tmp_path, cz) + [("damaged", damaged, "the frame for")]
        for name, d, expect in cases:
            r = ctl("image", "import", f"hostile-{name}", str(d), "--storage=here")
            assert r.returncode != 0 and "was not imported" in r.stderr, (name, r.stderr)
            assert expect in r.stderr or (name == "damaged" and "does not decompress" in r.stderr), (name, r.stderr)
            assert "Nothing of it was kept" in r.stderr, r.stderr
        names = json.loads(ctl("image", "list", "--json=short", check=True).stdout)
        assert sorted(i["name"] for i in names) == ["from-clonezilla", "from-fog", "round-trip"], names
        assert sorted(p.name for p in top.iterdir()) == kept
        assert not list(work.iterdir())

        # The controller stopped in the middle of an import (its source a pipe that has given only the first
        # bytes): when it starts again, the import and all it made are gone.
        fifo = tmp_path / "slow.pbimg"
        os.mkfifo(fifo)
        importing = subprocess.Popen([str(PUREBOOTCTL), "--no-pager", "image", "import", "interrupted", str(fifo),
                                      "--storage=here"], env=system_bus.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        with open(fifo, "wb") as writer:
            writer.write(exported.read_bytes()[:4096])
            writer.flush()
            wait_for(lambda: any(i["name"] == "interrupted" for i in
                                 json.loads(ctl("image", "list", "--json=short", check=True).stdout)),
                     what="the import to start")
            assert list(work.iterdir()), "the import works in its directory"
            assert controller.stop() == 0
        importing.communicate(timeout=30)
        assert importing.returncode != 0
        controller.start()
        wait_for(lambda: len(json.loads(ctl("image", "list", "--json=short", check=True).stdout)) == 3,
                 what="the interrupted import to be taken away")
        assert not list(work.iterdir())
        assert sorted(p.name for p in top.iterdir()) == kept
    finally:
        stop_all(agents)
        for loop in loops:
            loop.detach()
