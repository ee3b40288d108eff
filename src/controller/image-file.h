/* SPDX-License-Identifier: MIT */
/* Images outside the library, as files: Export writes an image to a file the caller opened (one file,
 * which ImportImage reads back with the same digest), ImportImage reads that, or a Clonezilla or FOG image
 * directory, into the library. The agent does the reading and writing on this host ([Images] Verifier=),
 * so the controller parses nothing of what it imports. An import restores the disk into a work directory
 * ([Images] WorkDirectory=), makes a staging area for it on the backend and uploads it there; until then
 * the image is "importing", and if any step fails it goes again with everything it made. */
#pragma once

#include "image.h"

/* done: why NULL on success; the image's id either way (it may be gone). */
typedef void (*ImageFileDone)(Manager *m, const char *id, const char *why, void *userdata);

/* Writes i to out (taken: closed when done). Refused unless i is ready and nothing else runs on it. */
int image_export(Image *i, int out, ImageFileDone done, void *userdata, sd_bus_error *error);

/* Imports what source (taken) holds as image name on storage; description "" takes the source's. *ret is
 * the new image (importing); done is told how it ended. check_only: refused as it would be, nothing made. */
int image_import(Manager *m, const char *name, const char *storage, const char *description, int source,
                 uint32_t uid, bool check_only, ImageFileDone done, void *userdata, Image **ret,
                 sd_bus_error *error);

/* At start: an import the controller stopped in the middle of is taken away (its data, its work directory,
 * its record). */
void image_import_abandoned(Image *i);
void image_import_free(ImageImport *x);
/* The controller stops during the import: done is told so. */
void image_import_stop(Manager *m, ImageImport *x);
