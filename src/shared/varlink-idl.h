/* SPDX-License-Identifier: MIT */
/* Varlink interface definitions: parsed from the .varlink file itself and used to check every call and
 * reply against it, so the contract has one source of truth. */
#pragma once

#include "json-util.h"

#include "macro.h"

typedef enum VarlinkKind {
        VARLINK_BOOL,
        VARLINK_INT,
        VARLINK_FLOAT,
        VARLINK_STRING,
        VARLINK_OBJECT, /* any JSON object */
        VARLINK_NAMED,  /* a type defined with "type Name" */
        VARLINK_STRUCT,
        VARLINK_ENUM,
        VARLINK_ARRAY,
        VARLINK_MAP, /* [string]T */
} VarlinkKind;

typedef struct VarlinkType VarlinkType;

typedef struct VarlinkField {
        char *name;
        VarlinkType *type;
} VarlinkField;

struct VarlinkType {
        VarlinkKind kind;
        bool optional;
        char *name;            /* VARLINK_NAMED */
        VarlinkField *fields;  /* VARLINK_STRUCT */
        char **values;         /* VARLINK_ENUM */
        size_t n;              /* fields or values */
        VarlinkType *element;  /* VARLINK_ARRAY, VARLINK_MAP */
};

typedef struct VarlinkDefinition {
        char *name;
        VarlinkType *type;     /* types: struct or enum; methods: the input; errors: the parameters */
        VarlinkType *output;   /* methods only */
} VarlinkDefinition;

typedef struct VarlinkInterface {
        char *name;
        VarlinkDefinition *types, *methods, *errors;
        size_t n_types, n_methods, n_errors;
} VarlinkInterface;

/* Parses an interface definition. On a syntax error returns -EBADMSG with the line in *ret_line. */
int varlink_interface_parse(const char *text, VarlinkInterface **ret, unsigned *ret_line);
VarlinkInterface *varlink_interface_free(VarlinkInterface *i);

const VarlinkDefinition *varlink_interface_method(const VarlinkInterface *i, const char *name);
const VarlinkDefinition *varlink_interface_error(const VarlinkInterface *i, const char *name);

/* Checks value against a struct type: unknown fields, missing required fields and wrong types are
 * refused. On failure returns -EINVAL and the path of the offending field ("disks[1].sizeBytes") in
 * *ret_field. */
int varlink_validate(const VarlinkInterface *i, const VarlinkType *t, json_object *value, char **ret_field);

static inline void varlink_interface_freep(VarlinkInterface **i) {
        varlink_interface_free(*i);
}

/* The text of src/shared/org.pureboot.Node.varlink, compiled in. */
extern const char node_interface_idl[];
