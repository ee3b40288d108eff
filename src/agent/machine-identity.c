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
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "device.h"
#include "disk-model.h"
#include "log.h"
#include "machine-identity.h"
#include "scan.h"
#include "tool.h"
#include "util.h"

/* The clone's files are reached only inside its root: its own symbolic links (an absolute /etc, a "..")
 * resolve as if the root were /, never into the machine the agent runs on. */
static int open_in_root(int root, const char *path, int flags, mode_t mode) {
        struct open_how how = { .flags = (uint64_t) flags | O_CLOEXEC,
                                .mode = flags & O_CREAT ? mode : 0,
                                .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
        int fd = (int) syscall(SYS_openat2, root, path, &how, sizeof(how));
        return fd < 0 ? -errno : fd;
}

static bool exists_at(int root, const char *path) {
        _cleanup_close_ int fd = open_in_root(root, path, O_PATH, 0);
        return fd >= 0;
}

/* The directory that holds path, opened inside the root, and path's last component. */
static int parent_of(int root, const char *path, const char **ret_name) {
        _cleanup_free_ char *dir = strdup(path);
        char *slash = dir ? strrchr(dir, '/') : NULL;
        if (!dir)
                return -ENOMEM;
        *ret_name = slash ? path + (slash - dir) + 1 : path;
        if (slash)
                *slash = 0;
        return open_in_root(root, slash ? dir : ".", O_PATH | O_DIRECTORY, 0);
}

/* Writes content to path in the root through a temporary file renamed over it. */
static int write_at(int root, const char *path, const char *content, mode_t mode) {
        _cleanup_close_ int dir = -EBADF, fd = -EBADF;
        _cleanup_free_ char *tmp = NULL;
        const char *name;
        size_t n = strlen(content);

        dir = parent_of(root, path, &name);
        if (dir < 0)
                return dir;
        if (asprintf(&tmp, ".%s.pureboot-new", name) < 0)
                return -ENOMEM;
        fd = openat(dir, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
                return -errno;
        /* The mode asked for, whatever the agent's umask (077 under its unit) took away. */
        if (fchmod(fd, mode) < 0 || write(fd, content, n) != (ssize_t) n || fsync(fd) < 0) {
                int r = errno ? -errno : -EIO;
                (void) unlinkat(dir, tmp, 0);
                return r;
        }
        if (renameat(dir, tmp, dir, name) < 0) {
                int r = -errno;
                (void) unlinkat(dir, tmp, 0);
                return r;
        }
        return 0;
}

/* Makes the directories above path in the root, as mkdir -p would, each inside the root. */
static int make_parents(int root, const char *path) {
        _cleanup_free_ char *dir = strdup(path);
        if (!dir)
                return -ENOMEM;
        for (char *slash = strchr(dir, '/'); slash; slash = strchr(slash + 1, '/')) {
                *slash = 0;
                const char *name;
                _cleanup_close_ int parent = parent_of(root, dir, &name);
                if (parent < 0)
                        return parent;
                if (mkdirat(parent, name, 0755) >= 0) {
                        if (fchmodat(parent, name, 0755, 0) < 0) /* past the umask */
                                return -errno;
                } else if (errno != EEXIST)
                        return -errno;
                *slash = '/';
        }
        return 0;
}

/* Writes each of files ({"/etc/x": content}) in the root: how many, or why not in *ret_error. */
static int write_files(int root, json_object *files, const char *where, char **ret_error) {
        int n = 0;
        json_object_object_foreach (files, path, content) {
                /* The controller checked the paths; here they are only ever resolved inside the root. */
                const char *rel = path + strspn(path, "/");
                int r = isempty(rel) || !path_is_safe(path, 255) ? -EINVAL : make_parents(root, rel);
                if (r >= 0)
                        r = write_at(root, rel, json_object_get_string(content), 0644);
                if (r < 0)
                        return asprintf(ret_error, "writing %s on %s failed: %s", path, where,
                                        strerror(-r)) < 0
                                       ? -ENOMEM
                                       : r;
                n++;
        }
        return n;
}

/* Removes etc/ssh/ssh_host_* in the root: how many. */
static int remove_host_keys(int root) {
        _cleanup_close_ int fd = open_in_root(root, "etc/ssh", O_RDONLY | O_DIRECTORY, 0);
        _cleanup_(closedirp) DIR *d = NULL;
        int n = 0;

        if (fd < 0)
                return fd == -ENOENT ? 0 : fd;
        d = fdopendir(fd);
        if (!d)
                return -errno;
        fd = -EBADF; /* the DIR has it */
        for (struct dirent *e; (e = readdir(d));)
                if (startswith(e->d_name, "ssh_host_")) {
                        if (unlinkat(dirfd(d), e->d_name, 0) < 0)
                                return -errno;
                        n++;
                }
        return n;
}

/* Whether root/etc/ssh is a directory reached without a symbolic link, so that a tool given the root as its
 * prefix (ssh-keygen -A -f) writes inside it. */
static bool plain_ssh_dir(const char *root) {
        _cleanup_free_ char *etc = NULL, *ssh = NULL;
        struct stat st;
        return asprintf(&etc, "%s/etc", root) >= 0 && lstat(etc, &st) == 0 && S_ISDIR(st.st_mode) &&
               asprintf(&ssh, "%s/etc/ssh", root) >= 0 && lstat(ssh, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Whether the filesystem mounted at dir is a Linux system's root: /etc and an os-release. (Its descriptor is
 * closed again before the caller unmounts.) */
static bool is_linux_root(const char *dir) {
        _cleanup_close_ int root = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        return root >= 0 && exists_at(root, "etc") &&
               (exists_at(root, "etc/os-release") || exists_at(root, "usr/lib/os-release"));
}

/* Gives the root mounted at root its identity; appends what was done to *summary. */
static int reidentify(const char *root, const char *hostname, json_object *files, const char *where,
                      char **summary, char **ret_error) {
        _cleanup_free_ char *line = NULL, *out = NULL, *wrote = NULL;
        _cleanup_close_ int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        const char *keys = "no SSH host keys";
        int r, removed, written = 0;

        if (rootfd < 0)
                return -errno;
        if (asprintf(&line, "%s\n", hostname) < 0)
                return -ENOMEM;
        r = write_at(rootfd, "etc/hostname", line, 0644);
        if (r < 0)
                return asprintf(ret_error, "writing /etc/hostname on %s failed: %s", where, strerror(-r)) < 0 ? -ENOMEM : r;
        /* An empty machine-id: a new one at the first boot. */
        if (exists_at(rootfd, "etc/machine-id")) {
                r = write_at(rootfd, "etc/machine-id", "", 0444);
                if (r < 0)
                        return asprintf(ret_error, "emptying /etc/machine-id on %s failed: %s", where, strerror(-r)) < 0
                                       ? -ENOMEM
                                       : r;
        }
        const char *name;
        struct stat st;
        _cleanup_close_ int dbus = parent_of(rootfd, "var/lib/dbus/machine-id", &name);
        if (dbus >= 0 && fstatat(dbus, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
                (void) unlinkat(dbus, name, 0); /* D-Bus reads systemd's when its own is missing */
        removed = remove_host_keys(rootfd);
        if (removed < 0)
                return asprintf(ret_error, "removing the SSH host keys on %s failed: %s", where, strerror(-removed)) < 0
                               ? -ENOMEM
                               : removed;
        if (removed > 0 && plain_ssh_dir(root)) {
                /* New keys now, as the system's own ssh-keygen would make them; without one, at first boot. */
                r = tool_runl(&out, "ssh-keygen", "-A", "-f", root, NULL);
                keys = r == 0 ? "new SSH host keys" : "SSH host keys removed (made again at first boot)";
                if (r != 0)
                        log_warning("ssh-keygen -A -f %s: %s; the clone makes its keys at first boot.", root,
                                    r > 0 && out ? tool_last_line(out) : "could not run");
        }
        if (files && (written = write_files(rootfd, files, where, ret_error)) < 0)
                return written;
        if (written > 0 && asprintf(&wrote, ", %d file%s written", written, written == 1 ? "" : "s") < 0)
                return -ENOMEM;
        return strextend_printf(summary, "%s%s: host name %s, machine-id emptied, %s%s",
                                *summary ? "; " : "", where, hostname, keys, strempty(wrote)) < 0
                       ? -ENOMEM
                       : 1;
}

int machine_identity_apply(const char *disk, const char *hostname, json_object *files, char **ret_summary,
                           char **ret_error) {
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
                node = partition_node_wait(disk, p->number);
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
                is_root = is_linux_root(m.dir);
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
                r = reidentify(m.dir, hostname, files, where, &summary, ret_error);
                device_umount(&m);
                if (r < 0)
                        return r;
        }
        *ret_summary = summary ? TAKE_PTR(summary) : strdup("no Linux root filesystem, nothing to change");
        return *ret_summary ? 0 : -ENOMEM;
}
