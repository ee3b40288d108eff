/* SPDX-License-Identifier: MIT */
/* Erasing a whole disk, partition mode's erase operation: every block discarded, every block written with
 * zeros, or the drive's own secure erase; then samples read back, which must all be zeros. It runs in a
 * thread of its own, so the agent goes on reporting (progress, everything else) while a disk of terabytes
 * is erased. */
#pragma once

#include "agent.h"

typedef struct Eraser Eraser;

/* Called on the loop: every second with the bytes done so far, and once at the end, with error NULL and
 * what was done and how it was checked, or with why it failed. */
typedef void (*EraseProgress)(Agent *a, Eraser *e, uint64_t done, uint64_t total);
typedef void (*EraseDone)(Agent *a, Eraser *e, const char *error, const char *result);

int erase_start(Agent *a, const char *device, EraseMethod method, EraseProgress progress, EraseDone done,
                Eraser **ret);
/* Stops a running erase (what is erased stays erased) and frees it. */
Eraser *erase_free(Eraser *e);
static inline void erase_freep(Eraser **e) {
        erase_free(*e);
}
