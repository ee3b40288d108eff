/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "journal.h"
#include "util.h"

int journal_write(const char *path, json_object *record) {
        const char *text = json_object_to_json_string_ext(record, JSON_C_TO_STRING_PLAIN);
        return write_file_atomic(path, text, strlen(text), 0600);
}

int journal_read(const char *path, json_object **ret) {
        _cleanup_free_ char *text = NULL;
        int r;

        *ret = NULL;
        r = read_full_file(path, &text, NULL);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        *ret = json_tokener_parse(text);
        return *ret ? 1 : -EBADMSG;
}

int journal_save_resume(const char *path, const ResumePoint *p) {
        _cleanup_(json_object_unrefp) json_object *o = json_object_new_object();

        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "session", json_object_new_string(p->session));
        json_object_object_add(o, "device", json_object_new_string(p->device));
        json_object_object_add(o, "size", json_object_new_int64((int64_t) p->size));
        json_object_object_add(o, "offset", json_object_new_int64((int64_t) p->offset));
        if (p->digest)
                json_object_object_add(o, "digest", json_object_new_string(p->digest));
        if (p->skipped && p->skipped->n_unused > 0) {
                json_object *skipped = used_map_extents_to_json(p->skipped);
                if (!skipped)
                        return -ENOMEM;
                json_object_object_add(o, "skipped", skipped);
        }
        return journal_write(path, o);
}

int journal_load_resume(const char *path, const ResumePoint *p, uint64_t *ret_offset, char **ret_digest) {
        _cleanup_(json_object_unrefp) json_object *o = NULL;

        *ret_offset = 0;
        if (ret_digest)
                *ret_digest = NULL;
        if (journal_read(path, &o) <= 0)
                return 0;
        if (!streq_ptr(json_get_string(o, "session"), p->session) || !streq_ptr(json_get_string(o, "device"), p->device) ||
            (uint64_t) json_get_int(o, "size") != p->size)
                return 0;
        json_object *skipped = json_object_object_get(o, "skipped");
        if (p->skipped && skipped && used_map_add_json(p->skipped, skipped) < 0) {
                used_map_done(p->skipped);
                return 0; /* a record that does not parse is none */
        }
        const char *digest = json_get_string(o, "digest");
        if (ret_digest && digest && !(*ret_digest = strdup(digest)))
                return -ENOMEM;
        *ret_offset = (uint64_t) json_get_int(o, "offset");
        return 1;
}
