/* SPDX-License-Identifier: MIT */
/* A clone's own identity, given on the target after its copy. Each partition with a filesystem a Linux
 * root lives on is mounted for the moment; one holding /etc and an os-release is a root: its /etc/hostname
 * is written (atomically), /etc/machine-id emptied (not removed: an empty one is what systemd takes as "not
 * yet initialised" and fills at first boot; /var/lib/dbus/machine-id, where it is a file of its own, goes)
 * and its SSH host keys replaced with new ones (ssh-keygen -A with the root as prefix), or removed where
 * there is no ssh-keygen, for the system to make at its first boot. NTFS is left as it is: Debian has no
 * tool that sets a Windows computer name offline, and the summary says so. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "device.h"
#include "disk-model.h"
#include "log.h"
#include "machine-identity.h"
#include "scan.h"
#include "tool.h"
#include "util.h"

static bool exists_at(const char *root, const char *path) {
        _cleanup_free_ char *p = NULL;
        struct stat st;
        return asprintf(&p, "%s/%s", root, path) >= 0 && lstat(p, &st) == 0;
}

/* Writes content to root/path through a temporary file renamed over it. */
static int write_at(const char *root, const char *path, const char *content, mode_t mode) {
        _cleanup_free_ char *p = NULL, *tmp = NULL;
        _cleanup_close_ int fd = -EBADF;
        size_t n = strlen(content);

        if (asprintf(&p, "%s/%s", root, path) < 0 || asprintf(&tmp, "%s.pureboot-new", p) < 0)
                return -ENOMEM;
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
                return -errno;
        if (write(fd, content, n) != (ssize_t) n || fsync(fd) < 0) {
                int r = errno ? -errno : -EIO;
                (void) unlink(tmp);
                return r;
        }
        if (rename(tmp, p) < 0) {
                int r = -errno;
                (void) unlink(tmp);
                return r;
        }
        return 0;
}

/* Removes root/etc/ssh/ssh_host_*: how many. */
static int remove_host_keys(const char *root) {
        _cleanup_free_ char *dir = NULL;
        _cleanup_(closedirp) DIR *d = NULL;
        int n = 0;

        if (asprintf(&dir, "%s/etc/ssh", root) < 0)
                return -ENOMEM;
        d = opendir(dir);
        if (!d)
                return errno == ENOENT ? 0 : -errno;
        for (struct dirent *e; (e = readdir(d));)
                if (startswith(e->d_name, "ssh_host_")) {
                        if (unlinkat(dirfd(d), e->d_name, 0) < 0)
                                return -errno;
                        n++;
                }
        return n;
}

/* Gives the root mounted at root its identity; appends what was done to *summary. */
static int reidentify(const char *root, const char *hostname, const char *where, char **summary, char **ret_error) {
        _cleanup_free_ char *line = NULL, *out = NULL;
        const char *keys = "no SSH host keys";
        int r, removed;

        if (asprintf(&line, "%s\n", hostname) < 0)
                return -ENOMEM;
        r = write_at(root, "etc/hostname", line, 0644);
        if (r < 0)
                return asprintf(ret_error, "writing /etc/hostname on %s failed: %s", where, strerror(-r)) < 0 ? -ENOMEM : r;
        /* An empty machine-id: a new one at the first boot. */
        if (exists_at(root, "etc/machine-id")) {
                r = write_at(root, "etc/machine-id", "", 0444);
                if (r < 0)
                        return asprintf(ret_error, "emptying /etc/machine-id on %s failed: %s", where, strerror(-r)) < 0
                                       ? -ENOMEM
                                       : r;
        }
        _cleanup_free_ char *dbus_id = NULL;
        struct stat st;
        if (asprintf(&dbus_id, "%s/var/lib/dbus/machine-id", root) < 0)
                return -ENOMEM;
        if (lstat(dbus_id, &st) == 0 && S_ISREG(st.st_mode))
                (void) unlink(dbus_id); /* D-Bus reads systemd's when its own is missing */
        removed = remove_host_keys(root);
        if (removed < 0)
                return asprintf(ret_error, "removing the SSH host keys on %s failed: %s", where, strerror(-removed)) < 0
                               ? -ENOMEM
                               : removed;
        if (removed > 0) {
                /* New keys now, as the system's own ssh-keygen would make them; without one, at first boot. */
                r = tool_runl(&out, "ssh-keygen", "-A", "-f", root, NULL);
                keys = r == 0 ? "new SSH host keys" : "SSH host keys removed (made again at first boot)";
                if (r != 0)
                        log_warning("ssh-keygen -A -f %s: %s; the clone makes its keys at first boot.", root,
                                    r > 0 && out ? tool_last_line(out) : "could not run");
        }
        return strextend_printf(summary, "%s%s: host name %s, machine-id emptied, %s", *summary ? "; " : "", where,
                                hostname, keys) < 0
                       ? -ENOMEM
                       : 1;
}

int machine_identity_apply(const char *disk, const char *hostname, char **ret_summary, char **ret_error) {
        _cleanup_(disk_info_done) DiskInfo info = {};
        _cleanup_free_ char *summary = NULL;
        int r;

        *ret_summary = *ret_error = NULL;
        if (!hostname_is_valid(hostname))
                return asprintf(ret_error, "the node's name \"%s\" is no host name", strna(hostname)) < 0 ? -ENOMEM : -EINVAL;
        r = scan_disk(disk, &info);
        if (r < 0)
                return asprintf(ret_error, "scanning %s failed: %s", disk, strerror(-r)) < 0 ? -ENOMEM : r;
        if (info.n_partitions > 0 && (r = scan_tell_kernel(disk)) < 0)
                return asprintf(ret_error, "the kernel did not take the partition table of %s: %s", disk,
                                strerror(-r)) < 0
                               ? -ENOMEM
                               : r;
        for (size_t i = 0; i < info.n_partitions; i++) {
                const PartitionInfo *p = &info.partitions[i];
                _cleanup_free_ char *node = NULL, *where = NULL;
                DeviceMount m;

                if (streq_ptr(p->filesystem, "ntfs")) {
                        if (strextend_printf(&summary, "%spartition %u (ntfs): left as it is, Windows keeps its "
                                             "computer name (no tool here sets it offline)",
                                             summary ? "; " : "", p->number) < 0)
                                return -ENOMEM;
                        continue;
                }
                if (!p->filesystem || !STR_IN_SET(p->filesystem, "ext2", "ext3", "ext4", "xfs", "btrfs"))
                        continue;
                node = partition_node(disk, p->number);
                if (!node)
                        return asprintf(ret_error, "partition %u of %s has no device", p->number, disk) < 0 ? -ENOMEM : -ENODEV;
                /* A look first, read-only and without replaying a journal, so that a filesystem that is no
                 * root stays byte for byte what was copied; then, for a root, a writable mount. xfs: a
                 * clone has its source's UUID, which may be mounted on this machine too. */
                bool xfs = streq(p->filesystem, "xfs"), is_root;
                r = device_mount(node, p->filesystem, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                                 xfs ? "norecovery,nouuid" : streq(p->filesystem, "btrfs") ? NULL : "noload", &m);
                if (r < 0)
                        return asprintf(ret_error, "mounting %s (%s) failed: %s", node, p->filesystem, strerror(-r)) < 0
                                       ? -ENOMEM
                                       : r;
                if (!m.ours) {
                        device_umount(&m);
                        return asprintf(ret_error, "%s is mounted at %s already; a target's disk must not be in use",
                                        node, m.dir) < 0
                                       ? -ENOMEM
                                       : -EBUSY;
                }
                is_root = exists_at(m.dir, "etc") &&
                          (exists_at(m.dir, "etc/os-release") || exists_at(m.dir, "usr/lib/os-release"));
                device_umount(&m);
                if (!is_root)
                        continue;
                if (asprintf(&where, "partition %u (%s)", p->number, p->filesystem) < 0)
                        return -ENOMEM;
                r = device_mount(node, p->filesystem, MS_NOSUID | MS_NODEV | MS_NOEXEC, xfs ? "nouuid" : NULL, &m);
                if (r < 0)
                        return asprintf(ret_error, "mounting %s (%s) to write failed: %s", node, p->filesystem,
                                        strerror(-r)) < 0
                                       ? -ENOMEM
                                       : r;
                r = reidentify(m.dir, hostname, where, &summary, ret_error);
                device_umount(&m);
                if (r < 0)
                        return r;
        }
        *ret_summary = summary ? TAKE_PTR(summary) : strdup("no Linux root filesystem, nothing to change");
        return *ret_summary ? 0 : -ENOMEM;
}
