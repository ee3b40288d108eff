/* SPDX-License-Identifier: MIT */
/* A disk of this (desktop) machine, opened by udisks2 (libudisks2) for the user who runs purebootctl:
 * udisks2's own polkit actions decide, so no root is needed, and the descriptor goes to the controller,
 * which never opens the desktop's devices itself. GLib's headers and ours both define MIN and MAX: this file
 * takes only GLib's, and hands its errors back as text. */
#include <errno.h>
#include <gio/gunixfdlist.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <udisks/udisks.h>

#include "ctl-udisks.h"

/* Sets *why and returns -e; %m as errno says. */
static int fail(char **why, int e, const char *format, ...) G_GNUC_PRINTF(3, 4);
static int fail(char **why, int e, const char *format, ...) {
        va_list ap;
        errno = e;
        va_start(ap, format);
        *why = g_strdup_vprintf(format, ap);
        va_end(ap);
        return -e;
}

static void g_error_freep(GError **e) {
        if (*e)
                g_error_free(*e);
}

int udisks_open_disk(const char *device, bool restore, bool interactive, int *ret_fd, char **ret_why) {
        __attribute__((cleanup(g_error_freep))) GError *error = NULL;
        g_autoptr(UDisksClient) client = NULL;
        g_autoptr(UDisksObject) object = NULL;
        g_autoptr(GVariant) handle = NULL;
        g_autoptr(GUnixFDList) fds = NULL;
        UDisksBlock *block;
        GVariantBuilder options;
        struct stat st;
        gboolean ok;
        int fd;

        if (stat(device, &st) < 0)
                return fail(ret_why, errno, "Cannot find %s: %m", device);
        if (!S_ISBLK(st.st_mode))
                return fail(ret_why, ENOTBLK,
                            "%s is not a disk (a block device); name one such as /dev/sdb.", device);
        client = udisks_client_new_sync(NULL, &error);
        if (!client)
                return fail(ret_why, EHOSTDOWN,
                            "Cannot reach udisks2 (%s). Install and start udisks2 (udisksd), or run "
                            "this as root.",
                            error->message);
        block = udisks_client_get_block_for_dev(client, st.st_rdev);
        if (!block)
                return fail(ret_why, ENODEV, "udisks2 does not know %s.", device);
        object = UDISKS_OBJECT(g_dbus_interface_dup_object(G_DBUS_INTERFACE(block)));
        g_object_unref(block);
        block = udisks_object_peek_block(object);
        g_variant_builder_init(&options, G_VARIANT_TYPE_VARDICT);
        if (!interactive)
                g_variant_builder_add(&options, "{sv}", "auth.no_user_interaction",
                                      g_variant_new_boolean(TRUE));
        ok = restore ? udisks_block_call_open_for_restore_sync(block, g_variant_builder_end(&options), NULL,
                                                               &handle, &fds, NULL, &error)
                     : udisks_block_call_open_for_backup_sync(block, g_variant_builder_end(&options), NULL,
                                                              &handle, &fds, NULL, &error);
        if (!ok) {
                g_dbus_error_strip_remote_error(error);
                return fail(ret_why, EACCES,
                            "udisks2 did not open %s for %s: %s. Ask an administrator for udisks2's "
                            "polkit action org.freedesktop.udisks2.open-device (the README shows a rule).",
                            device, restore ? "restoring" : "reading", error->message);
        }
        fd = g_unix_fd_list_get(fds, g_variant_get_handle(handle), &error);
        if (fd < 0)
                return fail(ret_why, EIO, "udisks2 opened %s, but its descriptor did not arrive: %s", device,
                            error->message);
        *ret_fd = fd;
        return 0;
}
