# SPDX-License-Identifier: MIT
"""The Cockpit application in a real browser (browser.py): Debian's chromium through chromium-driver and
selenium, a real cockpit-ws with a local session as the test user, the real bus, polkitd, controller, bridge
and agents. Assertions are on the page's content; each scenario saves screenshots."""

import json

import pytest

from harness import ROOT, make_key_and_csr, stop_all, wait_for
from nodes import (Clone, Loop, busybox_root, check_files, make_random_disk, make_source_disk, partition_agent, sh,
                   tar_of)

def session_id(path):
    return path.rsplit("/", 1)[1]


def test_unprivileged_user_sees_everything_and_is_refused_start(controller, api, cockpit, browser):
    """Without a rule the test user reads every session and node, and Start is refused with polkit's answer
    on screen and what to do about it; nothing changed."""
    api.node("web-01", "aa:bb:cc:00:00:01")
    api.node("web-02", "aa:bb:cc:00:00:02")
    sid = session_id(api.session("guarded"))
    ws = cockpit()
    browser.open(ws, "sessions")
    row = f"tr[data-session='{sid}']"
    browser.wait_text(row, lambda t: "guarded" in t and "pending" in t and "web-01 /dev/sda" in t,
                      "the pending session in the list")
    browser.click(f"#start-{sid}")
    error = browser.wait_text("#error", lambda t: "manage-clones" in t, "polkit's refusal on screen")
    assert "Start failed" in error
    assert "Not authorized for org.pureboot.controller1.manage-clones" in error \
        or "Authentication is required for org.pureboot.controller1.manage-clones" in error, error
    assert "polkit rule" in error  # what to do about it
    browser.shot("sessions-start-refused")
    assert api.prop(f"/org/pureboot/Controller1/clone/{sid}", "CloneSession", "Status") == "pending"

    browser.go("nodes")
    nodes = browser.wait_text("#nodes", lambda t: "web-01" in t and "web-02" in t, "the nodes page")
    assert "aa:bb:cc:00:00:01" in nodes and "ready" in nodes
    browser.shot("nodes")


def test_operator_starts_a_direct_clone_and_watches_it_complete(controller, api, ctl, network, bridge_on_network,
                                                                tmp_path, cockpit, browser, operators):
    """The README's rule lets the pureboot-operators group start a clone: the test user presses Start on the
    detail page, the agents run, and the page follows the session to 100 % with both digests."""
    source, files = make_source_disk(tmp_path)
    target = make_random_disk(tmp_path, "target", 256 << 20)
    c = None
    try:
        c = Clone(tmp_path, ctl, api, network, bridge_on_network, source.device, target.device, start=False)
        ws = cockpit()
        browser.open(ws, f"sessions/{c.id}")
        browser.wait_text("#session", lambda t: "pending" in t, "the session's detail page")
        # polkitd rereads its rules directory on its own: the first press may come before it did.
        def started():
            if api.prop(c.path, "CloneSession", "Status") != "pending":
                return True
            if browser.finds(f"#start-{c.id}"):
                browser.click(f"#start-{c.id}")
            return False
        wait_for(started, timeout=20, interval=1, what="the operator's Start to be accepted")
        c.source.start()
        c.target.start()
        browser.wait_text("#session .pf-v6-c-progress__measure", lambda t: t == "100%", "the page to reach 100 %",
                          timeout=120)
        browser.wait_text("#session", lambda t: "completed" in t, "the page to say completed")
        digest = browser.text("#source-digest")
        assert digest.startswith("xxh3-128:"), browser.text()
        assert browser.text("#target-digest") == digest
        targets = browser.text("#targets")
        assert "tgt-node" in targets and "completed" in targets and digest in targets
        assert "started" in browser.text("#timeline") and "completed" in browser.text("#timeline")
        browser.shot("clone-detail")
        assert not browser.finds("#error"), browser.text("#error")
        assert c.target.wait(60) == 0, c.target.text()
        assert c.source.wait(60) == 0, c.source.text()
        sh("cmp", source.device, target.device)
        check_files(target, files, tmp_path)
    finally:
        if c:
            c.stop()
        source.detach()
        target.detach()


@pytest.mark.parametrize("mode", ["direct", "staged"])
def test_wizard_creates_a_clone_that_completes(mode, controller, api, ctl, network, bridge_on_network, tmp_path,
                                               cockpit, browser, operators):
    """The five steps with the disks the agents reported (their partition-mode scans): mode, source disk with its
    map, target disk (staged: and the staging backend, with its free space, which Next insists on), the
    controller's plan, review and Start; then the session's agents clone it and the detail page the wizard
    opened follows it to completion."""
    if mode == "staged":
        ctl("storage", "add", "here", "--type=local", f"path={tmp_path / 'staging'}", check=True)
    source, files = make_source_disk(tmp_path)
    target = make_random_disk(tmp_path, "target", 256 << 20)
    scans, c = [], None
    try:
        for hostname, mac, loop in (("src-node", "aa:bb:cc:00:10:01", source), ("tgt-node", "aa:bb:cc:00:10:02", target)):
            scans.append(partition_agent(tmp_path, ctl, api, bridge_on_network, [loop.device], hostname, mac))
        stop_all(scans)
        for hostname in ("src-node", "tgt-node"):
            ctl("node", "set-mode", hostname, "local", check=True)
        src_id = api.ok(ROOT, "Manager", "GetNode", "s", "src-node")[0].rsplit("/", 1)[1]
        tgt_id = api.ok(ROOT, "Manager", "GetNode", "s", "tgt-node")[0].rsplit("/", 1)[1]

        ws = cockpit()
        browser.open(ws, "sessions")
        browser.click("#new-session")
        browser.wait_text("#wizard-steps", lambda t: "Review and start" in t, "the wizard")
        browser.click(f"#wizard-mode-{mode}")
        browser.find("#wizard-name").send_keys("from-cockpit")
        browser.click("#wizard-next")
        # Source: its node, then the disk it reported, drawn as a map of its partitions.
        from selenium.webdriver.support.ui import Select
        browser.wait(lambda d: d.find_elements("css selector", "#wizard-source-node"), "the source step")
        Select(browser.find("#wizard-source-node")).select_by_value(src_id)
        disk = f"#wizard-source-disk-{source.device.replace('/', '-')}"
        browser.click(disk)
        diskmap = browser.wait_text(f".pureboot-diskmap[data-device='{source.device}']", lambda t: "gpt" in t,
                                    "the source disk's map")
        assert "256 MiB" in diskmap, diskmap
        blocks = browser.finds(f".pureboot-diskmap[data-device='{source.device}'] .pureboot-diskmap-part")
        assert len(blocks) == 2 and "ext4" in blocks[0].get_attribute("title"), [b.get_attribute("title") for b in blocks]
        browser.shot(f"wizard-{mode}-source")
        browser.click("#wizard-next")
        browser.wait(lambda d: d.find_elements("css selector", "#wizard-target-node"), "the target step")
        Select(browser.find("#wizard-target-node")).select_by_value(tgt_id)
        browser.click(f"#wizard-target-disk-{target.device.replace('/', '-')}")
        if mode == "staged":
            browser.click("#wizard-next")
            browser.wait_text("#wizard-missing", lambda t: "Choose a staging backend." in t, "the missing backend")
            choice = browser.wait_text("label:has(#wizard-storage-here)", lambda t: "free of" in t,
                                       "the backend with its free space")
            assert choice.startswith("here (local): "), choice
            browser.click("#wizard-storage-here")
        browser.click("#wizard-next")
        # The plan: the controller makes the session and compares the two disks.
        browser.click("#wizard-compute")
        plan = browser.wait_text("#wizard-plan", lambda t: "keep" in t, "the controller's plan")
        assert "ext4" in plan
        browser.shot(f"wizard-{mode}-plan")
        browser.click("#wizard-next")
        review = browser.wait_text("#wizard-review", lambda t: "src-node" in t, "the review")
        assert f"src-node {source.device}" in review and f"tgt-node {target.device}" in review
        staging = browser.finds("#wizard-review [data-field='staging']")
        assert [e.text for e in staging] == (["here"] if mode == "staged" else []), review
        sessions = api.ok(ROOT, "Manager", "ListCloneSessions")[0]
        assert [s[1] for s in sessions] == ["from-cockpit"], sessions
        sid = sessions[0][0]
        assert api.prop(f"{ROOT}/clone/{sid}", "CloneSession", "Status") == "pending"
        assert api.prop(f"{ROOT}/clone/{sid}", "CloneSession", "Mode") == mode
        browser.click("#wizard-start")
        browser.wait(lambda d: d.find_elements("css selector", f"#session[data-session='{sid}']"), "the new session's page")
        wait_for(lambda: api.prop(f"{ROOT}/clone/{sid}", "CloneSession", "Status") != "pending", timeout=10,
                 what="the session to start")

        c = Clone(tmp_path, ctl, api, network, bridge_on_network, source.device, target.device, session=sid,
                  mode=mode, storage="here" if mode == "staged" else None)
        c.source.start()
        c.target.start()
        browser.wait_text("#session .pf-v6-c-progress__measure", lambda t: t == "100%", "the page to reach 100 %",
                          timeout=120)
        digest = browser.wait_text("#target-digest", lambda t: t.startswith("xxh3-128:"), "the target's digest")
        assert browser.text("#source-digest") == digest
        browser.shot(f"wizard-{mode}-clone-completed")
        assert c.target.wait(60) == 0, c.target.text()
        sh("cmp", source.device, target.device)
        check_files(target, files, tmp_path)
    finally:
        stop_all(scans)
        if c:
            c.stop()
        source.detach()
        target.detach()


def test_partition_editor_queues_checks_and_applies(controller, api, ctl, bridge, tmp_path, cockpit, browser, operators):
    """On a node's 1 GiB loop disk in partition mode: the map shows its ext4 partition; a resize and a create are
    queued from the editor's form (a partition picked on the map), a resize the controller refuses shows its
    sentence under the form and queues nothing, and Apply runs both: the disk file then has the new table and
    filesystems."""
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(1 << 30)
    sh("parted", "-s", image, "mklabel", "gpt", "mkpart", "root", "ext4", "1MiB", "401MiB")
    loop = Loop(image)
    agent = None
    try:
        loop.scan_partitions()
        sh("mkfs.ext4", "-q", "-L", "root", loop.partition(1))
        agent = partition_agent(tmp_path, ctl, api, bridge, [loop.device], "part-01", "aa:bb:cc:00:20:01")
        node = api.ok(ROOT, "Manager", "GetNode", "s", "part-01")[0]
        disk = api.prop(node, "Node", "Disks")[0]
        ws = cockpit()
        browser.open(ws, "nodes")
        browser.click("tr[data-node='part-01'] a.pureboot-disk-link")
        browser.wait_text("#partitions", lambda t: "ext4" in t and "root" in t, "the disk's partitions")
        from selenium.webdriver.support.ui import Select
        op = Select(browser.find("#op-operation"))

        # A resize larger than the disk: the controller's sentence under the form, nothing queued.
        op.select_by_value("resize")
        browser.click("#disk-map .pureboot-diskmap-part[data-partition='1']")
        assert browser.find("#op-partition").get_attribute("value") == "1"
        browser.find("#op-new_size_bytes").send_keys("5000")
        browser.click("#op-queue")
        refused = browser.wait_text("#op-error", lambda t: t != "", "the controller's refusal")
        assert "partition 1" in refused.lower() or "disk" in refused.lower(), refused
        browser.shot("partition-editor-refused")
        assert api.prop(disk, "Disk", "Operations") == []

        browser.find("#op-new_size_bytes").clear()
        browser.find("#op-new_size_bytes").send_keys("600")
        browser.click("#op-queue")
        browser.wait_text("#op-queued", lambda t: "Queued resize" in t, "the resize queued")
        op.select_by_value("create")
        browser.find("#op-start_bytes").send_keys("700")
        browser.find("#op-size_bytes").send_keys("300")
        Select(browser.find("#op-filesystem")).select_by_value("xfs")
        browser.find("#op-label").send_keys("data")
        browser.click("#op-queue")
        browser.wait_text("#op-queued", lambda t: "Queued create" in t, "the create queued")
        queue = browser.wait_text("#operations", lambda t: t.count("pending") == 2, "both operations pending")
        assert "new_size_bytes=600 MiB" in queue and "size_bytes=300 MiB" in queue, queue
        browser.shot("partition-editor-queued")

        browser.click("#apply")
        browser.wait(lambda d: len(d.find_elements("css selector", "#operations tr[data-status='completed']")) == 2,
                     "both operations completed on the page", timeout=120)
        browser.wait_text("#partitions", lambda t: "xfs" in t and "data" in t, "the rescan after the apply", timeout=60)
        browser.shot("partition-editor-applied")
        layout = sh("sfdisk", "--json", image).stdout
        parts = json.loads(layout)["partitiontable"]["partitions"]
        assert [p["size"] * 512 for p in parts] == [600 << 20, 300 << 20], parts
        assert parts[1]["start"] * 512 == 700 << 20
        assert sh("blkid", "-o", "value", "-s", "TYPE", loop.partition(2)).stdout.strip() == "xfs"
        assert sh("blkid", "-o", "value", "-s", "LABEL", loop.partition(2)).stdout.strip() == "data"
        sh("e2fsck", "-fn", loop.partition(1))

        # A shrink that fits when queued; then the filesystem fills up, resize2fs refuses, and the page says the
        # table was put back.
        op.select_by_value("resize")
        browser.click("#disk-map .pureboot-diskmap-part[data-partition='1']")
        browser.find("#op-new_size_bytes").send_keys("200")
        browser.click("#op-queue")
        browser.wait_text("#op-queued", lambda t: "Queued resize" in t, "the shrink queued")
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        sh("mount", loop.partition(1), mnt)
        try:
            sh("dd", "if=/dev/urandom", f"of={mnt / 'filler'}", "bs=1M", "count=300", "status=none")
        finally:
            sh("umount", mnt)
        before = sh("sfdisk", "--dump", image).stdout
        browser.click("#apply")
        failed = browser.wait_text("#operations tr[data-status='failed']", lambda t: "put back" in t,
                                   "the failed shrink and its rollback on the page", timeout=120)
        assert "resize2fs" in failed, failed
        browser.shot("partition-editor-rolled-back")
        assert sh("sfdisk", "--dump", image).stdout == before
    finally:
        if agent:
            agent.stop()
        loop.detach()


def test_storage_images_certificates_and_pis_pages(controller, api, ctl, bridge, tmp_path, cockpit, browser, operators):
    """As an operator: a local storage backend added and tested from its form (a malformed setting refused with
    what is wrong), an image of a disk listed and verified, a certificate revoked from the CA page, and a
    diskless Pi's base image imported and its overlay added and deleted."""
    from selenium.webdriver.support.ui import Select
    source, _ = make_source_disk(tmp_path)
    try:
        ws = cockpit()
        browser.open(ws, "storage")
        browser.find("#storage-name").send_keys("bad")
        Select(browser.find("#storage-type")).select_by_value("local")
        browser.find("#storage-settings").send_keys("oops")
        browser.click("#storage-add")
        assert '"oops" is not a KEY=VALUE setting' in browser.wait_text("#error", lambda t: t, "the refusal")
        browser.find("#storage-name").clear()
        browser.find("#storage-name").send_keys("here")
        browser.find("#storage-settings").clear()
        browser.find("#storage-settings").send_keys(f"path={tmp_path / 'images'}")
        browser.click("#storage-add")
        browser.click("#refresh-here")
        row = browser.wait_text("tr[data-storage='here']", lambda t: "free of" in t, "the backend with its space")
        assert "local" in row and str(tmp_path / "images") in row
        browser.click("#test-here")
        assert "here works" in browser.wait_text("#notice", lambda t: t, "the test's report")
        browser.shot("storage")

        ctl("image", "import", "golden", source.device, "--storage=here", check=True)  # a disk, read whole
        browser.go("images")
        row = browser.wait_text("tr[data-image='golden']", lambda t: "ready" in t, "the image in the library")
        assert "xxh3-128:" in row and "256 MiB" in row and "here" in row, row
        browser.click("#verify-golden")
        image = api.ok(ROOT, "Manager", "GetImage", "s", "golden")[0]
        wait_for(lambda: api.prop(image, "Image", "VerifiedAt") > 0, timeout=60, what="the check")
        browser.wait(lambda d: browser.text("tr[data-image='golden'] td[data-label='Verified']") not in ("", "—"),
                     "the check's time on the page")
        browser.shot("images")
        # Deployed to two machines in one session, which the page then shows; cancelled there.
        api.node("web-01", "aa:bb:cc:00:00:01")
        api.node("web-02", "aa:bb:cc:00:00:02")
        browser.type("#deploy-nodes-golden", "web-01 web-02")
        browser.type("#deploy-device-golden", "/dev/sdb")
        browser.click("#deploy-golden")
        detail = browser.wait_text("#session", lambda t: "web-02" in t, "the deploy's session")
        sessions = api.ok(ROOT, "Manager", "ListCloneSessions")[0]
        assert len(sessions) == 1, sessions
        session = f"{ROOT}/clone/{sessions[0][0]}"
        assert api.prop(session, "CloneSession", "Image") == image.rsplit("/", 1)[1]
        browser.wait_text("#session", lambda t: "Image\ngolden" in t, "the image's name on the session's page")
        assert len(api.prop(session, "CloneSession", "Targets")) == 2
        assert api.prop(session, "CloneSession", "Status") != "pending", detail
        browser.click(f"#cancel-{sessions[0][0]}")
        browser.wait_text("#session", lambda t: "cancelled" in t, "the cancelled deploy")
        assert api.prop(session, "CloneSession", "Status") == "cancelled"

        key, csr = make_key_and_csr(tmp_path, "web-01")
        serial = api.ok(f"{ROOT}/ca", "CertificateAuthority", "IssueCertificate", "sssa{sv}", csr.read_text(), "server",
                        "web-01.example", "0")[1]
        browser.go("ca")
        fingerprint = browser.wait_text("#ca-fingerprint", lambda t: t, "the CA's fingerprint")
        assert fingerprint == api.prop(f"{ROOT}/ca", "CertificateAuthority", "Fingerprint")
        browser.click(f"#revoke-{serial}")
        browser.wait_text(f"tr[data-serial='{serial}']", lambda t: "revoked" in t, "the revocation on the page")
        issued = {c[0]: c for c in api.ok(f"{ROOT}/ca", "CertificateAuthority", "ListIssued")[0]}
        assert issued[serial][7] > 0
        browser.shot("certificates")

        archive = tar_of(busybox_root(tmp_path), tmp_path / "root.tar")
        archive.parent.chmod(0o755)
        browser.go("pis")
        browser.find("#base-name").send_keys("base1")
        browser.find("#base-path").send_keys(str(archive))
        browser.click("#base-import")
        browser.wait_text("#nfsroot", lambda t: "base1" in t, "the base image", timeout=60)
        browser.find("#pi-serial").send_keys("cafe0001")
        browser.find("#pi-base").send_keys("base1")
        browser.find("#pi-hostname").send_keys("kitchen-pi")
        browser.click("#pi-add")
        row = browser.wait_text("tr[data-serial='cafe0001']", lambda t: "kitchen-pi" in t, "the Pi's overlay")
        assert "base1" in row
        browser.shot("pis")
        browser.click("#pi-delete-cafe0001")
        browser.wait(lambda d: not d.find_elements("css selector", "tr[data-serial='cafe0001']"), "the overlay gone")
    finally:
        source.detach()
