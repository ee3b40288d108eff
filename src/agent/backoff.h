/* SPDX-License-Identifier: MIT */
/* Exponential backoff with jitter, 1 s doubling to 60 s: how the agent retries a bridge or controller that
 * does not answer, without a fleet of nodes knocking in step. */
#pragma once

#include "macro.h"

typedef struct Backoff {
        uint64_t next_usec;
} Backoff;

#define BACKOFF_MIN_USEC USEC_PER_SEC
#define BACKOFF_MAX_USEC (60 * USEC_PER_SEC)

static inline void backoff_init(Backoff *b) {
        b->next_usec = BACKOFF_MIN_USEC;
}

static inline void backoff_reset(Backoff *b) {
        backoff_init(b);
}

/* The delay to wait now: the current step ±20 %, and the step doubles (up to the maximum). */
uint64_t backoff_next(Backoff *b);
