/* SPDX-License-Identifier: MIT */
/* Boot answers, for firmware that cannot enrol: GET /boot/ipxe?mac=… returns an iPXE script, GET
 * /boot/grub?mac=… a GRUB script (also served by TFTP, tftp.c) and GET /boot/pi?serial=…&mac=… the Pi boot
 * script's JSON. The controller decides what the machine does (Gateway.Boot); the workflow it names says
 * which kernel, initrd and command line. GET /boot/files/PATH serves the kernels and initrds under [Boot]
 * Path=. Firmware that asked over plain HTTP is sent on over plain HTTP; the agent it boots always talks
 * HTTPS. */
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "boot.h"
#include "log.h"
#include "pureboot-bus.h"
#include "pureboot-errors.h"
#include "request.h"
#include "util.h"
#include "workflow.h"

typedef struct BootCall {
        Request *req;
        const char *kind; /* ipxe, grub or pi */
        char *mac;
} BootCall;

static int reply_text(Request *req, unsigned status, const char *text) {
        req->response = MHD_create_response_from_buffer(strlen(text), (void *) text, MHD_RESPMEM_MUST_COPY);
        if (!req->response)
                return -ENOMEM;
        MHD_add_response_header(req->response, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
        req->status = status;
        return 0;
}

/* scheme://host:port of a listener, as nodes reach it. */
static char *listener_url(const Bridge *b, const Listener *l) {
        char *url = NULL;
        if (asprintf(&url, "%s://%s:%u", l->tls ? "https" : "http", b->config.address ?: b->config.hostname,
                     l->port) < 0)
                return NULL;
        return url;
}

/* The kernel command line of a deploy boot: the workflow's own, then what the agent needs. */
static char *deploy_cmdline(Bridge *b, const Workflow *w, const char *node, const char *mac, const char *ip,
                            sd_bus_message *params) {
        _cleanup_free_ char *server = listener_url(b, &b->https);
        char *line = workflow_render_cmdline(w, b->config.address ?: b->config.hostname, node, mac, ip);
        const char *k, *v;

        if (!line || !server)
                return mfree(line);
        if (strextend_printf(&line, "%spureboot.server=%s pureboot.ca=sha256:%s", *line ? " " : "", server,
                             b->ca_fingerprint) < 0)
                return mfree(line);
        if (sd_bus_message_enter_container(params, 'a', "{ss}") < 0)
                return mfree(line);
        while (sd_bus_message_read(params, "{ss}", &k, &v) > 0)
                if (strextend_printf(&line, " pureboot.%s=%s", k, v) < 0)
                        return mfree(line);
        return line;
}

void boot_reply_done(BootReply *a) {
        free(a->cmdline);
        *a = (BootReply){};
}

int boot_reply_read(Bridge *b, sd_bus_message *m, const char *mac, const char *ip, BootReply *a,
                    const char **ret_reason) {
        int r;

        /* a is filled as far as it goes, for the caller to name the state in an error. */
        r = sd_bus_message_read(m, "ssss", &a->action, &a->workflow, &a->node, &a->state);
        if (r < 0)
                return r;
        if (!STR_IN_SET(a->action, "deploy_image", "nfs_boot"))
                return 0;
        a->w = workflows_find(b->workflows, a->workflow);
        if (!a->w) {
                *ret_reason = "the workflow for this job is not installed on the bridge";
                return -ENOENT;
        }
        if (streq(a->action, "nfs_boot") != streq_ptr(a->w->install_method, "nfs")) {
                *ret_reason = streq(a->action, "nfs_boot")
                                      ? "the node's diskless workflow is not an nfs workflow"
                                      : "an nfs workflow cannot run this job";
                return -EINVAL;
        }
        a->cmdline = deploy_cmdline(b, a->w, a->node, mac, ip, m);
        if (!a->cmdline)
                return -ENOMEM;
        /* What the initramfs of a diskless node mounts (deploy/pi-nfsroot). */
        if (streq(a->action, "nfs_boot") && strextend_printf(&a->cmdline, " pureboot.nfsroot=%s:%s",
                                                             a->w->nfs_server, a->w->nfs_base_path) < 0)
                return -ENOMEM;
        return 0;
}

/* words, each in GRUB's single quotes; NULL with errno EINVAL if one holds a quote, which GRUB cannot
 * quote so. */
static char *grub_quote_words(const char *words) {
        _cleanup_free_ char *out = strdup("");
        const char *p = words;

        if (strchr(words, '\''))
                return errno = EINVAL, NULL;
        while (out && *p) {
                size_t n = strcspn(p, " ");
                if (n > 0 && strextend_printf(&out, "%s'%.*s'", *out ? " " : "", (int) n, p) < 0)
                        return NULL;
                p += n + strspn(p + n, " ");
        }
        return TAKE_PTR(out);
}

/* Where OSes put their UEFI loaders, as GRUB searches the disks for them: shim, then GRUB, of each usual
 * vendor; Windows; the removable-media path last. */
#define GRUB_DISK_LOADERS                                                                                   \
        "/EFI/debian/shimx64.efi /EFI/ubuntu/shimx64.efi /EFI/fedora/shimx64.efi /EFI/redhat/shimx64.efi "  \
        "/EFI/centos/shimx64.efi /EFI/rocky/shimx64.efi /EFI/almalinux/shimx64.efi /EFI/opensuse/shim.efi " \
        "/EFI/sles/shim.efi /EFI/debian/grubx64.efi /EFI/ubuntu/grubx64.efi /EFI/fedora/grubx64.efi "       \
        "/EFI/Microsoft/Boot/bootmgfw.efi /EFI/BOOT/BOOTX64.EFI"

char *boot_grub_script(Bridge *b, const BootReply *a, const char *mac) {
        const char *server = b->config.address ?: b->config.hostname;
        _cleanup_free_ char *args = NULL;
        char *script = NULL;
        int r;

        /* Echoed text is a workflow's name: in single quotes, with any quote in it dropped. */
        if (a->w) {
                _cleanup_free_ char *name = strdup(a->w->name);
                if (!name)
                        return NULL;
                for (char *q = name; (q = strchr(q, '\''));)
                        *q = ' ';
                args = grub_quote_words(a->cmdline);
                if (!args)
                        return NULL;
                r = asprintf(&script,
                             "# PureBoot: node %s, %s\n"
                             "echo 'PureBoot: booting the deploy image for %s'\n"
                             "linux (tftp,%s)/boot/files/%s %s\n"
                             "initrd (tftp,%s)/boot/files/%s\n"
                             "boot\n",
                             a->node, a->w->id, name, server, a->w->kernel_path, args, server,
                             a->w->initrd_path);
        } else if (STR_IN_SET(a->action, "wait", "refused"))
                r = asprintf(
                        &script,
                        "# PureBoot: node %s %s\n"
                        "echo 'PureBoot: %s; asking again in 30 s'\n"
                        "sleep 30\n"
                        "configfile (tftp,%s)/boot/grub/%s\n",
                        a->node,
                        streq(a->action, "wait") ? "waits for its clone session to start" : "is refused",
                        streq(a->action, "wait") ? "a clone session names this machine but is not started"
                                                 : "another machine holds this node's identity now",
                        server, mac);
        else
                /* GRUB's exit returns success, after which EDK2 firmware shows its menu rather than go on to
                 * the next boot entry: the OS loader on the machine's disks is started from here instead,
                 * the first found of the usual ones (shim first: under Secure Boot it is what GRUB may
                 * start); exit only when there is none. */
                r = asprintf(
                        &script,
                        "# PureBoot: node %s (%s) has no job\n"
                        "echo 'PureBoot: nothing to do for this machine; booting from its own disk'\n"
                        "for loader in %s; do\n"
                        "        if search --no-floppy --set=root --file $loader; then\n"
                        "                echo \"PureBoot: starting $loader on $root\"\n"
                        "                chainloader $loader\n"
                        "                boot\n"
                        "        fi\n"
                        "done\n"
                        "echo 'PureBoot: no OS loader on this machine'\''s disks; back to the firmware'\n"
                        "exit\n",
                        a->node, a->state, GRUB_DISK_LOADERS);
        return r < 0 ? NULL : script;
}

static int render(BootCall *bc, sd_bus_message *m) {
        Request *req = bc->req;
        Bridge *b = req->bridge;
        _cleanup_free_ char *script = NULL, *here = NULL, *files = NULL;
        _cleanup_(boot_reply_done) BootReply a = {};
        const char *reason = NULL;
        int r;

        r = boot_reply_read(b, m, bc->mac, req->peer ? req->peer->address : "", &a, &reason);
        if (r < 0 && reason)
                return request_reply_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR,
                                           PB_NODE_PREFIX "InvalidState", "status", a.state, "reason",
                                           reason, NULL);
        if (r < 0)
                return r;
        const char *action = a.action, *node = a.node, *state = a.state, *cmdline = a.cmdline;
        const Workflow *w = a.w;
        if (streq(bc->kind, "grub")) {
                script = boot_grub_script(b, &a, bc->mac);
                if (!script)
                        return -errno;
                return reply_text(req, MHD_HTTP_OK, script);
        }
        if (streq(bc->kind, "pi")) {
                json_object *o = json_object_new_object();
                static const struct {
                        const char *action, *message;
                } messages[] = {
                        { "local_boot", "Nothing to do for this Pi: boot from its own storage." },
                        { "wait", "A clone session names this Pi but is not started yet: ask again soon." },
                        { "refused", "Another machine holds this Pi's identity now: ask again soon." },
                        { "deploy_image",
                          "Boot the PureBoot deploy image for the job on the command line." },
                        { "nfs_boot",
                          "Boot diskless: the root is nfs_server:nfs_path, with this Pi's overlay." },
                };
                json_object_object_add(o, "state", json_object_new_string(state));
                json_object_object_add(o, "action", json_object_new_string(action));
                for (size_t i = 0; i < ELEMENTSOF(messages); i++)
                        if (streq(action, messages[i].action))
                                json_object_object_add(o, "message",
                                                       json_object_new_string(messages[i].message));
                json_object_object_add(o, "node", json_object_new_string(node));
                if (w) {
                        json_object_object_add(o, "workflow", json_object_new_string(w->id));
                        json_object_object_add(o, "kernel", json_object_new_string(w->kernel_path));
                        json_object_object_add(o, "initrd", json_object_new_string(w->initrd_path));
                        json_object_object_add(o, "cmdline", json_object_new_string(cmdline));
                }
                if (w && streq(action, "nfs_boot")) {
                        json_object_object_add(o, "nfs_server", json_object_new_string(w->nfs_server));
                        json_object_object_add(o, "nfs_path", json_object_new_string(w->nfs_base_path));
                }
                return request_reply_json(req, MHD_HTTP_OK, o);
        }

        here = listener_url(b, req->listener);
        if (!here || asprintf(&files, "%s/boot/files", here) < 0)
                return -ENOMEM;
        if (w)
                r = asprintf(&script,
                             "#!ipxe\n"
                             "# PureBoot: node %s, %s\n"
                             "echo PureBoot: booting the deploy image for %s\n"
                             "kernel %s/%s initrd=initrd %s\n"
                             "initrd --name initrd %s/%s\n"
                             "boot\n",
                             node, w->id, w->name, b->config.boot_base_url ?: files, w->kernel_path, cmdline,
                             b->config.boot_base_url ?: files, w->initrd_path);
        else if (STR_IN_SET(action, "wait", "refused"))
                r = asprintf(&script,
                             "#!ipxe\n"
                             "# PureBoot: node %s %s\n"
                             "echo PureBoot: %s; asking again in 30 s\n"
                             "sleep 30\n"
                             "chain %s/boot/ipxe?mac=%s\n",
                             node,
                             streq(action, "wait") ? "waits for its clone session to start" : "is refused",
                             streq(action, "wait") ? "a clone session names this machine but is not started"
                                                   : "another machine holds this node's identity now",
                             here, bc->mac);
        else
                r = asprintf(&script,
                             "#!ipxe\n"
                             "# PureBoot: node %s (%s) has no job\n"
                             "echo PureBoot: nothing to do for this machine; booting from its own disk\n"
                             "exit\n",
                             node, state);
        if (r < 0)
                return -ENOMEM;
        return reply_text(req, MHD_HTTP_OK, script);
}

static int on_boot_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        BootCall *bc = userdata;
        Request *req = bc->req;
        const sd_bus_error *e = sd_bus_message_get_error(m);
        int r;
        (void) ret_error;

        if (e)
                r = request_reply_error(req,
                                        sd_bus_error_has_name(e, PB_ERROR_INVALID_ARGUMENT)
                                                ? MHD_HTTP_BAD_REQUEST
                                                : MHD_HTTP_SERVICE_UNAVAILABLE,
                                        sd_bus_error_has_name(e, PB_ERROR_INVALID_ARGUMENT)
                                                ? "org.varlink.service.InvalidParameter"
                                                : PB_NODE_PREFIX "ControllerUnavailable",
                                        "reason", e->message ?: e->name, NULL);
        else
                r = render(bc, m);
        if (r < 0) {
                log_error_errno(r, "Failed to answer a boot request: %m");
                if (!req->response)
                        (void) reply_text(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "PureBoot: internal error\n");
        }
        request_resume(req);
        /* Last: dropping the slot frees bc. */
        req->slot = sd_bus_slot_unref(req->slot);
        return 0;
}

static void boot_call_free(void *p) {
        BootCall *bc = p;
        free(bc->mac);
        free(bc);
}

int boot_ask(Bridge *b, const char *kind, const char *mac, const char *serial, const char *peer,
             sd_bus_slot **ret_slot, sd_bus_message_handler_t callback, void *userdata) {
        /* The controller knows GRUB's machines as iPXE's: x86 ones, named by MAC. */
        return sd_bus_call_method_async(
                b->bus, ret_slot, PB_BUS_NAME, PB_ROOT_PATH, PB_IFACE("Gateway"), "Boot", callback, userdata,
                "ssss", streq(kind, "pi") ? "pi" : "ipxe", strempty(mac), strempty(serial), strempty(peer));
}

int boot_answer(Request *req, const char *kind) {
        const char *mac = MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, "mac");
        const char *serial = MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, "serial");
        BootCall *bc = calloc(1, sizeof(BootCall));
        int r;

        if (!bc || !(bc->mac = strdup(strempty(mac)))) {
                free(bc);
                return -ENOMEM;
        }
        bc->req = req;
        bc->kind = kind;
        r = boot_ask(req->bridge, kind, mac, serial, req->peer ? req->peer->address : "", &req->slot,
                     on_boot_reply, bc);
        if (r >= 0)
                r = sd_bus_slot_set_destroy_callback(req->slot, boot_call_free);
        if (r < 0) {
                if (!req->slot)
                        boot_call_free(bc);
                return request_reply_error(req, MHD_HTTP_SERVICE_UNAVAILABLE,
                                           PB_NODE_PREFIX "ControllerUnavailable", "reason",
                                           "the controller cannot be reached", NULL);
        }
        request_suspend(req);
        return 0;
}

int boot_open_file(const char *dir, const char *path) {
        /* O_NONBLOCK: a FIFO put there must not stall the bridge for everyone (it is refused below). */
        struct open_how how = { .flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
                                .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
        _cleanup_close_ int dfd = -EBADF, fd = -EBADF;
        struct stat st;

        /* Per request: the directory may be filled (or made) after the bridge started. Nothing outside
         * it is reachable, not through "..", nor an absolute path, nor a symbolic link. */
        dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return -errno;
        fd = (int) syscall(SYS_openat2, dfd, path, &how, sizeof(how));
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EISDIR;
        return TAKE_FD(fd);
}

int boot_file_open(Bridge *b, const char *name, const char *who) {
        const char *path, *dir;
        int fd;

        name += strspn(name, "/"); /* shim asks HTTP for its GRUB as /boot//grubx64.efi */
        if ((path = startswith(name, "boot/files/")))
                dir = b->config.boot_dir ?: BOOT_DIR_DEFAULT;
        else
                path = name, dir = b->config.tftp_root ?: b->config.boot_dir ?: BOOT_DIR_DEFAULT;
        fd = boot_open_file(dir, path);
        /* Unreadable files are the operator's to fix; the firmware only learns there is none. */
        if (fd < 0)
                log_full_errno(fd == -EACCES ? LOG_WARNING : LOG_DEBUG, fd, "%s: \"%s\" under %s: %m%s", who,
                               path, dir,
                               fd == -EACCES ? " (it must be readable by the bridge's user)" : "");
        return fd;
}

int boot_file_answer(Request *req, const char *name) {
        _cleanup_close_ int fd = boot_file_open(req->bridge, name, "HTTP");
        struct stat st;

        if (fd < 0)
                return reply_text(req, MHD_HTTP_NOT_FOUND, "PureBoot: no such boot file\n");
        if (fstat(fd, &st) < 0)
                return -errno;
        req->response = MHD_create_response_from_fd64((uint64_t) st.st_size, fd);
        if (!req->response)
                return -ENOMEM;
        TAKE_FD(fd); /* the response closes it */
        MHD_add_response_header(req->response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
        req->status = MHD_HTTP_OK;
        return 0;
}
