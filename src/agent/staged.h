/* SPDX-License-Identifier: MIT */
/* Staged clones inside the agent: what the upload job and the image's check (staged.c), the staging area
 * as a target's upstream (store-stream.c) and the transports to a staging area (staged-nfs.c,
 * staged-iscsi.c) share. A transport connects, uploads the disk with its manifest, reads the manifest back
 * and reads the image through a Writer, which checks each chunk against the manifest before it hands it on;
 * each runs in a thread of its own. */
#pragma once

#include <pthread.h>
#include <stdatomic.h>

#include "agent.h"
#include "device.h"
#include "frame.h"
#include "storage-io.h"

#define FILES_IO (UINT64_C(4) << 20)

typedef struct StagingTransport StagingTransport;

struct Stager {
        Agent *agent;
        Device dev;           /* the source's disk */
        json_object *staging; /* from GetStaging */
        bool asked, reported_done;
        bool ready_reported; /* ReportSourceReady queued, with the size the plan allows */

        pthread_t thread;
        bool thread_started;
        int event_fd;
        sd_event_source *event_source, *progress_timer;
        ProgressMeter progress;
        _Atomic uint64_t bytes;
        _Atomic bool cancel;
        uint64_t started_at;
        uint64_t resume; /* where reading the image started: --max-rate counts from there */
        UsedMap map;     /* what the disk's filesystems do not use, which the image leaves out */
        UsedMap skipped; /* the chunks left out, for the manifest */
        /* Set by the thread before it signals the end. */
        char *why, *digest;
        uint64_t stored; /* what the image takes on the storage: set by upload and read_manifest */
        void (*tell)(uint64_t offset, uint64_t size); /* work on the controller's host: told as it goes on */
};

typedef struct Manifest {
        uint64_t size, sector_size;
        const char *digest, *hashes; /* hashes: 32 hex digits per chunk */
        json_object *segments;       /* nfs: [[offset, length], …] of each zstd frame */
        UsedMap skipped;             /* chunks no filesystem uses, not in the image */
        json_object *root;
} Manifest;

void manifest_done(Manifest *m);

/* Sets the reason the transfer failed (the first one stays) and returns r, or -EIO. */
int stager_fail(Stager *s, int r, const char *format, ...) _printf_(3, 4);
/* --max-rate: holds the thread back so that it moves no more than that many bytes a second. */
void stager_pace(Stager *s, uint64_t bytes);
/* Connects to the area s->staging describes (a Staging record, as GetStaging gives it) as initiator. */
int stager_connect(Stager *s, const char *initiator, const StagingTransport **ret_transport,
                   void **ret_conn);
/* The path of a staged file in the session's directory on the export, or of its partial form. */
char *stager_path(Stager *s, const char *name, bool partial);

/* The manifest of the disk s uploads (segments: of the compressed image, or NULL), and its parsing. */
json_object *manifest_new(Stager *s, const char *digest, const char *hashes, json_object *segments);
int manifest_parse(Stager *s, const char *text, Manifest *ret);

/* The upload: reads each chunk (as device_read_chunk() with the source's map), hashes it for the manifest
 * and the digest, and hands it on with its kind: a FRAME_SKIP chunk was not read and is not in the image. */
typedef int (*ChunkSink)(Stager *s, void *ctx, const uint8_t *chunk, size_t n, uint64_t offset,
                         FrameType type);
int read_disk(Stager *s, ChunkSink sink, void *ctx, char **ret_hashes, char **ret_digest);

/* Reading an image: each chunk checked against the manifest, then fed to the digest (a check) or handed to
 * emit (a target's upstream): a chunk (data, its content hash) or a run of skipped chunks (data NULL). */
typedef struct Writer Writer;
typedef int (*WriterEmit)(Writer *w, const uint8_t *data, uint64_t offset, uint64_t length,
                          XXH128_hash_t content);
struct Writer {
        Stager *s;
        const Manifest *m;
        Digest digest;
        uint64_t offset, synced;
        uint8_t *chunk;
        size_t have;
        WriterEmit emit;
        void *userdata;
};

/* Appends the image's bytes to the current chunk, checking and handing on each as it fills; the chunks the
 * manifest says were left out are passed over as runs. */
int writer_feed(Writer *w, const uint8_t *data, size_t n);
/* After the transport's last bytes: the skipped chunks at the end, and the image's length checked. */
int writer_finish(Writer *w);
/* Whether the chunk at offset was left out of the image. */
bool writer_skips(const Writer *w, uint64_t offset, size_t n);

/* One kind of staging area. Each call fails with stager_fail()'s reason set. */
struct StagingTransport {
        BackendType type;
        /* Connects to the area at l as initiator (our name there, for iSCSI). */
        int (*connect)(Stager *s, const StorageLocation *l, const char *initiator, void **ret_conn);
        void (*disconnect)(void *conn);
        /* The source: the disk as an image and, once it is whole, its manifest; sets s->digest and
         * s->stored. */
        int (*upload)(Stager *s, void *conn);
        /* The manifest (and s->stored), then the image from w->offset on (a segment's start), through
         * writer_feed(). */
        int (*read_manifest)(Stager *s, void *conn, Manifest *ret);
        int (*download)(Stager *s, void *conn, const Manifest *m, Writer *w);
};

extern const StagingTransport staging_transport_nfs, staging_transport_iscsi, staging_transport_local;

/* The files of a staging area, as staged-files.c writes and reads the zstd image in them: an NFS export's
 * (libnfs), or a local backend's (staged-local.c: through the bridge, or in its directory on the
 * controller's host). Each returns a negative errno on failure, and error() says what the other side
 * answered. */
typedef struct StagingFiles {
        int (*open)(void *conn, const char *path, void **ret_file);                 /* to read */
        int (*create)(void *conn, const char *path, void **ret_file);               /* to write, anew */
        int (*pread)(void *conn, void *file, void *buf, size_t n, uint64_t offset); /* all n bytes */
        int (*pwrite)(void *conn, void *file, const void *buf, size_t n, uint64_t offset);
        void (*close)(void *conn, void *file);
        /* A written file made durable, closed and renamed from partial to final. */
        int (*commit)(void *conn, void *file, const char *partial, const char *final);
        int (*unlink)(void *conn, const char *path);
        int (*size)(void *conn, const char *path, uint64_t *ret);
        const char *(*error)(void *conn);
        void (*disconnect)(void *conn);
} StagingFiles;

/* The transport's connection over conn, which ops reaches (taken, even on failure). */
int staging_files_connect(const StagingFiles *ops, void *conn, void **ret_conn);
/* staged-local.c: a local backend's area, through the bridge with the agent's certificate (s->agent), or in
 * its directory on the controller's host (no agent: an image's check). */
int staging_local_connect(Stager *s, const StorageLocation *l, const char *initiator, void **ret_conn);

/* What work on a staging area's image found: on success its digest and the bytes it takes on the storage
 * (the compressed files of an NFS or local area, the LUN of an iSCSI one), else why not. */
typedef struct StagedOutcome {
        char *digest, *why;
        uint64_t stored;
} StagedOutcome;
void staged_outcome_done(StagedOutcome *o);

/* Reads the image a staging area holds (staging: a Staging record, as GetStaging gives it) and checks every
 * chunk against its manifest and the whole against its digest, writing nothing; progress goes to verified.
 * 0 if it is whole; else ret->why says where it is not, and -EBADMSG means the image is damaged (not only
 * unreachable). */
int staged_verify(json_object *staging, void (*verified)(uint64_t offset, uint64_t size),
                  StagedOutcome *ret);
/* Uploads the disk file at path into the staging area staging describes (an import, on the controller's
 * host), leaving out the chunks skipped lists (taken; NULL: what the file's filesystems do not use);
 * progress goes to uploaded. */
int staged_upload_file(json_object *staging, const char *path, UsedMap *skipped,
                       void (*uploaded)(uint64_t offset, uint64_t size), StagedOutcome *ret);
