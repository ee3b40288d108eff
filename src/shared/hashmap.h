/* SPDX-License-Identifier: MIT */
/* A string-keyed hash map. Keys are borrowed: they must live as long as their entry (usually a field of
 * the value itself). */
#pragma once

#include "macro.h"

typedef struct Hashmap Hashmap;

Hashmap *hashmap_new(void);
Hashmap *hashmap_free(Hashmap *h);
/* -EEXIST if key is present. */
int hashmap_put(Hashmap *h, const char *key, void *value);
void *hashmap_get(Hashmap *h, const char *key);
void *hashmap_remove(Hashmap *h, const char *key);
size_t hashmap_size(Hashmap *h);

/* Iteration: i starts at 0; returns false when done. Removing the entry just returned is allowed. */
bool hashmap_iterate(Hashmap *h, size_t *i, void **ret_value, const char **ret_key);
#define HASHMAP_FOREACH(v, h, i) for (size_t i = 0; hashmap_iterate((h), &i, (void **) &(v), NULL);)

/* The values as a NULL-terminated array sorted with cmp (qsort over pointers to the values). */
void **hashmap_sorted_values(Hashmap *h, int (*cmp)(const void *, const void *));

static inline void hashmap_freep(Hashmap **h) {
        hashmap_free(*h);
}
