/* SPDX-License-Identifier: MIT */
/* Fuzzes the INI parser behind controller.conf and its drop-ins. */
#include "ini.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int accept_all(const char *file, unsigned line, const char *section, const char *key,
                      const char *value, void *userdata) {
        (void) file, (void) line;
        *(size_t *) userdata += strlen(section) + strlen(key) + strlen(value);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *text = strndup((const char *) data, size);
        size_t total = 0;
        if (!text)
                return 0;
        log_set_max_level(LOG_CRIT);
        (void) ini_parse_string("fuzz", text, accept_all, &total);
        return 0;
}
