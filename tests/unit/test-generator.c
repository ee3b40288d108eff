/* SPDX-License-Identifier: MIT */
/* pureboot-generator with SYSTEMD_PROC_CMDLINE-style input: the command line parser, each mode, unknown
 * and missing modes, quoting, and the binary itself as systemd runs it. */
#include <sys/stat.h>
#include <sys/wait.h>

#include "generator.h"
#include "tests.h"

static void test_cmdline_get(void) {
        char *v = NULL;
        ASSERT_INT(cmdline_get("quiet pureboot.mode=partition ro", "pureboot.mode", &v), 1);
        ASSERT_STR(v, "partition");
        free(v);
        /* The last one wins, as with the kernel's own parameters. */
        ASSERT_INT(cmdline_get("pureboot.mode=a pureboot.mode=b", "pureboot.mode", &v), 1);
        ASSERT_STR(v, "b");
        free(v);
        ASSERT_INT(cmdline_get("x \"pureboot.name=two words\" y", "pureboot.name", &v), 1);
        ASSERT_STR(v, "two words");
        free(v);
        ASSERT_INT(cmdline_get("pureboot.modex=1 xpureboot.mode=2", "pureboot.mode", &v), 0);
        ASSERT_INT(cmdline_get("  \n", "pureboot.mode", &v), 0);
        ASSERT_INT(cmdline_get("pureboot.mode", "pureboot.mode", &v), 1);
        ASSERT_STR(v, "");
        free(v);
}

static void expect(const char *cmdline, const char *unit) {
        char *dir = tmpdir_new(), path[512];
        struct stat st;
        int r = generator_run(cmdline, dir, "/usr/lib/systemd/system");
        ASSERT_INT(r, unit ? 1 : 0);
        snprintf(path, sizeof(path), "%s/multi-user.target.wants", dir);
        if (!unit) {
                ASSERT_TRUE(stat(path, &st) < 0); /* nothing written at all */
        } else {
                char target[512] = {};
                snprintf(path, sizeof(path), "%s/multi-user.target.wants/%s", dir, unit);
                ASSERT_TRUE(readlink(path, target, sizeof(target) - 1) > 0);
                ASSERT_STR(target, "/usr/lib/systemd/system/pureboot-agent@.service");
        }
        tmpdir_remove(dir);
}

static void test_modes(void) {
        static const char *const modes[] = { "clone_source_direct", "clone_target_direct", "clone_source_staged",
                                             "clone_target_staged", "partition" };
        for (size_t i = 0; i < ELEMENTSOF(modes); i++) {
                char cmdline[256], unit[128];
                snprintf(cmdline, sizeof(cmdline),
                         "BOOT_IMAGE=/vmlinuz console=ttyS0 pureboot.mode=%s pureboot.session=abc quiet", modes[i]);
                snprintf(unit, sizeof(unit), "pureboot-agent@%s.service", modes[i]);
                expect(cmdline, unit);
        }
        expect("console=ttyS0 quiet", NULL);           /* not a PureBoot boot */
        expect("pureboot.mode=reinstall_windows", NULL); /* unknown: logged and ignored */
        expect("pureboot.mode=../../etc/passwd", NULL);
        expect("pureboot.mode=", NULL);
}

/* The binary, as systemd runs it: three directories and the command line from the environment. */
static void test_binary(const char *binary) {
        char *dir = tmpdir_new(), path[512];
        struct stat st;
        pid_t pid = fork();
        ASSERT_TRUE(pid >= 0);
        if (pid == 0) {
                setenv("SYSTEMD_PROC_CMDLINE", "ro pureboot.mode=clone_target_direct", 1);
                execl(binary, binary, dir, dir, dir, NULL);
                _exit(127);
        }
        int status;
        ASSERT_TRUE(waitpid(pid, &status, 0) == pid);
        ASSERT_INT(WEXITSTATUS(status), 0);
        snprintf(path, sizeof(path), "%s/multi-user.target.wants/pureboot-agent@clone_target_direct.service", dir);
        ASSERT_OK(lstat(path, &st));
        ASSERT_TRUE(S_ISLNK(st.st_mode));
        tmpdir_remove(dir);
}

int main(int argc, char *argv[]) {
        test_cmdline_get();
        test_modes();
        if (argc > 1)
                test_binary(argv[1]);
        return 0;
}
