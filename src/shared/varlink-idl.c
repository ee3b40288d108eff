/* SPDX-License-Identifier: MIT */
/* A recursive-descent parser for varlink interface definitions and a validator of JSON against them. */
#include <ctype.h>

#include "util.h"
#include "varlink-idl.h"

typedef struct Parser {
        const char *p;
        unsigned line;
} Parser;

static void skip_space(Parser *ps) {
        for (;;) {
                while (isspace((unsigned char) *ps->p)) {
                        if (*ps->p == '\n')
                                ps->line++;
                        ps->p++;
                }
                if (*ps->p != '#')
                        return;
                while (*ps->p && *ps->p != '\n')
                        ps->p++;
        }
}

static bool accept(Parser *ps, const char *token) {
        skip_space(ps);
        size_t n = strlen(token);
        if (strncmp(ps->p, token, n) != 0)
                return false;
        ps->p += n;
        return true;
}

/* A word of letters, digits, '_' and (for interface names) '.' and '-'. */
static char *word(Parser *ps, bool dotted) {
        skip_space(ps);
        const char *start = ps->p;
        while (isalnum((unsigned char) *ps->p) || *ps->p == '_' || (dotted && strchr(".-", *ps->p)))
                ps->p++;
        return ps->p > start ? strndup(start, (size_t) (ps->p - start)) : NULL;
}

static bool keyword(Parser *ps, const char *k) {
        skip_space(ps);
        size_t n = strlen(k);
        if (strncmp(ps->p, k, n) != 0 || isalnum((unsigned char) ps->p[n]) || ps->p[n] == '_')
                return false;
        ps->p += n;
        return true;
}

static VarlinkType *type_free(VarlinkType *t) {
        if (!t)
                return NULL;
        free(t->name);
        for (size_t i = 0; t->fields && i < t->n; i++) {
                free(t->fields[i].name);
                type_free(t->fields[i].type);
        }
        free(t->fields);
        for (size_t i = 0; t->values && i < t->n; i++)
                free(t->values[i]);
        free(t->values);
        type_free(t->element);
        free(t);
        return NULL;
}

static VarlinkType *parse_type(Parser *ps);

/* After '(': either "name: type, …" (a struct) or "a, b, …" (an enum); "()" is an empty struct. */
static VarlinkType *parse_struct_or_enum(Parser *ps) {
        VarlinkType *t = calloc(1, sizeof(VarlinkType));
        if (!t)
                return NULL;
        t->kind = VARLINK_STRUCT;
        if (accept(ps, ")"))
                return t;
        for (size_t i = 0;; i++) {
                char *name = word(ps, false);
                if (!name)
                        return type_free(t);
                bool is_field = accept(ps, ":");
                if (i == 0)
                        t->kind = is_field ? VARLINK_STRUCT : VARLINK_ENUM;
                if (is_field != (t->kind == VARLINK_STRUCT)) {
                        free(name);
                        return type_free(t);
                }
                if (is_field) {
                        VarlinkField *f = realloc(t->fields, (t->n + 1) * sizeof(VarlinkField));
                        if (!f) {
                                free(name);
                                return type_free(t);
                        }
                        t->fields = f;
                        t->fields[t->n] = (VarlinkField){ .name = name, .type = parse_type(ps) };
                        if (!t->fields[t->n++].type)
                                return type_free(t);
                } else {
                        char **v = realloc(t->values, (t->n + 1) * sizeof(char *));
                        if (!v) {
                                free(name);
                                return type_free(t);
                        }
                        t->values = v;
                        t->values[t->n++] = name;
                }
                if (accept(ps, ")"))
                        return t;
                if (!accept(ps, ","))
                        return type_free(t);
        }
}

static VarlinkType *parse_type(Parser *ps) {
        static const struct {
                const char *name;
                VarlinkKind kind;
        } basic[] = {
                { "bool", VARLINK_BOOL },     { "int", VARLINK_INT },       { "float", VARLINK_FLOAT },
                { "string", VARLINK_STRING }, { "object", VARLINK_OBJECT },
        };
        bool optional = accept(ps, "?");
        VarlinkType *t;

        if (accept(ps, "(")) {
                t = parse_struct_or_enum(ps);
        } else if (accept(ps, "[")) {
                bool map = accept(ps, "string");
                if (!accept(ps, "]"))
                        return NULL;
                t = calloc(1, sizeof(VarlinkType));
                if (t) {
                        t->kind = map ? VARLINK_MAP : VARLINK_ARRAY;
                        t->element = parse_type(ps);
                        if (!t->element || t->element->optional)
                                t = type_free(t);
                }
        } else {
                char *name = word(ps, false);
                if (!name)
                        return NULL;
                t = calloc(1, sizeof(VarlinkType));
                if (!t) {
                        free(name);
                        return NULL;
                }
                t->kind = VARLINK_NAMED;
                for (size_t i = 0; i < ELEMENTSOF(basic); i++)
                        if (streq(name, basic[i].name))
                                t->kind = basic[i].kind;
                if (t->kind == VARLINK_NAMED && !isupper((unsigned char) name[0])) {
                        free(name);
                        return type_free(t);
                }
                if (t->kind == VARLINK_NAMED)
                        t->name = name;
                else
                        free(name);
        }
        if (t)
                t->optional = optional;
        return t;
}

static int add_definition(VarlinkDefinition **list, size_t *n, char *name, VarlinkType *type,
                          VarlinkType *output) {
        VarlinkDefinition *l = realloc(*list, (*n + 1) * sizeof(VarlinkDefinition));
        if (!l) {
                free(name);
                type_free(type);
                type_free(output);
                return -ENOMEM;
        }
        *list = l;
        l[(*n)++] = (VarlinkDefinition){ .name = name, .type = type, .output = output };
        return 0;
}

static const VarlinkDefinition *find(const VarlinkDefinition *list, size_t n, const char *name) {
        for (size_t i = 0; i < n; i++)
                if (streq(list[i].name, name))
                        return &list[i];
        return NULL;
}

/* Every named type used must be defined, and no name defined twice. */
static bool names_resolve(const VarlinkInterface *i, const VarlinkType *t) {
        if (!t)
                return true;
        if (t->kind == VARLINK_NAMED && !find(i->types, i->n_types, t->name))
                return false;
        for (size_t k = 0; t->fields && k < t->n; k++)
                if (!names_resolve(i, t->fields[k].type))
                        return false;
        return names_resolve(i, t->element);
}

static int parse_member(Parser *ps, VarlinkInterface *i) {
        char *name;
        VarlinkType *in = NULL, *out = NULL;
        int kind = keyword(ps, "type") ? 0 : keyword(ps, "method") ? 1 : keyword(ps, "error") ? 2 : -1;

        if (kind < 0)
                return -EBADMSG;
        name = word(ps, false);
        if (!name || !isupper((unsigned char) name[0]) || !accept(ps, "(") || !(in = parse_struct_or_enum(ps)))
                goto fail;
        if (kind == 1 && (!accept(ps, "->") || !accept(ps, "(") || !(out = parse_struct_or_enum(ps))))
                goto fail;
        if ((kind == 1 && (in->kind != VARLINK_STRUCT || out->kind != VARLINK_STRUCT)) ||
            (kind == 2 && in->kind != VARLINK_STRUCT))
                goto fail;
        if (find(i->types, i->n_types, name) || find(i->methods, i->n_methods, name) ||
            find(i->errors, i->n_errors, name))
                goto fail;
        return kind == 0   ? add_definition(&i->types, &i->n_types, name, in, NULL)
               : kind == 1 ? add_definition(&i->methods, &i->n_methods, name, in, out)
                           : add_definition(&i->errors, &i->n_errors, name, in, NULL);
fail:
        free(name);
        type_free(in);
        type_free(out);
        return -EBADMSG;
}

int varlink_interface_parse(const char *text, VarlinkInterface **ret, unsigned *ret_line) {
        Parser ps = { .p = text, .line = 1 };
        VarlinkInterface *i = calloc(1, sizeof(VarlinkInterface));
        int r = 0;

        if (!i)
                return -ENOMEM;
        if (!keyword(&ps, "interface") || !(i->name = word(&ps, true)) || !strchr(i->name, '.'))
                r = -EBADMSG;
        while (r >= 0) {
                skip_space(&ps);
                if (!*ps.p)
                        break;
                r = parse_member(&ps, i);
        }
        for (size_t k = 0; r >= 0 && k < i->n_types; k++)
                if (!names_resolve(i, i->types[k].type))
                        r = -EBADMSG;
        for (size_t k = 0; r >= 0 && k < i->n_methods; k++)
                if (!names_resolve(i, i->methods[k].type) || !names_resolve(i, i->methods[k].output))
                        r = -EBADMSG;
        for (size_t k = 0; r >= 0 && k < i->n_errors; k++)
                if (!names_resolve(i, i->errors[k].type))
                        r = -EBADMSG;
        if (r < 0) {
                if (ret_line)
                        *ret_line = ps.line;
                varlink_interface_free(i);
                return r;
        }
        *ret = i;
        return 0;
}

static void definitions_free(VarlinkDefinition *l, size_t n) {
        for (size_t k = 0; k < n; k++) {
                free(l[k].name);
                type_free(l[k].type);
                type_free(l[k].output);
        }
        free(l);
}

VarlinkInterface *varlink_interface_free(VarlinkInterface *i) {
        if (!i)
                return NULL;
        free(i->name);
        definitions_free(i->types, i->n_types);
        definitions_free(i->methods, i->n_methods);
        definitions_free(i->errors, i->n_errors);
        free(i);
        return NULL;
}

const VarlinkDefinition *varlink_interface_method(const VarlinkInterface *i, const char *name) {
        return find(i->methods, i->n_methods, name);
}

const VarlinkDefinition *varlink_interface_error(const VarlinkInterface *i, const char *name) {
        return find(i->errors, i->n_errors, name);
}

static int invalid(char **ret_field, const char *path) {
        *ret_field = strdup(*path ? path : "parameters");
        return *ret_field ? -EINVAL : -ENOMEM;
}

static int validate_at(const VarlinkInterface *i, const VarlinkType *t, json_object *v, const char *path,
                       char **ret_field) {
        if (!v || json_object_is_type(v, json_type_null))
                return t->optional ? 0 : invalid(ret_field, path);

        switch (t->kind) {
        case VARLINK_BOOL:
                return json_object_is_type(v, json_type_boolean) ? 0 : invalid(ret_field, path);
        case VARLINK_INT:
                return json_object_is_type(v, json_type_int) ? 0 : invalid(ret_field, path);
        case VARLINK_FLOAT:
                return json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int)
                               ? 0
                               : invalid(ret_field, path);
        case VARLINK_STRING:
                return json_object_is_type(v, json_type_string) ? 0 : invalid(ret_field, path);
        case VARLINK_OBJECT:
                return json_object_is_type(v, json_type_object) ? 0 : invalid(ret_field, path);
        case VARLINK_NAMED: {
                const VarlinkDefinition *d = find(i->types, i->n_types, t->name);
                return d ? validate_at(i, d->type, v, path, ret_field) : invalid(ret_field, path);
        }
        case VARLINK_ENUM:
                if (!json_object_is_type(v, json_type_string))
                        return invalid(ret_field, path);
                for (size_t k = 0; k < t->n; k++)
                        if (streq(json_object_get_string(v), t->values[k]))
                                return 0;
                return invalid(ret_field, path);
        case VARLINK_ARRAY:
                if (!json_object_is_type(v, json_type_array))
                        return invalid(ret_field, path);
                for (size_t k = 0; k < json_object_array_length(v); k++) {
                        _cleanup_free_ char *sub = NULL;
                        if (asprintf(&sub, "%s[%zu]", path, k) < 0)
                                return -ENOMEM;
                        int r = validate_at(i, t->element, json_object_array_get_idx(v, k), sub, ret_field);
                        if (r < 0)
                                return r;
                }
                return 0;
        case VARLINK_MAP:
        case VARLINK_STRUCT:
                if (!json_object_is_type(v, json_type_object))
                        return invalid(ret_field, path);
                break;
        }

        json_object_object_foreach(v, key, value) {
                _cleanup_free_ char *sub = NULL;
                const VarlinkType *ft = t->kind == VARLINK_MAP ? t->element : NULL;
                for (size_t k = 0; !ft && k < t->n; k++)
                        if (streq(t->fields[k].name, key))
                                ft = t->fields[k].type;
                if ((t->kind == VARLINK_MAP ? asprintf(&sub, "%s[%s]", path, key)
                                            : asprintf(&sub, "%s%s%s", path, *path ? "." : "", key)) < 0)
                        return -ENOMEM;
                if (!ft) /* a field the contract does not have */
                        return invalid(ret_field, sub);
                int r = validate_at(i, ft, value, sub, ret_field);
                if (r < 0)
                        return r;
        }
        for (size_t k = 0; t->kind == VARLINK_STRUCT && k < t->n; k++) {
                json_object *present;
                if (!t->fields[k].type->optional && !json_object_object_get_ex(v, t->fields[k].name, &present)) {
                        _cleanup_free_ char *sub = NULL;
                        if (asprintf(&sub, "%s%s%s", path, *path ? "." : "", t->fields[k].name) < 0)
                                return -ENOMEM;
                        return invalid(ret_field, sub);
                }
        }
        return 0;
}

int varlink_validate(const VarlinkInterface *i, const VarlinkType *t, json_object *value, char **ret_field) {
        return validate_at(i, t, value, "", ret_field);
}
