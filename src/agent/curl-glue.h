/* SPDX-License-Identifier: MIT */
/* libcurl's multi interface driven by sd-event: curl tells us which sockets and when to wake it, the loop
 * does the waiting (the way systemd's import code does it). */
#pragma once

#include <curl/curl.h>
#include <systemd/sd-event.h>

typedef struct CurlGlue CurlGlue;

/* Runs when a transfer ends, with the easy handle (still added to nothing) and its result. */
typedef void (*CurlDone)(CURL *easy, CURLcode result, void *userdata);
/* Frees what a transfer still running when the loop goes away owns (its handle included); done never runs
 * for it then. */
typedef void (*CurlRelease)(void *userdata);

int curl_glue_new(sd_event *event, CurlGlue **ret);
CurlGlue *curl_glue_free(CurlGlue *g);
/* Starts a transfer; never from inside a curl callback, which curl refuses. done runs once it ended. The
 * caller keeps the handle and frees it after done, or cancels it with curl_glue_remove; a transfer whose
 * owner outlives neither (a report in flight when the agent exits) passes release, which curl_glue_free runs
 * for it. */
int curl_glue_add(CurlGlue *g, CURL *easy, CurlDone done, CurlRelease release, void *userdata);
void curl_glue_remove(CurlGlue *g, CURL *easy);

/* For write callbacks: appends n bytes to the NUL-terminated *buf of *len bytes, up to max in all.
 * Returns n, or 0 (which makes curl end the transfer) if that would pass max or memory ran out. */
size_t curl_glue_collect(char **buf, size_t *len, size_t max, const char *p, size_t n);
