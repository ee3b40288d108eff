/* SPDX-License-Identifier: MIT */
/* The image library's work on the controller's host:
 *   verify-image   {"staging"} → {"whole": true, "digest", "storedBytes"} | {"whole": false, "damaged",
 *                  "error"}
 *   export-image   {"staging", "header"}, the file to write on fd 3 → {"ok": true} | {"ok": false, "error"}
 *   restore-image  {"work"}, what to import on fd 3 → {"ok": true, "format", "header", "size", "skipped",
 *                  "notes"} | {"ok": false, "error"}: the disk restored into work/disk.raw
 *   upload-image   {"work", "staging", "skipped"?} → {"ok": true, "digest", "storedBytes", "size", "layout"}
 *                  | {"ok": false, "error"}: work/disk.raw uploaded into the staging area
 * A Staging record is what GetStaging gives a node. */
#include <curl/curl.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image-file.h"
#include "image-import.h"
#include "image-tool.h"
#include "log.h"
#include "scan.h"
#include "staged.h"
#include "util.h"

#define ARGUMENT_FD 3
#define REQUEST_MAX (UINT32_C(16) << 20)

static void print_progress(uint64_t offset, uint64_t size) {
        printf("{\"offset\": %" PRIu64 ", \"size\": %" PRIu64 "}\n", offset, size);
        fflush(stdout);
}

static void print_verdict(json_object *verdict) {
        printf("%s\n", json_object_to_json_string_ext(verdict, JSON_C_TO_STRING_PLAIN));
        fflush(stdout);
}

static json_object *read_request(void) {
        _cleanup_free_ char *text = NULL;
        size_t size = 0;
        FILE *in = open_memstream(&text, &size);
        char buf[4096];
        size_t n;

        if (!in)
                return NULL;
        while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0 && size < REQUEST_MAX)
                fwrite(buf, 1, n, in);
        fclose(in);
        return text ? json_tokener_parse(text) : NULL;
}

static json_object *failed(const char *key, int r, const char *why) {
        json_object *v = json_object_new_object();
        json_object_object_add(v, key, json_object_new_boolean(false));
        json_object_object_add(v, "damaged", json_object_new_boolean(r == -EBADMSG));
        json_object_object_add(v, "error", json_object_new_string(why ?: strerror(-r)));
        return v;
}

/* The verdict of work on a staging area's image that went well: its digest and what it takes there. */
static json_object *stored(const char *key, const StagedOutcome *o) {
        json_object *v = json_object_new_object();
        json_object_object_add(v, key, json_object_new_boolean(true));
        json_object_object_add(v, "digest", json_object_new_string(o->digest));
        json_object_object_add(v, "storedBytes", json_object_new_int64((int64_t) o->stored));
        return v;
}

static json_object *verify(json_object *request) {
        _cleanup_(staged_outcome_done) StagedOutcome o = {};
        json_object *staging = NULL;
        (void) json_object_object_get_ex(request, "staging", &staging);
        int r = staged_verify(staging ?: request, print_progress, &o);
        return r < 0 ? failed("whole", r, o.why) : stored("whole", &o);
}

static json_object *export(json_object *request) {
        _cleanup_free_ char *why = NULL;
        json_object *staging = NULL, *header = NULL, *v;
        (void) json_object_object_get_ex(request, "staging", &staging);
        (void) json_object_object_get_ex(request, "header", &header);
        int r = image_file_export(staging, header ? json_object_get(header) : json_object_new_object(),
                                  ARGUMENT_FD, print_progress, &why);
        if (r < 0)
                return failed("ok", r, why);
        v = json_object_new_object();
        json_object_object_add(v, "ok", json_object_new_boolean(true));
        return v;
}

static json_object *restore(json_object *request) {
        _cleanup_(imported_disk_done) ImportedDisk d = {};
        _cleanup_free_ char *why = NULL;
        const char *work = json_get_string(request, "work");
        json_object *v, *notes;

        int r = image_import_restore(ARGUMENT_FD, work, print_progress, &d, &why);
        if (r < 0)
                return failed("ok", r, why);
        v = json_object_new_object();
        notes = json_object_new_array();
        STRV_FOREACH(note, d.notes)
        json_object_array_add(notes, json_object_new_string(*note));
        json_object_object_add(v, "ok", json_object_new_boolean(true));
        json_object_object_add(v, "format", json_object_new_string(d.format));
        if (d.device)
                json_object_object_add(v, "device", json_object_new_string(d.device));
        json_object_object_add(v, "header", json_object_get(d.header));
        if (d.skipped.size > 0)
                json_object_object_add(v, "skipped", used_map_extents_to_json(&d.skipped));
        json_object_object_add(v, "notes", notes);
        return v;
}

static json_object *upload(json_object *request) {
        _cleanup_(staged_outcome_done) StagedOutcome o = {};
        _cleanup_free_ char *path = NULL;
        _cleanup_(disk_info_done) DiskInfo info = {};
        const char *work = json_get_string(request, "work");
        json_object *staging = NULL, *extents = NULL, *v;
        UsedMap skipped = {};
        int r = 0;

        (void) json_object_object_get_ex(request, "staging", &staging);
        if (asprintf(&path, "%s/" IMPORT_DISK_FILE, strempty(work)) < 0)
                return NULL;
        /* The layout once: the upload does not change the file. */
        r = scan_disk(path, &info);
        skipped.size = info.size;
        if (r >= 0 && json_object_object_get_ex(request, "skipped", &extents))
                r = used_map_add_json(&skipped, extents);
        if (r >= 0)
                r = staged_upload_file(staging, path, extents ? &skipped : NULL, print_progress, &o);
        used_map_done(&skipped);
        if (r < 0)
                return failed("ok", r, o.why);
        v = stored("ok", &o);
        json_object_object_add(v, "size", json_object_new_int64((int64_t) info.size));
        json_object_object_add(v, "layout", disk_info_to_json(&info));
        return v;
}

static const struct {
        const char *verb;
        json_object *(*run)(json_object *request);
        const char *key; /* the verdict's: true when it went well */
} tools[] = {
        { "verify-image", verify, "whole" },
        { "export-image", export, "ok" },
        { "restore-image", restore, "ok" },
        { "upload-image", upload, "ok" },
};

bool image_tool_is_verb(const char *verb) {
        for (size_t i = 0; i < ELEMENTSOF(tools); i++)
                if (streq(verb, tools[i].verb))
                        return true;
        return false;
}

int image_tool_run(const char *verb) {
        _cleanup_(json_object_unrefp) json_object *request = read_request(), *verdict = NULL;
        size_t i = 0;

        while (!streq(tools[i].verb, verb))
                i++;
        if (!request)
                return log_error_errno(EINVAL, "%s reads its request (JSON) on stdin.", verb), EXIT_FAILURE;
        /* A reader of the file being written that goes away is an error to report, not a signal to die of.
         */
        (void) signal(SIGPIPE, SIG_IGN);
        umask(0077);
        if (gnutls_global_init() < 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                return log_error("Failed to initialise TLS."), EXIT_FAILURE;
        verdict = tools[i].run(request);
        if (!verdict)
                return log_oom(), EXIT_FAILURE;
        print_verdict(verdict);
        curl_global_cleanup();
        gnutls_global_deinit();
        return json_get_bool(verdict, tools[i].key) ? EXIT_SUCCESS : EXIT_FAILURE;
}
