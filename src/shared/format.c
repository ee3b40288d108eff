/* SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <time.h>

#include "format.h"

char *format_bytes(char buf[static FORMAT_BYTES_MAX], uint64_t bytes) {
        static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
        double v = (double) bytes;
        size_t i = 0;

        if (bytes < 1024) {
                snprintf(buf, FORMAT_BYTES_MAX, "%" PRIu64 " B", bytes);
                return buf;
        }
        v /= 1024;
        while (v >= 1024 && i + 1 < ELEMENTSOF(units)) {
                v /= 1024;
                i++;
        }
        snprintf(buf, FORMAT_BYTES_MAX, "%.1f %s", v, units[i]);
        return buf;
}

char *format_timestamp(char buf[static FORMAT_TIMESTAMP_MAX], uint64_t usec) {
        time_t t = (time_t) (usec / USEC_PER_SEC);
        struct tm tm;

        if (usec == 0 || !localtime_r(&t, &tm) ||
            strftime(buf, FORMAT_TIMESTAMP_MAX, "%Y-%m-%d %H:%M:%S %Z", &tm) == 0)
                snprintf(buf, FORMAT_TIMESTAMP_MAX, "n/a");
        return buf;
}

char *format_duration(char buf[static FORMAT_TIMESTAMP_MAX], uint64_t s) {
        if (s >= 86400)
                snprintf(buf, FORMAT_TIMESTAMP_MAX, "%" PRIu64 "d %02" PRIu64 "h", s / 86400,
                         s % 86400 / 3600);
        else if (s >= 3600)
                snprintf(buf, FORMAT_TIMESTAMP_MAX, "%" PRIu64 "h %02" PRIu64 "m", s / 3600, s % 3600 / 60);
        else if (s >= 60)
                snprintf(buf, FORMAT_TIMESTAMP_MAX, "%" PRIu64 "m %02" PRIu64 "s", s / 60, s % 60);
        else
                snprintf(buf, FORMAT_TIMESTAMP_MAX, "%" PRIu64 "s", s);
        return buf;
}
