/* SPDX-License-Identifier: MIT */
/* src/shared: hash map, INI parsing with drop-ins, validation of names and paths, formatting, subnets. */
#include <sys/stat.h>

#include "address.h"
#include "domain.h"
#include "format.h"
#include "hashmap.h"
#include "ini.h"
#include "tests.h"
#include "util.h"

static void test_hashmap(void) {
        Hashmap *h = hashmap_new();
        char keys[2000][16];
        size_t n = 0;
        void *v;

        for (int i = 0; i < 2000; i++) {
                snprintf(keys[i], sizeof(keys[i]), "key-%d", i);
                ASSERT_OK(hashmap_put(h, keys[i], keys[i]));
        }
        ASSERT_INT(hashmap_put(h, "key-7", NULL), -EEXIST);
        ASSERT_INT(hashmap_size(h), 2000);
        for (int i = 0; i < 2000; i += 2)
                ASSERT_TRUE(hashmap_remove(h, keys[i]) == keys[i]);
        ASSERT_INT(hashmap_size(h), 1000);
        ASSERT_TRUE(hashmap_get(h, "key-0") == NULL);
        ASSERT_STR(hashmap_get(h, "key-1999"), "key-1999");
        HASHMAP_FOREACH (v, h, i)
                n++;
        ASSERT_INT(n, 1000);
        /* Re-inserting over tombstones keeps lookups right. */
        ASSERT_OK(hashmap_put(h, keys[0], keys[0]));
        ASSERT_STR(hashmap_get(h, "key-0"), "key-0");
        hashmap_free(h);
}

typedef struct Seen {
        char log[512];
} Seen;

static int collect(const char *file, unsigned line, const char *section, const char *key, const char *value,
                   void *userdata) {
        Seen *s = userdata;
        (void) file;
        size_t l = strlen(s->log);
        snprintf(s->log + l, sizeof(s->log) - l, "%u:[%s]%s=%s;", line, section, key, value);
        return 0;
}

static void write_text(const char *path, const char *text) {
        FILE *f = fopen(path, "we");
        ASSERT_TRUE(f);
        fputs(text, f);
        fclose(f);
}

static void test_ini(void) {
        char *dir = tmpdir_new(), path[256], dropins[300], p[400];
        Seen s = {};

        ASSERT_OK(ini_parse_string(
                "t", "# comment\n\n[CA]\nKeyAlgorithm = rsa-2048 \n; x\n[Controller]\nA=\n", collect, &s));
        ASSERT_STR(s.log, "4:[CA]KeyAlgorithm=rsa-2048;7:[Controller]A=;");
        ASSERT_INT(ini_parse_string("t", "Key=1\n", collect, &s), -EBADMSG);
        ASSERT_INT(ini_parse_string("t", "[A]\nno equals\n", collect, &s), -EBADMSG);
        ASSERT_INT(ini_parse_string("t", "[A\n", collect, &s), -EBADMSG);

        snprintf(path, sizeof(path), "%s/controller.conf", dir);
        snprintf(dropins, sizeof(dropins), "%s.d", path);
        write_text(path, "[CA]\nKeyAlgorithm=ecdsa-p256\n");
        mkdir(dropins, 0755);
        snprintf(p, sizeof(p), "%s/20-b.conf", dropins);
        write_text(p, "[CA]\nKeyAlgorithm=rsa-4096\n");
        snprintf(p, sizeof(p), "%s/10-a.conf", dropins);
        write_text(p, "[CA]\nKeyAlgorithm=rsa-2048\n");
        snprintf(p, sizeof(p), "%s/ignored.txt", dropins);
        write_text(p, "garbage");
        memset(&s, 0, sizeof(s));
        ASSERT_OK(ini_parse_with_dropins(path, collect, &s));
        ASSERT_STR(s.log,
                   "2:[CA]KeyAlgorithm=ecdsa-p256;2:[CA]KeyAlgorithm=rsa-2048;2:[CA]KeyAlgorithm=rsa-4096;");
        tmpdir_remove(dir);
}

static void test_validation(void) {
        char *mac = NULL;

        ASSERT_TRUE(device_path_is_valid("/dev/sda"));
        ASSERT_TRUE(device_path_is_valid("/dev/disk/by-id/nvme-Samsung_SSD_970-part1"));
        ASSERT_TRUE(device_path_is_valid("/dev/mmcblk0"));
        ASSERT_TRUE(!device_path_is_valid("/dev/"));
        ASSERT_TRUE(!device_path_is_valid("/dev/../etc/passwd"));
        ASSERT_TRUE(!device_path_is_valid("/dev/.."));
        ASSERT_TRUE(!device_path_is_valid("/dev/sda/.."));
        ASSERT_TRUE(!device_path_is_valid("/dev//sda"));
        ASSERT_TRUE(!device_path_is_valid("dev/sda"));
        ASSERT_TRUE(!device_path_is_valid("/etc/passwd"));
        ASSERT_TRUE(!device_path_is_valid("/dev/sda; rm -rf /"));
        ASSERT_TRUE(!device_path_is_valid("/dev/sda\n"));

        ASSERT_TRUE(hostname_is_valid("web-01"));
        ASSERT_TRUE(hostname_is_valid("node1.lab.example.com"));
        ASSERT_TRUE(!hostname_is_valid("-web"));
        ASSERT_TRUE(!hostname_is_valid("web-"));
        ASSERT_TRUE(!hostname_is_valid("a..b"));
        ASSERT_TRUE(!hostname_is_valid("x'; DROP TABLE nodes; --"));
        ASSERT_TRUE(!hostname_is_valid("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));

        ASSERT_OK(mac_normalize("AA-BB-CC-DD-EE-0F", &mac));
        ASSERT_STR(mac, "aa:bb:cc:dd:ee:0f");
        free(mac);
        ASSERT_INT(mac_normalize("aa:bb:cc:dd:ee", &mac), -EINVAL);
        ASSERT_INT(mac_normalize("aa:bb-cc:dd:ee:ff", &mac), -EINVAL);
        ASSERT_INT(mac_normalize("gg:bb:cc:dd:ee:ff", &mac), -EINVAL);
        ASSERT_INT(mac_normalize("aa:bb:cc:dd:ee:f ", &mac), -EINVAL);

        ASSERT_TRUE(name_is_valid("Clone web-01 → web-02", 255));
        ASSERT_TRUE(!name_is_valid("", 255));
        ASSERT_TRUE(!name_is_valid("tab\there", 255));

        char id[PB_ID_LEN + 1];
        ASSERT_OK(id_new(id));
        ASSERT_TRUE(id_is_valid(id));
        ASSERT_TRUE(!id_is_valid("ABCDEF0123456789abcdef0123456789"));
}

static void test_format(void) {
        char b[FORMAT_BYTES_MAX], t[FORMAT_TIMESTAMP_MAX];
        ASSERT_STR(format_bytes(b, 512), "512 B");
        ASSERT_STR(format_bytes(b, 1536), "1.5 KiB");
        ASSERT_STR(format_bytes(b, UINT64_C(64) << 30), "64.0 GiB");
        ASSERT_STR(format_duration(t, 3725), "1h 02m");
        ASSERT_STR(format_duration(t, 185), "3m 05s");
        ASSERT_STR(format_timestamp(t, 0), "n/a");
}

static void test_write_file_atomic(void) {
        char *dir = tmpdir_new(), path[256], *text = NULL;
        struct stat st;

        snprintf(path, sizeof(path), "%s/secret", dir);
        ASSERT_OK(write_file_atomic(path, "key", 3, 0600));
        ASSERT_OK(stat(path, &st));
        ASSERT_INT(st.st_mode & 07777, 0600);
        ASSERT_OK(write_file_atomic(path, "key2", 4, 0600));
        ASSERT_OK(read_full_file(path, &text, NULL));
        ASSERT_STR(text, "key2");
        free(text);
        tmpdir_remove(dir);
}

/* Every value of every domain enum has a name, and the name reads back as that value; unknown names and
 * values out of range are refused. */
static void test_string_tables(void) {
        const StringTable *tables[] = { &clone_status_strings,     &clone_mode_strings,
                                        &clone_role_strings,       &staging_status_strings,
                                        &resize_mode_strings,      &backend_type_strings,
                                        &node_state_strings,       &boot_mode_strings,
                                        &operation_status_strings, &clone_identity_strings,
                                        &clone_unused_strings };
        const unsigned maxima[] = { _CLONE_STATUS_MAX,   _CLONE_MODE_MAX,  _CLONE_ROLE_MAX,
                                    _STAGING_STATUS_MAX, _RESIZE_MODE_MAX, _BACKEND_TYPE_MAX,
                                    _NODE_STATE_MAX,     _BOOT_MODE_MAX,   _OPERATION_STATUS_MAX,
                                    _CLONE_IDENTITY_MAX, _CLONE_UNUSED_MAX };
        _Static_assert(ELEMENTSOF(tables) == ELEMENTSOF(maxima), "a maximum per table");

        for (size_t t = 0; t < ELEMENTSOF(tables); t++) {
                ASSERT_INT(tables[t]->n, maxima[t]);
                for (unsigned v = 0; v < maxima[t]; v++) {
                        const char *name = string_table_to_string(tables[t], v);
                        ASSERT_TRUE(name);
                        ASSERT_INT(string_table_from_string(tables[t], name), v);
                }
                ASSERT_TRUE(!string_table_to_string(tables[t], maxima[t]));
                ASSERT_INT(string_table_from_string(tables[t], "no-such-value"), -EINVAL);
                ASSERT_INT(string_table_from_string(tables[t], NULL), -EINVAL);
        }
        /* The typed functions are the same tables. */
        ASSERT_STR(clone_status_to_string(CLONE_SOURCE_READY), "source_ready");
        ASSERT_INT(staging_status_from_string(""), STAGING_NONE);
        ASSERT_INT(node_state_from_string("cloning_target"), NODE_CLONING_TARGET);
        ASSERT_TRUE(clone_status_is_final(CLONE_CANCELLED) && !clone_status_is_final(CLONE_CLONING));
        ASSERT_TRUE(clone_status_is_active(CLONE_SOURCE_READY) && !clone_status_is_active(CLONE_PENDING));
        ASSERT_TRUE(clone_status_name_is_final("failed") && !clone_status_name_is_final("waiting") &&
                    !clone_status_name_is_final("bogus") && !clone_status_name_is_final(NULL));
}

/* Directories get the mode asked for under the units' UMask=0077 too: a Pi's overlay is its root. */
static void test_mkdir_modes(void) {
        char *dir = tmpdir_new(), path[256];
        mode_t old = umask(0077);
        struct stat st;

        snprintf(path, sizeof(path), "%s/a/b/c", dir);
        ASSERT_OK(mkdir_p(path, 0755));
        ASSERT_OK(stat(path, &st));
        ASSERT_INT(st.st_mode & 07777, 0755);
        snprintf(path, sizeof(path), "%s/a", dir);
        ASSERT_OK(stat(path, &st));
        ASSERT_INT(st.st_mode & 07777, 0755);
        ASSERT_OK(mkdir_p(path, 0700)); /* exists: left as it is */
        ASSERT_OK(stat(path, &st));
        ASSERT_INT(st.st_mode & 07777, 0755);
        ASSERT_INT(mkdir_exact(path, 0755), -EEXIST);
        snprintf(path, sizeof(path), "%s/d", dir);
        ASSERT_OK(mkdir_exact(path, 0711));
        ASSERT_OK(stat(path, &st));
        ASSERT_INT(st.st_mode & 07777, 0711);
        umask(old);
        tmpdir_remove(dir);
}

static void test_subnet(void) {
        Subnet s;

        ASSERT_OK(subnet_parse("10.1.2.0/24", &s));
        ASSERT_TRUE(subnet_contains(&s, "10.1.2.0") && subnet_contains(&s, "10.1.2.255"));
        ASSERT_TRUE(!subnet_contains(&s, "10.1.3.1") && !subnet_contains(&s, "fd00::1"));
        ASSERT_TRUE(!subnet_contains(&s, "bridge.example"));
        ASSERT_OK(subnet_parse("10.1.2.130/25", &s)); /* host bits set: the subnet is 10.1.2.128/25 */
        ASSERT_TRUE(subnet_contains(&s, "10.1.2.128") && !subnet_contains(&s, "10.1.2.127"));
        ASSERT_OK(subnet_parse("10.9.8.7", &s));
        ASSERT_TRUE(subnet_contains(&s, "10.9.8.7") && !subnet_contains(&s, "10.9.8.6"));
        ASSERT_OK(subnet_parse("0.0.0.0/0", &s));
        ASSERT_TRUE(subnet_contains(&s, "192.0.2.1") && !subnet_contains(&s, "::1"));
        ASSERT_OK(subnet_parse("fd00:1::/36", &s));
        ASSERT_TRUE(subnet_contains(&s, "fd00:1:fff::9") && !subnet_contains(&s, "fd00:1:1000::9"));
        ASSERT_INT(subnet_parse("10.1.2.0/33", &s), -EINVAL);
        ASSERT_INT(subnet_parse("fd00::/129", &s), -EINVAL);
        ASSERT_INT(subnet_parse("/24", &s), -EINVAL);
        ASSERT_INT(subnet_parse("10.1.2/24", &s), -EINVAL);
        ASSERT_INT(subnet_parse("10.1.2.0/", &s), -EINVAL);
        ASSERT_INT(subnet_parse("10.1.2.0/-1", &s), -EINVAL);
}

static void test_strv_and_reasons(void) {
        char **l = strv_split("  sda1\tsda2\n sda5 ", " \t\n"), *joined, *why = NULL;
        ASSERT_TRUE(l != NULL);
        ASSERT_INT(strv_length(l), 3);
        joined = strv_join(l, ",");
        ASSERT_STR(joined, "sda1,sda2,sda5");
        free(joined);
        strv_free(l);
        l = strv_split(" \n", " \n");
        ASSERT_TRUE(l != NULL && strv_length(l) == 0);
        strv_free(l);
        /* The first reason stays; each call returns what it was given. */
        ASSERT_INT(reason_first(&why, -EIO, "reading %s failed", "disk.raw"), -EIO);
        ASSERT_INT(reason_first(&why, -EBADMSG, "a later failure"), -EBADMSG);
        ASSERT_STR(why, "reading disk.raw failed");
        free(why);
}

int main(void) {
        test_strv_and_reasons();
        test_hashmap();
        test_ini();
        test_validation();
        test_format();
        test_write_file_atomic();
        test_mkdir_modes();
        test_string_tables();
        test_subnet();
        return 0;
}
