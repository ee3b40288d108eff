/* SPDX-License-Identifier: MIT */
/* The staging area as a target's upstream: the head of a staged session's chain (or its only target) reads
 * the image through the area's transport in a thread of its own, checks each chunk against the manifest and
 * turns it into the frames a peer would send — ZSTD frames while they are forwarded — into a socket that
 * the target reads as it reads a peer's stream (target.c). */
#pragma once

#include "agent.h"

typedef struct StoreStream StoreStream;

/* Starts reading the image staging (a Staging record, as GetStaging gives it) describes, whose manifest must
 * say size bytes of sector_size-byte sectors, from offset from on (a chunk's start). *ret_fd gives its
 * frames, then EOF; it stays the stream's. */
int store_stream_new(Agent *a, json_object *staging, uint64_t size, uint64_t sector_size, uint64_t from,
                     bool compress, StoreStream **ret, int *ret_fd);
/* Whether the chunks it sends from now on are compressed: worth it only when they are forwarded. */
void store_stream_compress(StoreStream *ss, bool compress);
/* After EOF: 0 if it sent the image to its end; else <0 with *ret_why (the stream's), and -EBADMSG or
 * -EINVAL if the image is damaged or does not fit this disk (reading again would not help). */
int store_stream_end(StoreStream *ss, const char **ret_why);
StoreStream *store_stream_free(StoreStream *ss);
