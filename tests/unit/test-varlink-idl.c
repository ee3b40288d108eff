/* SPDX-License-Identifier: MIT */
/* The varlink IDL parser and validator, on the node protocol itself and on hand-made edge cases. */
#include "tests.h"
#include "varlink-idl.h"

static void expect_field(const VarlinkInterface *i, const char *method, const char *json, const char *field) {
        const VarlinkDefinition *m = varlink_interface_method(i, method);
        json_object *v = json_tokener_parse(json);
        char *bad = NULL;
        ASSERT_TRUE(m && v);
        int r = varlink_validate(i, m->type, v, &bad);
        if (!field) {
                if (r < 0)
                        fprintf(stderr, "%s %s: refused at %s\n", method, json, bad);
                ASSERT_OK(r);
        } else {
                ASSERT_INT(r, -EINVAL);
                ASSERT_STR(bad, field);
        }
        free(bad);
        json_object_put(v);
}

static void test_node_interface(void) {
        static const char *const methods[] = {
                "Enrol",
                "GetSession",
                "WatchSession",
                "ReportSourceReady",
                "ReportProgress",
                "ReportComplete",
                "ReportFailed",
                "GetStaging",
                "ReportStagingStatus",
                "GetResizePlan",
                "ReportCloneDisk",
                "ReportDisks",
                "FetchOperations",
                "ReportOperation",
                "GetNode",
                "WatchNode",
                "ReportRelayReady",
                "ReportUpstreamLost",
                "ReportHardware",
        };
        VarlinkInterface *i = NULL;
        unsigned line = 0;

        ASSERT_OK(varlink_interface_parse(node_interface_idl, &i, &line));
        ASSERT_STR(i->name, "org.pureboot.Node");
        ASSERT_INT(i->n_methods, ELEMENTSOF(methods));
        for (size_t k = 0; k < ELEMENTSOF(methods); k++)
                ASSERT_TRUE(varlink_interface_method(i, methods[k]));
        ASSERT_TRUE(varlink_interface_error(i, "InvalidToken"));

        const char *progress = "{\"session\":\"s\",\"role\":\"target\",\"sequence\":3,\"bytesTransferred\":10,"
                               "\"rateBps\":5,\"phase\":\"transferring\"}";
        expect_field(i, "ReportProgress", progress, NULL);
        expect_field(i, "ReportProgress", "{\"session\":\"s\",\"role\":\"target\",\"bytesTransferred\":10,"
                                          "\"rateBps\":5,\"phase\":\"transferring\"}", "sequence");
        expect_field(i, "ReportProgress", "{\"session\":\"s\",\"role\":\"target\",\"sequence\":\"3\","
                                          "\"bytesTransferred\":10,\"rateBps\":5,\"phase\":\"transferring\"}",
                     "sequence");
        expect_field(i, "ReportProgress", "{\"session\":\"s\",\"role\":\"boss\",\"sequence\":3,"
                                          "\"bytesTransferred\":10,\"rateBps\":5,\"phase\":\"transferring\"}",
                     "role");
        expect_field(i, "ReportProgress", "{\"session\":\"s\",\"role\":\"target\",\"sequence\":3,\"sessionId\":1,"
                                          "\"bytesTransferred\":10,\"rateBps\":5,\"phase\":\"transferring\"}",
                     "sessionId");
        expect_field(i, "ReportProgress", "[1,2]", "parameters");
        expect_field(i, "ReportOperation", "{\"device\":\"/dev/sda\",\"operation\":\"o\",\"sequence\":1,\"status\":\"failed\",\"error\":null}",
                     NULL);
        expect_field(i, "ReportDisks",
                     "{\"sequence\":1,\"disks\":[{\"device\":\"/dev/sda\",\"sizeBytes\":1,\"logicalSectorSize\":512,"
                     "\"physicalSectorSize\":4096,\"table\":\"gpt\",\"partitions\":[{\"number\":1,\"startBytes\":1,"
                     "\"sizeBytes\":2,\"type\":\"t\",\"flags\":[],\"canShrink\":true},{\"number\":2,"
                     "\"startBytes\":3,\"sizeBytes\":-0.5,\"type\":\"t\",\"flags\":[],\"canShrink\":false}]}]}",
                     "disks[0].partitions[1].sizeBytes");
        const char *hardware =
                "{\"sequence\":1,\"hardware\":{\"firmware\":\"uefi\",\"secureBoot\":true,"
                "\"cpuCores\":2,\"cpuThreads\":4,\"disks\":[{\"device\":\"/dev/sda\",\"sizeBytes\":1,"
                "\"logicalSectorSize\":4096,\"physicalSectorSize\":4096,\"rotational\":false,"
                "\"removable\":false}],\"interfaces\":[{\"name\":\"eth0\",\"link\":true}]}}";
        expect_field(i, "ReportHardware", hardware, NULL);
        _cleanup_free_ char *up = strdup(hardware);
        ASSERT_TRUE(up);
        memcpy(strstr(up, "\"link\":true"), "\"link\":1   ", strlen("\"link\":true"));
        expect_field(i, "ReportHardware", up, "hardware.interfaces[0].link");
        varlink_interface_free(i);
}

static void test_grammar(void) {
        VarlinkInterface *i = NULL;
        unsigned line = 0;

        ASSERT_OK(varlink_interface_parse("# c\ninterface org.example.t\n"
                                          "type T (labels: [string]int, tags: ?[]string, e: (a, b), any: object)\n"
                                          "method M(t: T, f: float, b: bool) -> ()\n"
                                          "error E ()\n",
                                          &i, &line));
        const VarlinkDefinition *m = varlink_interface_method(i, "M");
        json_object *v = json_tokener_parse(
                "{\"t\":{\"labels\":{\"x\":1},\"e\":\"b\",\"any\":{\"k\":[1]}},\"f\":1,\"b\":false}");
        char *bad = NULL;
        ASSERT_OK(varlink_validate(i, m->type, v, &bad));
        json_object_put(v);
        v = json_tokener_parse("{\"t\":{\"labels\":{\"x\":\"1\"},\"e\":\"b\",\"any\":{}},\"f\":1,\"b\":false}");
        ASSERT_INT(varlink_validate(i, m->type, v, &bad), -EINVAL);
        ASSERT_STR(bad, "t.labels[x]");
        free(bad);
        json_object_put(v);
        varlink_interface_free(i);

        static const char *const broken[] = {
                "",
                "interface noperiod\n",
                "interface org.example.t\nmethod M(x: Undefined) -> ()\n",
                "interface org.example.t\nmethod M() -> ()\nmethod M() -> ()\n",
                "interface org.example.t\ntype T (x: []?string)\n",
                "interface org.example.t\ntype lower (x: int)\n",
                "interface org.example.t\nmethod M(x: int)\n",
                "interface org.example.t\nmethod M(x: int, y) -> ()\n",
                "interface org.example.t\n\n\nmethod M(x: int -> ()\n",
        };
        for (size_t k = 0; k < ELEMENTSOF(broken); k++) {
                i = NULL;
                ASSERT_INT(varlink_interface_parse(broken[k], &i, &line), -EBADMSG);
                ASSERT_TRUE(i == NULL);
        }
        ASSERT_INT(line, 4);
}

int main(void) {
        test_node_interface();
        test_grammar();
        return 0;
}
