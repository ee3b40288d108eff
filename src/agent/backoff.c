/* SPDX-License-Identifier: MIT */
#include <sys/random.h>

#include "backoff.h"

uint64_t backoff_next(Backoff *b) {
        uint32_t random = 0;
        uint64_t base = b->next_usec ?: BACKOFF_MIN_USEC;

        (void) getrandom(&random, sizeof(random), GRND_NONBLOCK);
        b->next_usec = MIN(base * 2, BACKOFF_MAX_USEC);
        /* base × [0.8, 1.2) */
        return base * 4 / 5 + (uint64_t) ((double) random / 4294967296.0 * (double) (base * 2 / 5));
}
