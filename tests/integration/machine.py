# SPDX-License-Identifier: MIT
"""A machine booted by systemd, with this build installed in it as a package installs it: the tests of the
units as shipped run the controller and the bridge there, under every sandboxing setting of their units.

systemd is not PID 1 on the test machines, so `systemd-nspawn --boot` starts the host's own systemd in a
container whose root is an overlay of the host's root: a tmpfs takes every write (the install, the
configuration, /srv/nfsroot, /var/lib/pureboot), so nothing of the host changes and the container has the
host's packages without a debootstrap. `meson install --destdir` puts the build into it (prefix
/usr/local); only the bus policy and the polkit actions are copied where a distribution's package puts
them, /usr/share, because dbus-daemon and polkitd do not read /usr/local. The container shares the host's
network, so it reaches the nodes' bridge and the storage servers on it; its system bus, polkitd and
journal are its own, reached through /proc/PID/root and nsenter. Everything is made under
/run/pureboot-tests/machine-PID and taken down by PID and mount point, also after a run that died."""

import os
import shutil
import signal
import subprocess
from pathlib import Path

from harness import BUILD, CONTROLLER, MACHINE_STATE, REPO, Bus, Started, describe_status, wait_for

UNITS = ("pureboot-controller.service", "pureboot-bridge.service")


def sanitized():
    """Whether this build carries the ASan runtime (tests/run's sanitizer pass)."""
    out = subprocess.run(["nm", "-D", CONTROLLER], capture_output=True, text=True).stdout
    return " __asan_init" in out


def _descendants(pid):
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for c in map(int, children):
            found += [c, *_descendants(c)]
    return found


def _take_down(directory):
    """Stops the nspawn of a machine directory (by the root path on its command line) and unmounts it."""
    root = directory / "root"
    for p in Path("/proc").glob("[0-9]*"):
        try:
            argv = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"systemd-nspawn") and str(root).encode() in argv:
            try:
                os.kill(int(p.name), signal.SIGKILL)
            except ProcessLookupError:
                pass
    for mount in (root, directory / "layer"):
        subprocess.run(["umount", "-R", "-l", mount], capture_output=True)
    shutil.rmtree(directory, ignore_errors=True)


def sweep():
    """Machines of runs that died: their container killed, their mounts and files removed."""
    for d in MACHINE_STATE.glob("machine-*"):
        if not Path(f"/proc/{d.name.split('-')[1]}").exists():
            _take_down(d)


class Machine(Started):
    """systemd-nspawn --boot over the host's root with this build installed. binds: (host path, path in the
    machine) pairs; network: the nodes' bridge (nodes.Network), which the bridge socket listens on."""

    what = "the booted machine (systemd-nspawn)"
    # nspawn ends with the container's exit: 0 after a poweroff, which SIGTERM asks for.
    term_status = (0,)

    def __init__(self, network, port, binds=()):
        MACHINE_STATE.mkdir(mode=0o700, exist_ok=True)
        sweep()
        self.dir = MACHINE_STATE / f"machine-{os.getpid()}"
        self.root = self.dir / "root"
        self.log = self.dir / "nspawn.log"
        self.network, self.port = network, port
        self.url = f"https://{network.address}:{port}"
        # A directory the host and the machine see at the same path (outside /tmp, which the units make
        # private): for files both the machine's controller and a server on the host use.
        self.shared = self.dir / "shared"
        self.binds = [*binds, (self.shared, self.shared)]
        self.proc = None
        self.leader = None

    # The machine's files, from the host (through the overlay).
    def path(self, inside):
        return self.root / str(inside).lstrip("/")

    def write(self, inside, text):
        p = self.path(inside)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    def __enter__(self):
        try:
            self.dir.mkdir()
            self.shared.mkdir()
            layer = self.dir / "layer"
            layer.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", layer], check=True)
            for d in ("upper", "work"):
                (layer / d).mkdir()
            self.root.mkdir()
            subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                            f"lowerdir=/,upperdir={layer / 'upper'},workdir={layer / 'work'}", self.root], check=True)
            self.install()
            self.boot()
        except BaseException:
            self.__exit__()
            raise
        return self

    def install(self):
        subprocess.run(["meson", "install", "-C", BUILD, "--destdir", self.root, "--no-rebuild", "--quiet"],
                       check=True, capture_output=True)
        local = self.path("/usr/local/share")
        for rel in ("dbus-1/system.d/org.pureboot.Controller1.conf", "polkit-1/actions/org.pureboot.controller1.policy"):
            self.path("/usr/share").joinpath(rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local / rel, self.path("/usr/share") / rel)
        # What an operator does after installing: the bridge's socket enabled, its names configured.
        subprocess.run(["systemctl", f"--root={self.root}", "enable", "pureboot-bridge.socket"], check=True,
                       capture_output=True)
        self.write("/etc/systemd/system/pureboot-bridge.socket.d/50-test.conf",
                   f"[Socket]\nListenStream=\nListenStream={self.network.address}:{self.port}\n")
        self.write("/etc/pureboot/bridge.conf.d/50-test.conf",
                   f"[Bridge]\nHostname=bridge.test\nAddress={self.network.address}\n")
        # Only the units the tests need start: the host's own services stay off.
        self.write("/etc/systemd/system/pureboot-test.target",
                   "[Unit]\nDescription=PureBoot units under test\nRequires=basic.target\nAfter=basic.target\n")
        if sanitized():
            # Under the sanitizer pass the units run the sanitized binaries: a report aborts them, which the
            # checks at the end see. LeakSanitizer needs ptrace, which the units' system call filter denies,
            # so leaks are left to the other suites. The agent the controller runs for the image library loads
            # libparted: the same suppressions as the other suites (tests/asan.supp).
            self.write("/etc/pureboot-test/asan.supp", (REPO / "tests/asan.supp").read_text())
            for unit in UNITS:
                self.write(f"/etc/systemd/system/{unit}.d/50-sanitizers.conf",
                           "[Service]\nEnvironment=ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:"
                           "suppressions=/etc/pureboot-test/asan.supp "
                           "UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1\n")

    def boot(self):
        binds = [f"--bind={host}:{inside}" for host, inside in self.binds]
        self.proc = subprocess.Popen(["systemd-nspawn", "-q", "-D", self.root, "--register=no", "--keep-unit", "--boot",
                                      f"--machine=pb-units-{os.getpid()}", *binds, "systemd.unit=pureboot-test.target"],
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def init():
            if self.proc.poll() is not None:
                raise AssertionError(f"systemd-nspawn ended with {describe_status(self.proc.returncode)}:\n"
                                     f"{self.tail()}")
            for pid in _descendants(self.proc.pid):
                try:
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        self.leader = pid
                        return True
                except OSError:
                    pass
            return False
        wait_for(init, timeout=30, what="systemd to start in the container")
        # Until systemd answers on its own socket, systemctl says nothing on stdout.
        state = []

        def up():
            r = self.run("systemctl", "is-system-running", "--wait", timeout=120)
            state[:] = [r.stdout.strip() or r.stderr.strip()]
            return state[0] in ("running", "degraded")
        try:
            wait_for(up, timeout=120, interval=0.5, what="the machine to come up")
        except AssertionError:
            raise AssertionError(f"the machine did not come up ({state}):\n{self.tail()}") from None
        self.bus = Bus(Path(f"/proc/{self.leader}/root/run/dbus"))

    def run(self, *argv, timeout=60, check=False):
        """argv in the machine (all its namespaces)."""
        r = subprocess.run(["nsenter", "-t", str(self.leader), "-a", *map(str, argv)], capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, argv))} in the machine failed: {r.stdout}{r.stderr}")
        return r

    def show(self, unit, *props):
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props), check=True).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit):
        return self.run("journalctl", "--no-pager", "-o", "cat", "-u", unit).stdout

    def main_pid(self, unit):
        """The unit's main process as the host sees it (the machine shares no PID namespace with it)."""
        pid = int(self.show(unit, "MainPID")["MainPID"])
        assert pid, f"{unit} is not running:\n{self.journal(unit)[-3000:]}"
        # MainPID is the machine's number; NSpid in the host's /proc maps it.
        for p in _descendants(self.proc.pid):
            try:
                status = Path(f"/proc/{p}/status").read_text()
            except OSError:
                continue
            ns = [line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")][0]
            if len(ns) > 1 and int(ns[-1]) == pid:
                return p
        raise AssertionError(f"no host process for {unit}'s PID {pid}")

    def check_units(self, allow_restarts=()):
        """Each unit that ran ended or runs without a failure: no crash, no sanitizer report, no restart but
        those a test caused on purpose (allow_restarts)."""
        problems = []
        for unit in UNITS:
            s = self.show(unit, "Result", "NRestarts", "ExecMainStatus", "ExecMainCode")
            text = self.journal(unit)
            if s.get("Result") != "success" or (s.get("NRestarts") != "0" and unit not in allow_restarts) or \
                    "AddressSanitizer" in text or "runtime error:" in text:
                problems.append(f"{unit}: {s}\n{text[-3000:]}")
        assert not problems, "\n".join(problems)

    def __exit__(self, *exc):
        try:
            if self.proc and self.proc.poll() is None:
                # nspawn passes SIGTERM on as a poweroff (SIGRTMIN+3 to the container's systemd).
                self.stop(timeout=90)
        finally:
            _take_down(self.dir)


def wait_active(machine, unit, timeout=30):
    wait_for(lambda: machine.show(unit, "ActiveState")["ActiveState"] == "active", timeout=timeout,
             what=f"{unit} to be active")

