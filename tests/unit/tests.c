/* SPDX-License-Identifier: MIT */
#include <ftw.h>
#include <unistd.h>

#include "tests.h"

char *tmpdir_new(void) {
        char *d = strdup("/tmp/pureboot-unit-XXXXXX");
        if (!d || !mkdtemp(d))
                abort();
        return d;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st, (void) flag, (void) ftw;
        return remove(path);
}

void tmpdir_remove(char *dir) {
        if (dir)
                (void) nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
        free(dir);
}
