/* SPDX-License-Identifier: MIT */
/* Images from outside the library, restored into a raw disk file that the upload then reads as it reads a
 * node's disk (staged_upload_file): a file that Image.Export wrote (image-file.c), or the directory of a
 * disk image that Clonezilla or FOG saved. Those are restored by the tools that made them — sfdisk for the
 * partition table, partclone.restore for each partition — and read by us only as far as finding which file
 * is which: the names a directory lists are checked before anything is opened, and only regular files in
 * it are read, never a link out of it. */
#pragma once

#include <json-c/json.h>

#include "image-file.h"
#include "usedmap.h"

typedef struct ImportedDisk {
        const char *format;  /* "pureboot", "clonezilla", "fog", "disk" (a block device) */
        char *device;        /* what the source called the disk (/dev/sda), if it says */
        json_object *header; /* what the source says of the image: an export's header, else {} */
        UsedMap skipped;     /* the chunks the image leaves out (an export's), to leave out again */
        char **notes;        /* what the import did not keep as it was, a sentence each */
} ImportedDisk;

void imported_disk_done(ImportedDisk *d);

/* The raw disk file an import makes in its work directory. */
#define IMPORT_DISK_FILE "disk.raw"

/* Restores what source (an open file, directory or block device) holds into IMPORT_DISK_FILE, new in the
 * directory work (which the restore uses for its own files too, and cleans of them). -EBADMSG with *ret_why
 * if it is not something this reads, or damaged; other errors (with *ret_why) if reading or writing failed.
 */
int image_import_restore(int source, const char *work, ImageProgress progress, ImportedDisk *ret,
                         char **ret_why);
