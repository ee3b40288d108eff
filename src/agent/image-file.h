/* SPDX-License-Identifier: MIT */
/* An image as one file, to move it between libraries (Image.Export writes one, ImportImage reads it back):
 * a line naming the format, a JSON header (the image's size, sector size and digest; its name, description,
 * layout and where it came from, for the library that imports it), then the image's frames in order as a
 * peer sends them (frame.h): ZSTD frames where they save, ZERO and SKIP runs elsewhere. Reading it back
 * checks each frame as a target does and the whole against the digest, and keeps the skipped chunks
 * skipped, so the imported image has the digest the exported one had. */
#pragma once

#include <json-c/json.h>

#include "usedmap.h"

#define IMAGE_FILE_MAGIC "PureBoot image 1\n"
#define IMAGE_FILE_HEADER_MAX (UINT32_C(4) << 20)

typedef void (*ImageProgress)(uint64_t offset, uint64_t size);

/* Writes the image staging (a Staging record) holds to out, header (taken: name, description, layout, …)
 * first with the manifest's size, sector size and digest added; or, when out is a block device (a desktop's
 * disk, which udisks2 opened for restoring), the disk itself as the image holds it, onto a disk at least as
 * large with the same sector size, the GPT's backup moved to its end. -EBADMSG (with *ret_why) if the image
 * is damaged, other errors if it could not be read or written. */
int image_file_export(json_object *staging, json_object *header, int out, ImageProgress progress,
                      char **ret_why);

/* Whether the first bytes of a file (n of them) say it is one. */
bool image_file_is_one(const void *head, size_t n);

/* Reads the file at in into the raw disk file raw (truncated to the image's size, the chunks left zero or
 * unwritten where the image has none): its header in *ret_header, the chunks it skips in *ret_skipped.
 * -EBADMSG with *ret_why if it is cut short, damaged or not one. */
int image_file_restore(int in, int raw, json_object **ret_header, UsedMap *ret_skipped,
                       ImageProgress progress, char **ret_why);
