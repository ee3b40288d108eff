# SPDX-License-Identifier: MIT
"""OpenIPMI's BMC simulator, ipmi_sim, as the BMC of a test's machine: IPMI 2.0 over LAN (lanplus) on an
address and port of a network namespace, user admin with a password in a file, and a chassis control
program of the test's own that ipmi_sim runs for every power and boot device change (PROG DEVICE get|set
PARM [VALUE]...). The program keeps the machine's state in chassis.json next to it and logs every set to
chassis.json.log; for a VM it also starts and stops the VM's qemu (tests/vm/vm.py)."""

import json
import subprocess
import textwrap

from harness import wait_for

USER, PASSWORD = "admin", "s3cret-pw"

# What every chassis program starts with: the state file, get, and set with the log. A program for a VM
# adds on_set(parm, value, state) and a power reading of its own (POWER).
CHASSIS = """#!/usr/bin/python3
import json, os, signal, subprocess, sys
here = os.path.dirname(os.path.abspath(sys.argv[0]))
state_file = os.path.join(here, "chassis.json")
state = json.load(open(state_file)) if os.path.exists(state_file) else {"power": "0", "boot": "default"}
%(code)s
op, args = sys.argv[2], sys.argv[3:]
if op == "get":
    state["power"] = power(state)
    print("\\n".join(f"{p}:{state[p]}" for p in args if p in state))
elif op == "set":
    for parm, value in zip(args[::2], args[1::2]):
        with open(state_file + ".log", "a") as log:
            log.write(f"{parm} {value}\\n")
        if parm == "reset":
            state["resets"] = state.get("resets", 0) + 1
        else:
            state[parm] = value
        on_set(parm, value, state)
    json.dump(state, open(state_file, "w"))
else:
    sys.exit(1)
"""

# A machine that is only its state: power is what was last set.
STATE_ONLY = """
def power(state):
    return state["power"]

def on_set(parm, value, state):
    pass
"""


class Bmc:
    """ipmi_sim in namespace ns at address:port, its chassis program made of code (STATE_ONLY, or a VM's)."""

    def __init__(self, ns, address, directory, code=STATE_ONLY, port=623):
        self.ns, self.address, self.port, self.dir = ns, address, port, directory
        (directory / "state").mkdir(parents=True)
        chassis = directory / "chassis"
        chassis.write_text(CHASSIS % {"code": code})
        chassis.chmod(0o755)
        (directory / "lan.conf").write_text(textwrap.dedent(f"""\
            name "pureboot-test-bmc"
            set_working_mc 0x20
              startlan 1
                addr {address} {port}
                priv_limit admin
                allowed_auths_callback md5
                allowed_auths_user md5
                allowed_auths_operator md5
                allowed_auths_admin md5
                guid 50757265426f6f74426d634775696431
              endlan
              chassis_control "{chassis} 0x20"
              startnow false
              user 2 true "{USER}" "{PASSWORD}" admin 10 md5
            """))
        (directory / "bmc.emu").write_text("mc_setbmc 0x20\n"
                                           "mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\n"
                                           "mc_enable 0x20\n")
        self.password = directory / "password"
        self.password.write_text(PASSWORD + "\n")
        self.proc = None

    def start(self):
        self._log = open(self.dir / "ipmi_sim.log", "w")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, "ipmi_sim", "-c", self.dir / "lan.conf", "-f",
                                      self.dir / "bmc.emu", "-s", self.dir / "state", "-n"],
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=self.dir)

        def answers():
            r = subprocess.run(["ip", "netns", "exec", self.ns, "ipmitool", "-I", "lanplus", "-H", self.address,
                                "-p", str(self.port), "-U", USER, "-f", self.password, "-N", "1", "-R", "1",
                                "chassis", "power", "status"], capture_output=True, text=True)
            return r.returncode == 0
        wait_for(answers, timeout=20, what=f"ipmi_sim to answer:\n{(self.dir / 'ipmi_sim.log').read_text()}")
        return self

    def settings(self):
        """purebootctl node set-power's arguments for this BMC."""
        return ("--driver=ipmi", f"address={self.address}", f"port={self.port}", f"user={USER}", "cipher=3",
                f"password-file={self.password}")

    def state(self):
        return json.loads((self.dir / "chassis.json").read_text())

    def log(self):
        path = self.dir / "chassis.json.log"
        return path.read_text().splitlines() if path.exists() else []

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
            self._log.close()
            self.proc = None
