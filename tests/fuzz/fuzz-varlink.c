/* SPDX-License-Identifier: MIT */
/* Fuzzes the path a node's request body takes: "Method\n{json}" → JSON → checked against the method's
 * parameters in the node interface. */
#include "varlink-idl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static VarlinkInterface *interface;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *text = strndup((const char *) data, size), *bad = NULL;
        json_tokener *tok;
        json_object *v;

        if (!interface && varlink_interface_parse(node_interface_idl, &interface, NULL) < 0)
                abort();
        if (!text)
                return 0;
        char *body = strchr(text, '\n');
        if (!body)
                return 0;
        *body++ = 0;
        const VarlinkDefinition *m = varlink_interface_method(interface, text);
        if (!m)
                return 0;
        tok = json_tokener_new_ex(64);
        v = json_tokener_parse_ex(tok, body, (int) strlen(body));
        if (v)
                (void) varlink_validate(interface, m->type, v, &bad);
        json_object_put(v);
        json_tokener_free(tok);
        return 0;
}
