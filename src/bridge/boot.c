/* SPDX-License-Identifier: MIT */
/* Boot answers, for firmware that cannot enrol: GET /boot/ipxe?mac=… returns an iPXE script and
 * GET /boot/pi?serial=…&mac=… the Pi boot script's JSON. The controller decides what the machine does
 * (Gateway.Boot); the workflow it names says which kernel, initrd and command line. GET /boot/files/PATH
 * serves the kernels and initrds under [Boot] Path=. Firmware that asked over plain HTTP is sent on over
 * plain HTTP; the agent it boots always talks HTTPS. */
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "log.h"
#include "pureboot-bus.h"
#include "pureboot-errors.h"
#include "request.h"
#include "util.h"
#include "workflow.h"

typedef struct BootCall {
        Request *req;
        bool pi;
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

static int render(BootCall *bc, sd_bus_message *m) {
        Request *req = bc->req;
        Bridge *b = req->bridge;
        const char *action, *workflow, *node, *state;
        _cleanup_free_ char *script = NULL, *cmdline = NULL, *here = NULL, *files = NULL;
        const Workflow *w = NULL;
        int r;

        r = sd_bus_message_read(m, "ssss", &action, &workflow, &node, &state);
        if (r < 0)
                return r;
        if (STR_IN_SET(action, "deploy_image", "nfs_boot")) {
                w = workflows_find(b->workflows, workflow);
                if (!w)
                        return request_reply_error(
                                req, MHD_HTTP_INTERNAL_SERVER_ERROR, PB_NODE_PREFIX "InvalidState", "status",
                                state, "reason", "the workflow for this job is not installed on the bridge",
                                NULL);
                if (streq(action, "nfs_boot") != streq_ptr(w->install_method, "nfs"))
                        return request_reply_error(
                                req, MHD_HTTP_INTERNAL_SERVER_ERROR, PB_NODE_PREFIX "InvalidState", "status",
                                state, "reason",
                                streq(action, "nfs_boot")
                                        ? "the node's diskless workflow is not an nfs workflow"
                                        : "an nfs workflow cannot run this job",
                                NULL);
                cmdline = deploy_cmdline(b, w, node, bc->mac, req->peer ? req->peer->address : "", m);
                if (!cmdline)
                        return -ENOMEM;
                /* What the initramfs of a diskless node mounts (deploy/pi-nfsroot). */
                if (streq(action, "nfs_boot") &&
                    strextend_printf(&cmdline, " pureboot.nfsroot=%s:%s", w->nfs_server, w->nfs_base_path) < 0)
                        return -ENOMEM;
        }
        if (bc->pi) {
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
                                json_object_object_add(o, "message", json_object_new_string(messages[i].message));
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

int boot_answer(Request *req, bool pi) {
        Bridge *b = req->bridge;
        const char *mac = MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, "mac");
        const char *serial = MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, "serial");
        BootCall *bc = calloc(1, sizeof(BootCall));
        int r;

        if (!bc || !(bc->mac = strdup(strempty(mac)))) {
                free(bc);
                return -ENOMEM;
        }
        bc->req = req;
        bc->pi = pi;
        r = sd_bus_call_method_async(b->bus, &req->slot, PB_BUS_NAME, PB_ROOT_PATH, PB_IFACE("Gateway"),
                                     "Boot", on_boot_reply, bc, "ssss", pi ? "pi" : "ipxe", strempty(mac),
                                     strempty(serial), req->peer ? req->peer->address : "");
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

int boot_file_answer(Request *req, const char *path) {
        const char *dir = req->bridge->config.boot_dir ?: "/srv/pureboot/boot";
        /* O_NONBLOCK: a FIFO put there must not stall the bridge for everyone (it is refused below). */
        struct open_how how = { .flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
                                .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
        _cleanup_close_ int dfd = -EBADF, fd = -EBADF;
        struct stat st;

        /* Per request: the directory may be filled (or made) after the bridge started. Nothing outside
         * it is reachable, not through "..", nor an absolute path, nor a symbolic link. */
        dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0)
                fd = (int) syscall(SYS_openat2, dfd, path, &how, sizeof(how));
        if (dfd < 0 || fd < 0) {
                /* Unreadable files are the operator's to fix; the firmware only learns there is none. */
                int e = errno;
                log_full_errno(e == EACCES ? LOG_WARNING : LOG_DEBUG, e, "Boot file \"%s\" under %s: %m%s", path, dir,
                               e == EACCES ? " (it must be readable by the bridge's user)" : "");
                return reply_text(req, MHD_HTTP_NOT_FOUND, "PureBoot: no such boot file\n");
        }
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
                return reply_text(req, MHD_HTTP_NOT_FOUND, "PureBoot: no such boot file\n");
        req->response = MHD_create_response_from_fd64((uint64_t) st.st_size, fd);
        if (!req->response)
                return -ENOMEM;
        TAKE_FD(fd); /* the response closes it */
        MHD_add_response_header(req->response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
        req->status = MHD_HTTP_OK;
        return 0;
}
