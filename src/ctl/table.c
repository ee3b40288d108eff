/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <stdarg.h>

#include "ctl.h"
#include "format.h"
#include "table.h"

struct Table {
        size_t n_columns, n_rows;
        char **headers;
        char **text;       /* n_rows × n_columns display strings */
        json_object *rows; /* array of objects */
};

Table *table_new(const char *first, ...) {
        Table *t = calloc(1, sizeof(Table));
        va_list ap;

        if (!t)
                return NULL;
        t->rows = json_object_new_array();
        va_start(ap, first);
        for (const char *h = first; h; h = va_arg(ap, const char *)) {
                char **n = realloc(t->headers, (t->n_columns + 1) * sizeof(char *));
                if (!n || !(n[t->n_columns] = strdup(h))) {
                        if (n)
                                t->headers = n;
                        va_end(ap);
                        return table_free(t);
                }
                t->headers = n;
                t->n_columns++;
        }
        va_end(ap);
        return t->rows ? t : table_free(t);
}

Table *table_free(Table *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n_columns; i++)
                free(t->headers[i]);
        for (size_t i = 0; i < t->n_rows * t->n_columns; i++)
                free(t->text[i]);
        free(t->headers);
        free(t->text);
        json_object_put(t->rows);
        free(t);
        return NULL;
}

static char *json_key(const char *header) {
        char *k = strdup(header);
        for (char *p = k; p && *p; p++)
                *p = *p == ' ' ? '_' : (char) tolower((unsigned char) *p);
        return k;
}

int table_add_row(Table *t, const char *types, ...) {
        char **text = realloc(t->text, (t->n_rows + 1) * t->n_columns * sizeof(char *));
        json_object *row = json_object_new_object();
        va_list ap;

        if (!text || !row) {
                json_object_put(row);
                return -ENOMEM;
        }
        t->text = text;
        text += t->n_rows * t->n_columns;
        va_start(ap, types);
        for (size_t i = 0; i < t->n_columns; i++) {
                char buf[FORMAT_TIMESTAMP_MAX];
                _cleanup_free_ char *key = json_key(t->headers[i]);
                json_object *value;
                switch (types[i]) {
                case 's': {
                        const char *s = va_arg(ap, const char *);
                        text[i] = strdup(isempty(s) ? "-" : s);
                        value = json_object_new_string(strempty(s));
                        break;
                }
                case 'b': {
                        int b = va_arg(ap, int);
                        text[i] = strdup(b ? "yes" : "no");
                        value = json_object_new_boolean(b);
                        break;
                }
                default: {
                        uint64_t u = va_arg(ap, uint64_t);
                        if (types[i] == 'z')
                                format_bytes(buf, u);
                        else if (types[i] == 'T')
                                format_timestamp(buf, u);
                        else
                                snprintf(buf, sizeof(buf), "%llu", (unsigned long long) u);
                        text[i] = strdup(buf);
                        value = json_object_new_uint64(u);
                }
                }
                if (key)
                        json_object_object_add(row, key, value);
        }
        va_end(ap);
        json_object_array_add(t->rows, row);
        t->n_rows++;
        return 0;
}

void table_add_json(Table *t, const char *key, json_object *value) {
        json_object *row = t->n_rows > 0 ? json_object_array_get_idx(t->rows, t->n_rows - 1) : NULL;
        if (row)
                json_object_object_add(row, key, value);
        else
                json_object_put(value);
}

int table_print(Table *t, const char *noun, bool no_legend, int json_mode) {
        size_t width[64] = {};

        if (json_mode != JSON_OFF) {
                ctl_print_json(t->rows);
                return 0;
        }
        for (size_t c = 0; c < t->n_columns && c < ELEMENTSOF(width); c++) {
                width[c] = strlen(t->headers[c]);
                for (size_t r = 0; r < t->n_rows; r++)
                        width[c] = MAX(width[c], strlen(strempty(t->text[r * t->n_columns + c])));
        }
        if (!no_legend && t->n_rows > 0) {
                for (size_t c = 0; c < t->n_columns; c++)
                        printf("%-*s%s", c + 1 < t->n_columns ? (int) width[c] : 0, t->headers[c],
                               c + 1 < t->n_columns ? " " : "\n");
        }
        for (size_t r = 0; r < t->n_rows; r++)
                for (size_t c = 0; c < t->n_columns; c++)
                        printf("%-*s%s", c + 1 < t->n_columns ? (int) width[c] : 0,
                               strempty(t->text[r * t->n_columns + c]), c + 1 < t->n_columns ? " " : "\n");
        if (!no_legend)
                printf("%s%zu %s listed.\n", t->n_rows > 0 ? "\n" : "", t->n_rows, noun);
        return 0;
}
