# SPDX-License-Identifier: MIT
"""The real-parts harness, shared by the integration tests and bench/: a private system bus with this repository's policy, the real polkitd on it,
and the controller from the build tree. Everything started here is stopped by PID, and every file or user
added to the machine is removed again, also when a test fails."""

import contextlib
import os
import pwd
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]


def _default_build():
    """Without PUREBOOT_BUILD: the build the README's commands made (tools/demo's release build, else tests/run's)."""
    for name in ("build-demo", "build-test", "build"):
        if (REPO / name / "src/controller/pureboot-controller").exists():
            return REPO / name
    raise SystemExit(f"No PureBoot build in {REPO}: run tests/run or tools/demo first (README), or point "
                     "PUREBOOT_BUILD at a build directory.")


BUILD = Path(os.environ["PUREBOOT_BUILD"] if os.environ.get("PUREBOOT_BUILD") else _default_build()).resolve()
CONTROLLER = BUILD / "src/controller/pureboot-controller"
PUREBOOTCTL = BUILD / "src/ctl/purebootctl"
BRIDGE = BUILD / "src/bridge/pureboot-bridge"
AGENT = BUILD / "src/agent/pureboot-agent"
# A build without -Dfault-injection (tests/run passes its fuzz build), for the test that a release agent
# ignores the fault-injection variable.
RELEASE_BUILD = Path(os.environ["PUREBOOT_RELEASE_BUILD"]) if os.environ.get("PUREBOOT_RELEASE_BUILD") else None
BRIDGE_USER = "pureboot-bridge"
POLICY = REPO / "polkit/org.pureboot.controller1.policy"
POLKIT_ACTIONS = Path("/usr/share/polkit-1/actions")
POLKIT_RULES = Path("/etc/polkit-1/rules.d")
TEST_USER = "pureboot-test"
DEST = "org.pureboot.Controller1"
ROOT = "/org/pureboot/Controller1"


def wait_for(predicate, timeout=10.0, what="condition", interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


class Bus:
    def __init__(self, directory):
        self.dir = directory
        self.socket = directory / "system_bus_socket"
        self.address = f"unix:path={self.socket}"
        # purebootctl from the build tree finds make-boot-media in the source tree.
        self.env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.address, SYSTEMD_PAGER="cat", PAGER="cat",
                        PUREBOOT_PXE_DIR=str(REPO / "deploy/pxe"))
        self.procs = []

    def name_has_owner(self, name):
        r = subprocess.run(["busctl", "--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                            "org.freedesktop.DBus", "NameHasOwner", "s", name],
                           env=self.env, capture_output=True, text=True)
        return r.returncode == 0 and r.stdout.strip() == "b true"

    def spawn(self, argv, log, env=None, netns=None):
        """argv on this bus, in the network namespace netns if given."""
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        proc = subprocess.Popen(argv, env=dict(self.env, **(env or {})), stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc


def stop_process(proc, sig=signal.SIGTERM, timeout=10, group=False):
    """Signals proc (its process group, if it leads one) and waits; SIGKILL after timeout s."""
    def send(s):
        try:
            os.killpg(proc.pid, s) if group else proc.send_signal(s)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        send(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            proc.wait()
    return proc.returncode


def describe_status(rc):
    if rc is None:
        return "still running"
    if rc < 0:
        name = signal.Signals(-rc).name
        return f"signal {name}" + (" (a sanitizer report or an abort)" if name == "SIGABRT" else "")
    return f"exit status {rc}"


class Started:
    """A process the harness started and stops by PID. stop() checks how it ended, so that a crash, a death
    before the stop or a sanitizer report at exit (tests/run makes those abort) fails the test that caused
    it instead of going unnoticed. Subclasses set proc, what and log."""

    what = "process"
    log = None
    term_status = (0,)  # what a stop by SIGTERM may end with
    group = False  # it leads a process group of its own (start_new_session): signal the group

    def own_exit_ok(self, rc):
        """Whether an exit of its own that no test looked at (wait) is fine."""
        return rc == 0

    proc = None
    seen = False

    def tail(self, n=4000):
        text = self.log.read_text(errors="replace") if self.log and Path(self.log).exists() else ""
        return text[-n:]

    def wait(self, timeout=120):
        rc = self.proc.wait(timeout)
        self.seen = True
        return rc

    def kill(self):
        """SIGKILL: a crash, nothing flushed on the way out."""
        if self.proc and self.proc.poll() is None:
            stop_process(self.proc, signal.SIGKILL, group=self.group)
        self.seen = True

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Ends it with sig and returns how it ended, once checked: SIGTERM must give term_status; an exit of
        its own before the stop must have been looked at (wait) or be fine by own_exit_ok."""
        if self.proc is None:
            return None
        ended = self.proc.poll()
        if ended is not None:
            if not self.seen and not self.own_exit_ok(ended):
                self.seen = True
                raise AssertionError(f"{self.what} had already ended with {describe_status(ended)} when the test "
                                     f"stopped it:\n{self.tail()}")
            self.seen = True
            return ended
        rc = stop_process(self.proc, sig, timeout, group=self.group)
        self.seen = True
        if sig == signal.SIGTERM and rc not in self.term_status:
            raise AssertionError(f"{self.what} ended with {describe_status(rc)} when stopped with SIGTERM "
                                 f"(expected {' or '.join(map(describe_status, self.term_status))}):\n{self.tail()}")
        return rc


def stop_all(started):
    """Stops every one of started, then raises the first failed check: one bad exit leaves nothing running."""
    errors = []
    for s in started:
        try:
            s.stop()
        except AssertionError as e:
            errors.append(e)
    if errors:
        raise errors[0]


MACHINE_STATE = Path("/run/pureboot-tests")
# How many machine_changes() this process is inside: a bus of its own inside the session's (test_gateway,
# test_security) must not take away what the session's still needs when it ends.
_machine_changes_depth = 0


@contextlib.contextmanager
def machine_changes():
    """The users and the polkit policy file the tests need, shared by every run of them on this machine at
    once: the first run to need them adds them (replacing a policy file that differs, whose contents it
    keeps), and the last one to end takes away what was added and puts back what was replaced. Runs count
    themselves by PID under /run/pureboot-tests, under a lock; a run that died is not counted. Nested in one
    process, only the outermost counts."""
    import fcntl
    import json
    global _machine_changes_depth
    if _machine_changes_depth > 0:
        _machine_changes_depth += 1
        try:
            yield
        finally:
            _machine_changes_depth -= 1
        return
    MACHINE_STATE.mkdir(mode=0o700, exist_ok=True)
    record = MACHINE_STATE / "changes.json"
    me = MACHINE_STATE / f"run-{os.getpid()}"

    def runs():
        alive = []
        for p in MACHINE_STATE.glob("run-*"):
            pid = int(p.name[4:])
            if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
                p.unlink(missing_ok=True)  # a run that died
            elif pid != os.getpid():
                alive.append(pid)
        return alive

    with open(MACHINE_STATE / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # A record a dead run left is still ours to undo at the end.
        runs()
        changes = {"users": [], "files": {}}
        try:
            changes = json.loads(record.read_text()) if record.exists() else changes
        except ValueError:
            # A run that died while writing it (a full disk): what it added stays, said here.
            print(f"warning: {record} is unreadable; what a dead run added to this machine is left as it is")
        # The bridge's user comes from our own sysusers.d file, so that file is exercised too.
        if not user_exists("pureboot-bridge"):
            subprocess.run(["systemd-sysusers", str(REPO / "units/sysusers-pureboot.conf")], check=True)
            changes["users"].append("pureboot-bridge")
        if not user_exists(TEST_USER):
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
                           check=True)
            changes["users"].append(TEST_USER)
        installed = POLKIT_ACTIONS / POLICY.name
        if not installed.exists() or installed.read_bytes() != POLICY.read_bytes():
            if str(installed) not in changes["files"]:
                changes["files"][str(installed)] = installed.read_text() if installed.exists() else None
            shutil.copyfile(POLICY, installed)
        record.write_text(json.dumps(changes))
        me.touch()
        fcntl.flock(lock, fcntl.LOCK_UN)
    _machine_changes_depth = 1
    try:
        yield
    finally:
        _machine_changes_depth = 0
        with open(MACHINE_STATE / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            me.unlink(missing_ok=True)
            if not runs() and record.exists():
                changes = json.loads(record.read_text())
                left = {"users": [], "files": {}}
                for path, before in changes["files"].items():
                    try:
                        if before is None:
                            Path(path).unlink(missing_ok=True)
                        else:
                            Path(path).write_text(before)
                    except OSError as e:
                        print(f"warning: putting back {path} failed ({e}); the next run tries again")
                        left["files"][path] = before
                for u in changes["users"]:
                    if subprocess.run(["userdel", u], check=False).returncode not in (0, 6):  # 6: no such user
                        print(f"warning: removing user {u} failed; the next run tries again")
                        left["users"].append(u)
                # What could not be undone (a full disk fails userdel) stays on record for the next run.
                try:
                    if left["users"] or left["files"]:
                        record.write_text(json.dumps(left))
                    else:
                        record.unlink()
                except OSError as e:
                    print(f"warning: updating {record} failed ({e})")
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def private_system_bus(extra_policy=""):
    if os.geteuid() != 0:
        raise PermissionError("the harness needs root: it starts polkitd and adds a test user")
    with machine_changes():
        with _private_system_bus(extra_policy) as bus:
            yield bus


@contextlib.contextmanager
def _private_system_bus(extra_policy):
    # polkitd runs as its own user and the test user calls in too: the socket must be reachable by both,
    # which pytest's private tmp directory is not.
    directory = Path(tempfile.mkdtemp(prefix="pureboot-bus-"))
    directory.chmod(0o755)
    bus = None
    try:
        bus = Bus(directory)
        config = (REPO / "tests/integration/system-bus.conf.in").read_text()
        config = config.replace("@SOCKET@", str(bus.socket)).replace(
            "@POLICY@", str(REPO / "dbus/org.pureboot.Controller1.conf"))
        config = config.replace("</busconfig>", extra_policy + "</busconfig>")
        (directory / "bus.conf").write_text(config)
        bus.spawn(["dbus-daemon", "--nofork", f"--config-file={directory / 'bus.conf'}"], directory / "dbus.log")
        wait_for(bus.socket.exists, what="the private system bus")
        bus.spawn(["/usr/lib/polkit-1/polkitd", "--no-debug"], directory / "polkitd.log")
        wait_for(lambda: bus.name_has_owner("org.freedesktop.PolicyKit1"), what="polkitd on the bus")
        yield bus
    finally:
        # What the tests left running goes first; dbus-daemon and polkitd (the first two) must end cleanly.
        ended = [stop_process(proc) for proc in reversed(bus.procs if bus else [])][-2:]
        shutil.rmtree(directory, ignore_errors=True)
    for name, rc in zip(("polkitd", "dbus-daemon"), ended):
        assert rc in (0, -signal.SIGTERM), f"{name} ended with {describe_status(rc)}"


class Controller(Started):
    what = "the controller"

    def __init__(self, bus, directory):
        self.bus = bus
        self.dir = directory
        self.state = directory / "state"
        self.config = directory / "controller.conf"
        self.log = directory / "controller.log"
        self.proc = None
        self.starts = 0
        self.env = {}  # more environment, such as TGT_IPC_SOCKET for a tgtd of the test's own
        self.netns = None  # a network namespace to run in (the VM suite's)
        if not self.config.exists():
            # The NFS root under the test's directory, never the machine's /srv.
            # The image tool is this build's agent, as it would be the installed one; imports work under the
            # test's directory, so a test sees what an import leaves there.
            (directory / "work").mkdir(exist_ok=True)
            self.config.write_text(f"[CA]\nKeyAlgorithm=ecdsa-p256\n[NfsRoot]\nPath={directory / 'nfsroot'}\n"
                                   f"[Images]\nVerifier={AGENT}\nWorkDirectory={directory / 'work'}\n")

    def start(self, wait=True):
        assert self.proc is None or self.stop() is not None  # the previous run's end checked
        self.starts += 1
        self.seen = False
        self.log = self.dir / f"controller-{self.starts}.log"
        self.proc = self.bus.spawn([str(CONTROLLER), f"--config={self.config}", f"--state-dir={self.state}"],
                                   self.log, self.env, netns=self.netns)
        if wait:
            def up():
                if self.proc.poll() is not None:
                    raise AssertionError(f"controller exited with {self.proc.returncode}:\n{self.log.read_text()}")
                return self.bus.name_has_owner(DEST)
            wait_for(up, what="the controller to own its name")
        return self

    def restart(self):
        assert self.stop() == 0, self.log.read_text()
        wait_for(lambda: not self.bus.name_has_owner(DEST), what="the name to be released")
        return self.start()

    def db(self):
        return sqlite3.connect(f"file:{self.state / 'pureboot.db'}?mode=ro", uri=True)

    def snapshot(self):
        """Every row of every table but the audit log, for 'nothing changed' checks."""
        with self.db() as db:
            tables = [r[0] for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN ('events', 'sqlite_sequence')")]
            return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}

    def events(self):
        with self.db() as db:
            return db.execute("SELECT uid, action, object, result FROM events ORDER BY id").fetchall()


def add_image_row(controller, backend, name="img1"):
    """An image as a whole capture leaves it, written while the controller is stopped (a capture needs a
    storage server: test_images.py has one). It holds nothing on its backend, so deleting it removes
    nothing. Returns its id."""
    assert controller.stop() == 0, controller.log.read_text()
    image = "1a9e" + "0" * 28
    with sqlite3.connect(controller.state / "pureboot.db") as db:
        db.execute("INSERT INTO images (id, name, state, backend_id, area, resources, layout_json, size_bytes, "
                   "digest, created_at, created_by) VALUES (?, ?, 'ready', ?, ?, '[]', ?, 1048576, 'xxh3-128:00', "
                   "1, 0)", (image, name, backend, "a" * 32,
                             '{"device": "/dev/sda", "sizeBytes": 1048576, "table": "gpt", "partitions": []}'))
    controller.start()
    return image


def run(argv, bus, user=None, check=False, stdin=None, timeout=60):
    if user:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--"] + list(argv)
    return subprocess.run([str(a) for a in argv], env=bus.env, capture_output=True, text=True, check=check,
                          input=stdin, timeout=timeout)


def free_port(kind=None):
    """A TCP port (kind socket.SOCK_DGRAM: a UDP one) that nothing uses on loopback now."""
    import socket
    with socket.socket(type=kind or socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bridge(Started):
    """pureboot-bridge from the build tree, run as its own unprivileged user on a loopback port."""

    what = "the bridge"

    def __init__(self, bus, directory, *args, address="127.0.0.1", http=False, tftp=False, netns=None):
        self.bus = bus
        self.netns = netns  # a network namespace to run in (the VM suite's)
        self.dir = directory
        self.args = list(args)
        self.address = address
        self.port = free_port()
        self.url = f"https://{address}:{self.port}"
        # The plain HTTP listener for firmware without TLS (/boot/ only), if asked for.
        self.http_port = free_port() if http else None
        self.http_url = f"http://{address}:{self.http_port}" if http else None
        if http:
            self.args.append(f"--http-listen={address}:{self.http_port}")
        # TFTP, for boot loaders that fetch nothing else: a free port, or the standard one (tftp=69).
        import socket
        self.tftp_port = (tftp if tftp is not True else free_port(socket.SOCK_DGRAM)) if tftp else None
        if tftp:
            self.args.append(f"--tftp-listen={address}:{self.tftp_port}")
        self.log = directory / "bridge.log"
        self.ca = directory / "ca.pem"
        self.proc = None

    def start(self):
        assert self.proc is None or self.stop() is not None  # the previous run's end checked
        self.seen = False
        # TFTP's port 69, as pureboot-bridge-tftp.socket would hand it over: the one privilege it needs.
        caps = ["--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service"] \
            if self.tftp_port and self.tftp_port < 1024 else []
        self.proc = self.bus.spawn(["setpriv", f"--reuid={BRIDGE_USER}", f"--regid={BRIDGE_USER}", "--clear-groups",
                                    *caps, str(BRIDGE), f"--listen={self.address}:{self.port}", f"--address={self.address}",
                                    "--hostname=bridge.test", f"--workflows={REPO / 'workflows'}", *self.args],
                                   self.log, netns=self.netns)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"bridge exited with {self.proc.returncode}:\n{self.log.read_text()}")
            return "serving org.pureboot.Node" in self.log.read_text()
        wait_for(up, what="the bridge to listen")
        r = run(["busctl", "--system", "--json=short", "get-property", "org.pureboot.Controller1",
                 "/org/pureboot/Controller1/ca", "org.pureboot.Controller1.CertificateAuthority", "Certificate"],
                self.bus, check=True)
        import json
        self.ca.write_text(json.loads(r.stdout)["data"])
        return self


def make_key_and_csr(directory, name, cn="chosen-by-the-node", curve=None):
    """A node's own ECDSA key (on curve, e.g. secp192r1, if given) and a CSR for it, made with certtool."""
    key, csr, template = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.cfg"
    subprocess.run(["certtool", "--generate-privkey", "--key-type=ecdsa", *([f"--curve={curve}"] if curve else []),
                    "--outfile", key], check=True, capture_output=True)
    template.write_text(f'cn = "{cn}"\n')
    subprocess.run(["certtool", "--generate-request", "--load-privkey", key, "--template", template, "--outfile", csr],
                   check=True, capture_output=True)
    return key, csr
