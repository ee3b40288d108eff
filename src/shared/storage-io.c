/* SPDX-License-Identifier: MIT */
/* Staging backends reached from userspace: libnfs for NFS exports, libiscsi for iSCSI LUNs. */
#include <errno.h>
#include <fcntl.h>
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <unistd.h>

#include <nfsc/libnfs.h>

#include "json-util.h"
#include "storage-io.h"
#include "util.h"

static int why_set(char **ret_why, int r, const char *format, ...) _printf_(3, 4);
static int why_set(char **ret_why, int r, const char *format, ...) {
        va_list ap;
        if (ret_why) {
                free(*ret_why);
                *ret_why = NULL;
                va_start(ap, format);
                if (vasprintf(ret_why, format, ap) < 0)
                        *ret_why = NULL;
                va_end(ap);
        }
        return r;
}

/* libnfs returns -errno from its sync calls, or -1 with only a message; keep what it said either way. */
static int nfs_errno(int r) {
        return r < -1 ? r : -EIO;
}

int storage_nfs_connect(const StorageLocation *l, bool force_v3, struct nfs_context **ret, char **ret_why) {
        const char *server = json_get_string(l->config, "server"), *export = json_get_string(l->config, "export");
        const char *options = json_get_string(l->config, "options"), *version = json_get_string(l->config, "version");
        _cleanup_free_ char *url = NULL;
        struct nfs_context *nfs;
        struct nfs_url *u;
        int v = force_v3 || !version ? 3 : atoi(version);

        if (!server || !export)
                return why_set(ret_why, -EINVAL, "the backend names no server or export");
        /* Options are libnfs URL arguments (nfsport=2049,mountport=20048,uid=0,…); the version is ours. */
        if (asprintf(&url, "nfs://%s%s?version=%d%s%s", server, export, v, options ? "&" : "", strempty(options)) < 0)
                return -ENOMEM;
        for (char *p = strchr(url, '?'); p && *p; p++)
                if (*p == ',')
                        *p = '&';
        nfs = nfs_init_context();
        if (!nfs)
                return -ENOMEM;
        nfs_set_timeout(nfs, STORAGE_IO_TIMEOUT_SEC * 1000);
        u = nfs_parse_url_dir(nfs, url);
        if (!u) {
                int r = why_set(ret_why, -EINVAL, "the NFS options do not parse: %s", nfs_get_error(nfs));
                nfs_destroy_context(nfs);
                return r;
        }
        int r = nfs_mount(nfs, u->server, u->path);
        nfs_destroy_url(u);
        if (r < 0) {
                r = why_set(ret_why, nfs_errno(r), "mounting %s:%s (NFSv%d) failed: %s", server, export, v,
                            nfs_get_error(nfs));
                nfs_destroy_context(nfs);
                return r;
        }
        *ret = nfs;
        return 0;
}

int storage_nfs_mkdir_p(struct nfs_context *nfs, const char *path, char **ret_why) {
        _cleanup_free_ char *p = strdup(path);
        int r;

        if (!p)
                return -ENOMEM;
        for (char *slash = p + 1;; slash++) {
                char c = *slash;
                if (c && c != '/')
                        continue;
                *slash = 0;
                r = nfs_mkdir2(nfs, p, 0755);
                if (r < 0 && r != -EEXIST) {
                        struct nfs_stat_64 st;
                        if (nfs_stat64(nfs, p, &st) < 0 || (st.nfs_mode & S_IFMT) != S_IFDIR)
                                return why_set(ret_why, nfs_errno(r), "creating %s on the export failed: %s", p,
                                               nfs_get_error(nfs));
                }
                *slash = c;
                if (!c)
                        return 0;
        }
}

int storage_nfs_rm_rf(struct nfs_context *nfs, const char *path, char **ret_why) {
        struct nfs_stat_64 st;
        struct nfsdir *dir;
        struct nfsdirent *e;
        int r;

        r = nfs_lstat64(nfs, path, &st);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return why_set(ret_why, nfs_errno(r), "looking at %s on the export failed: %s", path,
                               nfs_get_error(nfs));
        if ((st.nfs_mode & S_IFMT) != S_IFDIR) {
                r = nfs_unlink(nfs, path);
                return r < 0 && r != -ENOENT ? why_set(ret_why, nfs_errno(r), "removing %s failed: %s", path,
                                                       nfs_get_error(nfs))
                                             : 0;
        }
        r = nfs_opendir(nfs, path, &dir);
        if (r < 0)
                return why_set(ret_why, nfs_errno(r), "reading %s failed: %s", path, nfs_get_error(nfs));
        while ((e = nfs_readdir(nfs, dir))) {
                _cleanup_free_ char *child = NULL;
                if (streq(e->name, ".") || streq(e->name, ".."))
                        continue;
                if (asprintf(&child, "%s/%s", path, e->name) < 0) {
                        nfs_closedir(nfs, dir);
                        return -ENOMEM;
                }
                r = storage_nfs_rm_rf(nfs, child, ret_why);
                if (r < 0) {
                        nfs_closedir(nfs, dir);
                        return r;
                }
        }
        nfs_closedir(nfs, dir);
        r = nfs_rmdir(nfs, path);
        return r < 0 && r != -ENOENT
                       ? why_set(ret_why, nfs_errno(r), "removing %s failed: %s", path, nfs_get_error(nfs))
                       : 0;
}

int storage_nfs_space(struct nfs_context *nfs, uint64_t *ret_total, uint64_t *ret_available, char **ret_why) {
        struct nfs_statvfs_64 st;
        int r = nfs_statvfs64(nfs, "/", &st);
        if (r < 0)
                return why_set(ret_why, nfs_errno(r), "FSSTAT of the export failed: %s", nfs_get_error(nfs));
        *ret_total = st.f_blocks * st.f_frsize;
        *ret_available = st.f_bavail * st.f_frsize;
        return 0;
}

int storage_nfs_pwrite(struct nfs_context *nfs, struct nfsfh *fh, const void *buf, size_t size, uint64_t offset) {
        const uint8_t *p = buf;
        while (size > 0) {
                int n = nfs_pwrite(nfs, fh, offset, size, p);
                if (n <= 0)
                        return n < 0 ? nfs_errno(n) : -EIO;
                p += n;
                size -= (size_t) n;
                offset += (uint64_t) n;
        }
        return 0;
}

int storage_nfs_pread(struct nfs_context *nfs, struct nfsfh *fh, void *buf, size_t size, uint64_t offset) {
        uint8_t *p = buf;
        while (size > 0) {
                int n = nfs_pread(nfs, fh, offset, size, p);
                if (n < 0)
                        return nfs_errno(n);
                if (n == 0)
                        return -ENODATA; /* shorter than it should be */
                p += n;
                size -= (size_t) n;
                offset += (uint64_t) n;
        }
        return 0;
}

int storage_nfs_probe(struct nfs_context *nfs, char **ret_why) {
        char name[64], back[64] = "", data[64];
        struct nfsfh *fh;
        int r;

        snprintf(name, sizeof(name), "/.pureboot-probe-%d", (int) getpid());
        snprintf(data, sizeof(data), "PureBoot probe %d\n", (int) getpid());
        r = nfs_open2(nfs, name, O_CREAT | O_RDWR | O_TRUNC, 0600, &fh);
        if (r < 0)
                return why_set(ret_why, nfs_errno(r), "creating a probe file on the export failed: %s",
                               nfs_get_error(nfs));
        r = storage_nfs_pwrite(nfs, fh, data, strlen(data), 0);
        if (r >= 0)
                r = storage_nfs_pread(nfs, fh, back, strlen(data), 0);
        nfs_close(nfs, fh);
        (void) nfs_unlink(nfs, name);
        if (r < 0)
                return why_set(ret_why, r, "writing and reading back a probe file failed: %s", nfs_get_error(nfs));
        if (memcmp(back, data, strlen(data)) != 0)
                return why_set(ret_why, -EIO, "the probe file read back differs from what was written");
        return 0;
}

/* The configured portal, with the iSCSI port if none is given. */
static char *portal_with_port(const char *portal) {
        const char *bracket = strchr(portal, ']'), *colon = strrchr(portal, ':');
        bool has_port = portal[0] == '[' ? bracket && bracket[1] == ':' : colon && colon == strchr(portal, ':');
        char *p;
        return asprintf(&p, has_port ? "%s" : "%s:3260", portal) < 0 ? NULL : p;
}

int storage_iscsi_connect(const StorageLocation *l, int lun, const char *initiator, IscsiLun *ret, char **ret_why) {
        const char *target = json_get_string(l->config, "target"), *user = json_get_string(l->config, "chap_user");
        _cleanup_free_ char *iqn = NULL, *portal = NULL;
        IscsiLun x = { .lun = lun };

        if (!json_get_string(l->config, "portal") || !target)
                return why_set(ret_why, -EINVAL, "the backend names no portal or target");
        if (x.lun < 0)
                x.lun = (int) json_get_int(l->config, "lun");
        portal = portal_with_port(json_get_string(l->config, "portal"));
        if (!portal || asprintf(&iqn, "iqn.2024-01.org.pureboot:%s", initiator) < 0)
                return -ENOMEM;
        x.iscsi = iscsi_create_context(iqn);
        if (!x.iscsi)
                return -ENOMEM;
        (void) iscsi_set_timeout(x.iscsi, STORAGE_IO_TIMEOUT_SEC);
        if (iscsi_set_targetname(x.iscsi, target) < 0 || iscsi_set_session_type(x.iscsi, ISCSI_SESSION_NORMAL) < 0 ||
            iscsi_set_header_digest(x.iscsi, ISCSI_HEADER_DIGEST_NONE_CRC32C) < 0 ||
            (user && iscsi_set_initiator_username_pwd(x.iscsi, user, strempty(l->secret)) < 0)) {
                int r = why_set(ret_why, -EINVAL, "%s", iscsi_get_error(x.iscsi));
                storage_iscsi_disconnect(&x);
                return r;
        }
        if (iscsi_full_connect_sync(x.iscsi, portal, x.lun) < 0) {
                const char *e = iscsi_get_error(x.iscsi);
                int r = why_set(ret_why, -ECONNREFUSED, "logging in to %s at %s failed%s: %s", target, portal,
                                user && strstr(e, "uthentication") ? " (check chap_user and chap_secret)" : "", e);
                storage_iscsi_disconnect(&x);
                return r;
        }
        *ret = x;
        return 0;
}

int storage_iscsi_capacity(IscsiLun *l, char **ret_why) {
        struct scsi_readcapacity16 *rc16;
        struct scsi_task *task = iscsi_readcapacity16_sync(l->iscsi, l->lun);

        if (!task || task->status != SCSI_STATUS_GOOD || !(rc16 = scsi_datain_unmarshall(task))) {
                int r = why_set(ret_why, -EIO, "READ CAPACITY of LUN %d failed (is it a disk?): %s", l->lun,
                                iscsi_get_error(l->iscsi));
                if (task)
                        scsi_free_scsi_task(task);
                return r;
        }
        l->block_size = rc16->block_length;
        l->size = (rc16->returned_lba + 1) * rc16->block_length;
        l->reads_zeroes = rc16->lbpme && rc16->lbprz;
        scsi_free_scsi_task(task);
        if (l->block_size == 0 || l->block_size > 65536 || (l->block_size & (l->block_size - 1)))
                return why_set(ret_why, -EIO, "LUN %d has an unusable block size %u", l->lun, l->block_size);
        return 0;
}

void storage_iscsi_disconnect(IscsiLun *l) {
        if (!l->iscsi)
                return;
        (void) iscsi_logout_sync(l->iscsi);
        iscsi_destroy_context(l->iscsi);
        l->iscsi = NULL;
}

static void iscsi_io_done(struct iscsi_context *iscsi, int status, void *command_data, void *userdata) {
        IscsiIo *io = userdata;
        struct scsi_task *task = command_data;

        if (status != SCSI_STATUS_GOOD || !task)
                io->error = why_set(&io->why, status == SCSI_STATUS_CANCELLED ? -ECANCELED : -EIO,
                                    "%s of LUN %d at %llu failed: %s", io->write ? "WRITE" : "READ",
                                    io->lun->lun, (unsigned long long) io->offset, iscsi_get_error(iscsi));
        else if (!io->write) {
                if (task->datain.size < 0 || (size_t) task->datain.size != io->size)
                        io->error = why_set(&io->why, -EIO,
                                            "READ of LUN %d at %llu returned %d bytes of %zu", io->lun->lun,
                                            (unsigned long long) io->offset, task->datain.size, io->size);
                else
                        memcpy(io->buf, task->datain.data, io->size);
        }
        if (task)
                scsi_free_scsi_task(task);
        io->in_flight = false;
        io->done = true;
        io->lun->in_flight--;
}

int storage_iscsi_submit(IscsiLun *l, IscsiIo *io, char **ret_why) {
        struct scsi_task *task;

        if (io->offset % l->block_size || io->size % l->block_size || io->offset + io->size > l->size)
                return why_set(ret_why, -EINVAL, "an I/O outside the LUN or not of whole blocks");
        io->lun = l;
        io->done = false;
        io->error = 0;
        io->why = mfree(io->why);
        task = io->write
                       ? iscsi_write16_task(l->iscsi, l->lun, io->offset / l->block_size, io->buf,
                                            (uint32_t) io->size, (int) l->block_size, 0, 0, 0, 0, 0,
                                            iscsi_io_done, io)
                       : iscsi_read16_task(l->iscsi, l->lun, io->offset / l->block_size, (uint32_t) io->size,
                                           (int) l->block_size, 0, 0, 0, 0, 0, iscsi_io_done, io);
        if (!task)
                return why_set(ret_why, -EIO, "queueing a %s of LUN %d failed: %s",
                               io->write ? "WRITE" : "READ", l->lun, iscsi_get_error(l->iscsi));
        io->in_flight = true;
        l->in_flight++;
        return 0;
}

int storage_iscsi_service(IscsiLun *l, char **ret_why) {
        unsigned before = l->in_flight;

        while (l->in_flight == before && before > 0) {
                struct pollfd p = { .fd = iscsi_get_fd(l->iscsi),
                                    .events = (short) iscsi_which_events(l->iscsi) };
                /* No events: a reconnect is under way; libiscsi asks for a wait. Every second, its timeouts.
                 */
                int n = p.events ? poll(&p, 1, 1000) : (usleep(100 * 1000), 0);
                if (n < 0 && errno != EINTR)
                        return why_set(ret_why, -errno, "waiting for LUN %d failed: %m", l->lun);
                if (iscsi_service(l->iscsi, n > 0 ? p.revents : 0) < 0)
                        return why_set(ret_why, -EIO, "the connection to LUN %d failed: %s", l->lun,
                                       iscsi_get_error(l->iscsi));
        }
        return 0;
}

void storage_iscsi_drain(IscsiLun *l) {
        while (l->in_flight > 0)
                if (storage_iscsi_service(l, NULL) < 0) {
                        (void) iscsi_scsi_cancel_all_tasks(l->iscsi); /* each finishes, cancelled */
                        break;
                }
}

/* One I/O, waited for: the asynchronous path with one command in flight. */
static int iscsi_io(IscsiLun *l, bool write, void *buf, size_t size, uint64_t offset, char **ret_why) {
        IscsiIo io = { .buf = buf, .size = size, .offset = offset, .write = write };
        int r = storage_iscsi_submit(l, &io, ret_why);

        while (r >= 0 && io.in_flight)
                r = storage_iscsi_service(l, ret_why);
        if (io.in_flight)
                storage_iscsi_drain(l); /* io is on this stack: nothing may finish into it later */
        if (r >= 0 && io.error < 0) {
                r = io.error;
                if (ret_why) {
                        free(*ret_why);
                        *ret_why = TAKE_PTR(io.why);
                }
        }
        free(io.why);
        return r;
}

int storage_iscsi_pwrite(IscsiLun *l, const void *buf, size_t size, uint64_t offset, char **ret_why) {
        return iscsi_io(l, true, (void *) buf, size, offset, ret_why);
}

int storage_iscsi_pread(IscsiLun *l, void *buf, size_t size, uint64_t offset, char **ret_why) {
        return iscsi_io(l, false, buf, size, offset, ret_why);
}

#define MIB (UINT64_C(1) << 20)

uint64_t staging_manifest_offset(uint64_t disk_size) {
        return (disk_size + MIB - 1) / MIB * MIB;
}

uint64_t staging_lun_size(uint64_t disk_size) {
        /* The manifest holds 32 hex digits per 1 MiB chunk, and its other fields fit in 64 KiB. */
        uint64_t manifest = (disk_size + MIB - 1) / MIB * 33 + 65536;
        return staging_manifest_offset(disk_size) + (manifest + MIB - 1) / MIB * MIB;
}
