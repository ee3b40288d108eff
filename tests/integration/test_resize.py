# SPDX-License-Identifier: MIT
"""Clones to a smaller and a larger disk: the resize plan made from what the agents scanned, the source
shrunk before the copy and the target grown after it, the GPT backup moved to the end of each target, and
edited plans held to the same rules. Real loop devices, ext4 and vfat, resize2fs, agents in namespaces."""

import json

from harness import AGENT
from nodes import Clone, check_root_last_disk, gpt_layout, make_blank_disk, make_root_last_disk, sh

MIB = 1 << 20
SOURCE = 1024 * MIB
ERROR = "org.pureboot.Controller1.Error."


def plan_of(c):
    return json.loads(c.prop("Plan"))


def run_clone(c):
    c.source.start()
    c.target.start()
    c.wait_status("completed", "failed", timeout=240)
    assert c.status() == "completed", (c.prop("Error"), c.source.text()[-3000:], c.target.text()[-3000:])
    assert c.target.wait(60) == 0, c.target.text()
    assert c.source.wait(60) == 0, c.source.text()
    assert c.prop("SourceDigest") == c.prop("TargetDigest")


def test_one_source_to_a_larger_and_a_smaller_disk(tmp_path, ctl, api, network, bridge_on_network, loops):
    source, files = make_root_last_disk(tmp_path, loops)
    large = make_blank_disk(tmp_path, loops, "large", SOURCE * 3 // 2)
    small = make_blank_disk(tmp_path, loops, "small", SOURCE * 3 // 4)

    # 1.5×: the whole source is copied and the root grows to the target's end (1535 MiB, the GPT's backup
    # and 1 MiB alignment after it).
    c = Clone(tmp_path, ctl, api, network, bridge_on_network, source.device, large.device, tag="g",
              resize="grow_target")
    try:
        run_clone(c)
        plan = plan_of(c)
        assert plan["feasible"] and plan["copyBytes"] == SOURCE and plan["source"] == [], plan
        assert [p["action"] for p in plan["partitions"]] == ["keep", "grow"], plan
        assert plan["target"][0]["parameters"] == {"partition": 2, "new_size_bytes": (1535 - 65) * MIB}
        assert "Moved the GPT backup" in c.target.text()
    finally:
        c.stop()
    check_root_last_disk(large, files, tmp_path, (1535 - 65) * MIB)

    # 0.75×: the source's root shrinks first to end at 767 MiB, and only that much is copied.
    c = Clone(tmp_path, ctl, api, network, bridge_on_network, source.device, small.device, tag="s",
              resize="shrink_source")
    try:
        run_clone(c)
        plan = plan_of(c)
        assert plan["feasible"] and plan["copyBytes"] == 767 * MIB, plan
        assert [p["action"] for p in plan["partitions"]] == ["keep", "shrink"], plan
        assert plan["source"][0]["parameters"] == {"partition": 2, "new_size_bytes": (767 - 65) * MIB}
        assert c.prop("BytesTotal") == 767 * MIB
    finally:
        c.stop()
    check_root_last_disk(small, files, tmp_path, (767 - 65) * MIB)
    # The source itself was shrunk, cleanly: its root ends at 767 MiB now.
    source.scan_partitions()
    sh("e2fsck", "-f", "-n", source.partition(2))
    assert gpt_layout(source)["partitions"][1]["size"] * 512 == (767 - 65) * MIB


def test_plan_edits_are_checked(controller, tmp_path, ctl, api, gateway, loops):
    """Analyze and SetPlan on the disks the agents report (scanned for real, reported through the gateway as the
    session's agents would): an edit below the filesystem's minimum, past the target's end or in mode none is
    refused and the stored plan stays; a sound edit is taken; a session that ended keeps its plan."""
    source, _ = make_root_last_disk(tmp_path, loops)
    small = make_blank_disk(tmp_path, loops, "small", SOURCE * 3 // 4)
    api.node("web-01", "aa:bb:cc:00:20:01")
    api.node("web-02", "aa:bb:cc:00:20:02")
    path = api.session("edits", "direct", "web-01", "web-02", source.device, small.device,
                       "resize_mode", "s", "shrink_source")
    sid = path.rsplit("/", 1)[1]
    # No disk known yet: neither agent reported, and the nodes were never scanned in partition mode.
    r = api.call(path, "CloneSession", "Analyze", "a{sv}", "0")
    assert r.returncode != 0 and "has no disk" in r.stderr and "partition mode" in r.stderr, r.stderr
    api.ok(path, "CloneSession", "Start", "a{sv}", "0")
    for role, loop in (("source", source), ("target", small)):
        disk = json.loads(sh(AGENT, "scan", "--json", f"--devices={loop.device}").stdout)[0]
        error, reply = gateway("ReportCloneDisk", f"clone-{sid}-{role}" + ("-1" if role == "target" else ""),
                               {"session": sid, "role": role, "sequence": 1, "disk": disk})
        assert error == "", reply
    plan = json.loads(api.ok(path, "CloneSession", "GetPlan")[0])
    assert plan["feasible"] and plan["source"][0]["parameters"]["new_size_bytes"] == (767 - 65) * MIB, plan
    root = plan["partitions"][1]
    assert 400 * MIB < root["minimumBytes"] < 700 * MIB, root
    error, reply = gateway("GetResizePlan", f"clone-{sid}-target-1", {"session": sid})
    assert error == "" and reply["plan"] == plan

    refusals = {
        str(root["minimumBytes"] - MIB): "can shrink to",
        str(710 * MIB): "Partition 2 ends at 775.0 MiB",
        "not json": "not a JSON object",
        json.dumps({"9": 1}): "has no partition 9",
    }
    for edit, words in refusals.items():
        text = edit if not edit.isdigit() else json.dumps({"2": int(edit)})
        r = ctl("clone", "plan", sid, f"--set={text}")
        assert r.returncode != 0 and words in r.stderr, (edit, r.stderr)
        assert json.loads(api.ok(path, "CloneSession", "GetPlan")[0]) == plan, "a refused edit changes nothing"

    # Smaller than needed, above the minimum (resize2fs's estimate + 100 MiB): taken, and less is copied.
    assert root["minimumBytes"] < 690 * MIB, root
    r = ctl("clone", "plan", sid, "--edit", "2=690M", check=True)
    assert "shrink" in r.stdout and "690.0 MiB" in r.stdout and "Feasible" in r.stdout, r.stdout
    plan = json.loads(api.ok(path, "CloneSession", "GetPlan")[0])
    assert plan["copyBytes"] == (65 + 690) * MIB and plan["edits"] == {"2": 690 * MIB}, plan
    # A new scan keeps the user's edit.
    error, _ = gateway("ReportCloneDisk", f"clone-{sid}-target-1", {"session": sid, "role": "target", "sequence": 2,
                                                                  "disk": json.loads(sh(AGENT, "scan", "--json",
                                                                                        f"--devices={small.device}").stdout)[0]})
    assert error == "" and json.loads(api.ok(path, "CloneSession", "GetPlan")[0])["edits"] == {"2": 690 * MIB}

    api.ok(path, "CloneSession", "Cancel", "a{sv}", "0")
    error = api.call(path, "CloneSession", "SetPlan", "sa{sv}", json.dumps({"2": 650 * MIB}), "0")
    assert error.returncode != 0 and "no longer changes" in error.stderr, error.stderr


def test_a_partition_left_out_makes_room(tmp_path, ctl, api, gateway, network, bridge_on_network, loops):
    """A swap partition after the root keeps the root from shrinking into a 0.75x target: the plan made from the
    reported disks says so, and the session cannot start copying. The user leaves the swap out (--edit 3=delete):
    the root shrinks on the source, the copy stops at its new end, and the target's table lists two
    partitions, the swap's entry dropped before the GPT backup moved."""
    source, files = make_root_last_disk(tmp_path, loops, swap_mib=200)
    small = make_blank_disk(tmp_path, loops, "small", SOURCE * 3 // 4)
    c = Clone(tmp_path, ctl, api, network, bridge_on_network, source.device, small.device, tag="d",
              resize="shrink_source")
    try:
        # The disks as the agents will report them (the same scan), so the plan can be edited before they run.
        for role, loop in (("source", source), ("target", small)):
            disk = json.loads(sh(AGENT, "scan", "--json", f"--devices={loop.device}").stdout)[0]
            error, reply = gateway("ReportCloneDisk", f"clone-{c.id}-{role}" + ("-1" if role == "target" else ""),
                                   {"session": c.id, "role": role, "sequence": 1, "disk": disk})
            assert error == "", reply
        plan = plan_of(c)
        assert not plan["feasible"] and "Partition 3 ends at 1023.0 MiB" in plan["reason"], plan
        r = ctl("clone", "plan", c.id, "--edit", "3=delete", check=True)
        assert "delete" in r.stdout and "Feasible" in r.stdout, r.stdout
        plan = plan_of(c)
        assert [p["action"] for p in plan["partitions"]] == ["keep", "shrink", "delete"], plan
        assert plan["drop"] == [3] and plan["copyBytes"] == 767 * MIB, plan
        run_clone(c)
        assert "leaving out the partitions the plan deletes" in c.target.text()
    finally:
        c.stop()
    assert len(gpt_layout(small)["partitions"]) == 2
    check_root_last_disk(small, files, tmp_path, (767 - 65) * MIB)
    # The source keeps its swap.
    assert len(gpt_layout(source)["partitions"]) == 3
