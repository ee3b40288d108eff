/* SPDX-License-Identifier: MIT */
/* A target's relay: in a chain, the target serves the next one what it verified and wrote, over the same
 * mutual TLS and frame stream as the source (only certificates of the session's targets). Frames go on as
 * they were received — no recompression — from a window of the latest ones kept in memory; a downstream
 * that lags behind the window, or joins late, is served from the target's disk up to what it has written;
 * one that is ahead waits (its connection suspended) until the frames it asks for are written. */
#pragma once

#include "agent.h"
#include "device.h"
#include "frame.h"
#include "usedmap.h"

typedef struct Relay Relay;

/* A relay of dev, the source's size long, written before written, with the runs the source skipped
 * before it (copied). It serves once relay_start() reported where. */
int relay_new(Agent *a, Device *dev, uint64_t size, uint64_t written, const UsedMap *skipped, Relay **ret);
/* Serves on the agent's port and reports where (ReportRelayReady). */
int relay_start(Relay *r);
/* The frame with header h (wire: its header and payload as received, len bytes) is verified and written:
 * downstream streams may have it. */
void relay_frame(Relay *r, const FrameHeader *h, const uint8_t *wire, size_t len);
Relay *relay_free(Relay *r);
