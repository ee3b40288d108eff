# SPDX-License-Identifier: MIT
"""Real staging servers for the staged-clone tests, each in a network namespace of its own on the test's bridge:
nfs-ganesha (VFS export, NFSv3 and v4) with its rpcbind, and tgtd with file-backed LUNs. Both are stopped by
PID and their namespaces removed by name, also when a test fails.

Facts found on Debian 12 that shape this: `rpcbind -h 127.0.0.1` crashes, so rpcbind listens on everything
but only inside the namespace; rpcbind's and ganesha's state (/run, /var/lib/nfs) go on tmpfs in a private
mount namespace, so nothing of the host's is touched; ganesha needs `-p PIDFILE`; `Attr_Expiration_Time = 0`
in the export, or a file written through one client is seen stale through another. tgtd does not stop on
SIGTERM while it has targets: they go offline and are deleted first."""

import os
import subprocess
import time
from pathlib import Path

from harness import Started, wait_for

GANESHA_CONF = """\
NFS_CORE_PARAM {{
  Protocols = 3, 4;
  NFS_Port = 2049;
  MNT_Port = 20048;
  NLM_Port = 32803;
  Rquota_Port = 875;
  Enable_RQUOTA = false;
}}
NFSV4 {{ Graceless = true; RecoveryBackend = fs; }}
NFS_KRB5 {{ Active_krb5 = false; }}
EXPORT {{
  Export_Id = 1;
  Path = {export};
  Pseudo = {export};
  Access_Type = RW;
  Squash = No_Root_Squash;
  Protocols = 3, 4;
  Transports = TCP;
  SecType = sys;
  Attr_Expiration_Time = 0;
  FSAL {{ Name = VFS; }}
}}
LOG {{ Default_Log_Level = EVENT; }}
"""


class NfsServer(Started):
    """nfs-ganesha exporting directory/export, at (network.node('nfs') address):/…/export."""

    what = "nfs-ganesha"
    group = True

    def __init__(self, network, directory, name="nfs"):
        self.network, self.dir, self.name = network, Path(directory), name
        self.export = self.dir / f"{name}-export"
        self.log = self.dir / f"{name}-ganesha.log"
        self.proc = None

    def __enter__(self):
        self.export.mkdir(parents=True, exist_ok=True)
        self.ns, self.address = self.network.node(self.name)
        conf = self.dir / f"{self.name}-ganesha.conf"
        conf.write_text(GANESHA_CONF.format(export=self.export))
        script = (f"mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /var/lib/nfs && mkdir -p /run/ganesha && "
                  f"rpcbind -w -f & sleep 0.3; exec ganesha.nfsd -F -f {conf} -L {self.log} "
                  f"-p /run/ganesha/ganesha.pid -N NIV_EVENT")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, "unshare", "-m", "--propagation", "private",
                                      "sh", "-c", script], stdout=open(self.dir / f"{self.name}-server.out", "w"),
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"ganesha exited with {self.proc.returncode}:\n{self.log_text()}")
            return "NFS SERVER INITIALIZED" in self.log_text()
        try:
            wait_for(up, timeout=60, what="nfs-ganesha to serve", interval=0.2)
        except BaseException:
            self.__exit__()
            raise
        return self

    def log_text(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __exit__(self, *exc):
        self.stop(timeout=15)

    def config(self, **extra):
        """KEY=VALUE settings for purebootctl storage add --type nfs."""
        settings = {"server": self.address, "export": str(self.export), "version": "3", **extra}
        return [f"{k}={v}" for k, v in settings.items()]


class IscsiServer(Started):
    """tgtd on (network.node('iscsi') address):3260 serving target iqn, its IPC socket under directory."""

    what = "tgtd"
    group = True

    def __init__(self, network, directory, name="iscsi", iqn="iqn.2026-11.org.pureboot.test:staging"):
        self.network, self.dir, self.name, self.iqn = network, Path(directory), name, iqn
        self.log = self.dir / f"{name}-tgtd.log"
        self.socket_dir = self.dir / f"{name}-tgt"
        self.env = dict(os.environ, TGT_IPC_SOCKET=str(self.socket_dir / "socket"))
        self.proc = None

    def tgtadm(self, *args, check=True):
        r = subprocess.run(["tgtadm", "--lld", "iscsi", *map(str, args)], env=self.env, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise AssertionError(f"tgtadm {' '.join(map(str, args))}: {r.stderr}")
        return r

    def __enter__(self):
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.ns, self.address = self.network.node(self.name)
        self.portal = f"{self.address}:3260"
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, "tgtd", "-f", "--iscsi", f"portal={self.portal}"],
                                     env=self.env, stdout=open(self.log, "w"),
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for(lambda: self.tgtadm("--mode", "sys", "--op", "show", check=False).returncode == 0,
                     timeout=20, what="tgtd to answer", interval=0.1)
            self.tgtadm("--mode", "target", "--op", "new", "--tid", 1, "--targetname", self.iqn)
            self.tgtadm("--mode", "target", "--op", "bind", "--tid", 1, "--initiator-address", "ALL")
        except BaseException:
            self.__exit__()
            raise
        return self

    def add_lun(self, lun, size):
        """A file-backed LUN of size bytes (sparse)."""
        backing = self.dir / f"{self.name}-lun{lun}.img"
        with open(backing, "wb") as f:
            f.truncate(size)
        self.tgtadm("--mode", "logicalunit", "--op", "new", "--tid", 1, "--lun", lun, "--backing-store", backing)
        return backing

    def chap(self, user, secret):
        self.tgtadm("--mode", "account", "--op", "new", "--user", user, "--password", secret)
        self.tgtadm("--mode", "account", "--op", "bind", "--tid", 1, "--user", user)

    def luns(self):
        out = self.tgtadm("--mode", "target", "--op", "show").stdout
        return [int(line.split()[1]) for line in out.splitlines() if line.strip().startswith("LUN:")]

    def __exit__(self, *exc):
        if not self.proc or self.proc.poll() is not None:
            self.stop()  # checks how it ended
            return
        self.tgtadm("--mode", "sys", "--op", "update", "--name", "State", "-v", "offline", check=False)
        self.tgtadm("--mode", "target", "--op", "delete", "--force", "--tid", 1, check=False)
        self.tgtadm("--mode", "sys", "--op", "delete", check=False)
        deadline = time.monotonic() + 10
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        self.stop(timeout=15)

    def config(self, **extra):
        settings = {"portal": self.portal, "target": self.iqn, **extra}
        return [f"{k}={v}" for k, v in settings.items()]
