/* SPDX-License-Identifier: MIT */
/* Sizes, rates, times and durations as people read them. */
#pragma once

#include "macro.h"

#define FORMAT_BYTES_MAX 32
#define FORMAT_TIMESTAMP_MAX 64

/* 1536 → "1.5 KiB"; bytes below 1024 as "512 B". */
char *format_bytes(char buf[static FORMAT_BYTES_MAX], uint64_t bytes);
/* The same into a buffer that lives until the end of the enclosing block, for log lines. */
#define FORMAT_BYTES(bytes) format_bytes((char[FORMAT_BYTES_MAX]){}, (bytes))
/* µs since the epoch → "2026-11-22 03:17:25 UTC" in local time; 0 → "n/a". */
char *format_timestamp(char buf[static FORMAT_TIMESTAMP_MAX], uint64_t usec);
/* seconds → "1h 02m", "3m 05s", "12s". */
char *format_duration(char buf[static FORMAT_TIMESTAMP_MAX], uint64_t seconds);
