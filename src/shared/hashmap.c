/* SPDX-License-Identifier: MIT */
#include "hashmap.h"

/* Open addressing with linear probing and tombstones; grows at 50 % load. */
typedef struct Entry {
        const char *key; /* NULL: empty; TOMBSTONE: removed */
        void *value;
} Entry;

static const char TOMBSTONE[] = "";

struct Hashmap {
        Entry *entries;
        size_t capacity, size, used; /* used counts tombstones too */
};

static uint64_t hash_string(const char *s) {
        uint64_t h = 1469598103934665603ULL; /* FNV-1a */
        for (; *s; s++)
                h = (h ^ (uint8_t) *s) * 1099511628211ULL;
        return h;
}

Hashmap *hashmap_new(void) {
        Hashmap *h = calloc(1, sizeof(Hashmap));
        if (!h)
                return NULL;
        h->capacity = 16;
        h->entries = calloc(h->capacity, sizeof(Entry));
        if (!h->entries) {
                free(h);
                return NULL;
        }
        return h;
}

Hashmap *hashmap_free(Hashmap *h) {
        if (h) {
                free(h->entries);
                free(h);
        }
        return NULL;
}

static Entry *find_slot(Hashmap *h, const char *key, bool for_insert) {
        size_t mask = h->capacity - 1, i = hash_string(key) & mask;
        Entry *tomb = NULL;
        for (;; i = (i + 1) & mask) {
                Entry *e = &h->entries[i];
                if (!e->key)
                        return for_insert && tomb ? tomb : (for_insert ? e : NULL);
                if (e->key == TOMBSTONE) {
                        if (!tomb)
                                tomb = e;
                        continue;
                }
                if (streq(e->key, key))
                        return e;
        }
}

static int resize(Hashmap *h, size_t capacity) {
        Entry *old = h->entries;
        size_t old_capacity = h->capacity;
        h->entries = calloc(capacity, sizeof(Entry));
        if (!h->entries) {
                h->entries = old;
                return -ENOMEM;
        }
        h->capacity = capacity;
        h->used = h->size;
        for (size_t i = 0; i < old_capacity; i++)
                if (old[i].key && old[i].key != TOMBSTONE)
                        *find_slot(h, old[i].key, true) = old[i];
        free(old);
        return 0;
}

int hashmap_put(Hashmap *h, const char *key, void *value) {
        if ((h->used + 1) * 2 > h->capacity) {
                int r = resize(h, h->size * 4 > h->capacity ? h->capacity * 2 : h->capacity);
                if (r < 0)
                        return r;
        }
        Entry *e = find_slot(h, key, true);
        if (e->key && e->key != TOMBSTONE)
                return -EEXIST;
        if (!e->key)
                h->used++;
        e->key = key;
        e->value = value;
        h->size++;
        return 0;
}

void *hashmap_get(Hashmap *h, const char *key) {
        Entry *e = h ? find_slot(h, key, false) : NULL;
        return e ? e->value : NULL;
}

void *hashmap_remove(Hashmap *h, const char *key) {
        Entry *e = h ? find_slot(h, key, false) : NULL;
        if (!e)
                return NULL;
        void *v = e->value;
        e->key = TOMBSTONE;
        e->value = NULL;
        h->size--;
        return v;
}

size_t hashmap_size(Hashmap *h) {
        return h ? h->size : 0;
}

bool hashmap_iterate(Hashmap *h, size_t *i, void **ret_value, const char **ret_key) {
        for (; h && *i < h->capacity; (*i)++) {
                Entry *e = &h->entries[*i];
                if (e->key && e->key != TOMBSTONE) {
                        *ret_value = e->value;
                        if (ret_key)
                                *ret_key = e->key;
                        (*i)++;
                        return true;
                }
        }
        *ret_value = NULL;
        return false;
}

void **hashmap_sorted_values(Hashmap *h, int (*cmp)(const void *, const void *)) {
        void **array = calloc(hashmap_size(h) + 1, sizeof(void *)), *v;
        size_t n = 0;
        if (!array)
                return NULL;
        HASHMAP_FOREACH (v, h, i)
                array[n++] = v;
        if (cmp)
                qsort(array, n, sizeof(void *), cmp);
        return array;
}
