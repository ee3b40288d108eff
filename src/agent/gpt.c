/* SPDX-License-Identifier: MIT */
/* The GPT layout (UEFI 2.10 §5.3): a protective MBR in LBA 0, the primary header in LBA 1 with its entries
 * after it, and the backup entries and header in the last sectors of the disk, each header naming the
 * other. All fields are little-endian. */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "gpt.h"
#include "util.h"

#define GPT_SIGNATURE "EFI PART"
#define HDR_SIZE 12
#define HDR_CRC 16
#define HDR_MY_LBA 24
#define HDR_ALTERNATE_LBA 32
#define HDR_LAST_USABLE 48
#define HDR_ENTRIES_LBA 72
#define HDR_N_ENTRIES 80
#define HDR_ENTRY_SIZE 84
#define HDR_ENTRIES_CRC 88
#define ENTRY_LAST_LBA 40
#define MBR_ENTRY 446

/* GPT's CRC32 is zlib's (IEEE 802.3). */
static uint32_t crc32_ieee(const uint8_t *p, size_t n) {
        return (uint32_t) crc32(0L, p, (uInt) n);
}

static uint64_t get64(const uint8_t *p, size_t off) {
        uint64_t v;
        memcpy(&v, p + off, sizeof(v));
        return le64toh(v);
}

static uint32_t get32(const uint8_t *p, size_t off) {
        uint32_t v;
        memcpy(&v, p + off, sizeof(v));
        return le32toh(v);
}

static void put64(uint8_t *p, size_t off, uint64_t v) {
        v = htole64(v);
        memcpy(p + off, &v, sizeof(v));
}

static void put32(uint8_t *p, size_t off, uint32_t v) {
        v = htole32(v);
        memcpy(p + off, &v, sizeof(v));
}

static void seal(uint8_t *hdr) {
        put32(hdr, HDR_CRC, 0);
        put32(hdr, HDR_CRC, crc32_ieee(hdr, get32(hdr, HDR_SIZE)));
}

_printf_(2, 3) static int damaged(char **ret_error, const char *format, ...) {
        va_list ap;
        va_start(ap, format);
        if (vasprintf(ret_error, format, ap) < 0)
                *ret_error = NULL;
        va_end(ap);
        return *ret_error ? -EUCLEAN : -ENOMEM;
}

static int read_at(int fd, void *buf, size_t n, uint64_t off) {
        ssize_t k = pread(fd, buf, n, (off_t) off);
        return k < 0 ? -errno : (size_t) k != n ? -EIO : 0;
}

int gpt_relocate_backup(int fd, uint32_t sector, uint64_t size, const unsigned *drop, size_t n_drop,
                        char **ret_error) {
        _cleanup_free_ uint8_t *mbr = malloc(sector), *hdr = malloc(sector), *entries = NULL;
        uint64_t last_lba = size / sector - 1, backup_entries_lba, last_usable;
        uint32_t n_entries, entry_size, crc;
        size_t entries_bytes, entry_sectors;
        int r;

        *ret_error = NULL;
        if (!mbr || !hdr)
                return -ENOMEM;
        if (size / sector < 68)
                return 1; /* too small to hold a GPT at all */
        r = read_at(fd, mbr, sector, 0);
        if (r >= 0)
                r = read_at(fd, hdr, sector, sector);
        if (r < 0)
                return r;
        if (memcmp(hdr, GPT_SIGNATURE, 8) != 0)
                return 1;
        if (get32(hdr, HDR_SIZE) < 92 || get32(hdr, HDR_SIZE) > sector)
                return damaged(ret_error, "The GPT header has a size of %u bytes; the table is damaged.",
                               get32(hdr, HDR_SIZE));
        crc = get32(hdr, HDR_CRC);
        put32(hdr, HDR_CRC, 0);
        if (crc32_ieee(hdr, get32(hdr, HDR_SIZE)) != crc)
                return damaged(ret_error, "The primary GPT header fails its checksum; the copy is damaged.");
        put32(hdr, HDR_CRC, crc);
        if (get64(hdr, HDR_ALTERNATE_LBA) == last_lba && n_drop == 0)
                return 1;

        n_entries = get32(hdr, HDR_N_ENTRIES);
        entry_size = get32(hdr, HDR_ENTRY_SIZE);
        if (n_entries == 0 || n_entries > 1024 || entry_size < 128 || entry_size > 1024)
                return damaged(ret_error,
                               "The GPT header claims %u entries of %u bytes; the table is damaged.",
                               n_entries, entry_size);
        entries_bytes = (size_t) n_entries * entry_size;
        entry_sectors = (entries_bytes + sector - 1) / sector;
        entries = calloc(entry_sectors, sector);
        if (!entries)
                return -ENOMEM;
        r = read_at(fd, entries, entries_bytes, get64(hdr, HDR_ENTRIES_LBA) * sector);
        if (r < 0)
                return r;
        if (crc32_ieee(entries, entries_bytes) != get32(hdr, HDR_ENTRIES_CRC))
                return damaged(ret_error,
                               "The GPT partition entries fail their checksum; the copy is damaged.");
        for (size_t i = 0; i < n_drop; i++)
                if (drop[i] >= 1 && drop[i] <= n_entries)
                        memset(entries + (size_t) (drop[i] - 1) * entry_size, 0, entry_size);
        put32(hdr, HDR_ENTRIES_CRC, crc32_ieee(entries, entries_bytes));
        backup_entries_lba = last_lba - entry_sectors;
        last_usable = backup_entries_lba - 1;
        for (uint32_t i = 0; i < n_entries; i++) {
                const uint8_t *e = entries + (size_t) i * entry_size;
                static const uint8_t unused[16] = {};
                if (memcmp(e, unused, 16) != 0 && get64(e, ENTRY_LAST_LBA) > last_usable)
                        return damaged(ret_error,
                                       "Partition %u ends at sector %" PRIu64 ", past the last usable "
                                       "sector %" PRIu64 " of this %" PRIu64 "-byte disk.",
                                       i + 1, get64(e, ENTRY_LAST_LBA), last_usable, size);
        }

        /* The backup first (entries, then its header), the primary last: until then the old table stands.
         * The primary entries change only when partitions are dropped. */
        if (n_drop > 0) {
                r = pwrite_full(fd, entries, entries_bytes, get64(hdr, HDR_ENTRIES_LBA) * sector);
                if (r < 0)
                        return r;
        }
        put64(hdr, HDR_ALTERNATE_LBA, last_lba);
        put64(hdr, HDR_LAST_USABLE, last_usable);
        seal(hdr);
        _cleanup_free_ uint8_t *backup = malloc(sector);
        if (!backup)
                return -ENOMEM;
        memcpy(backup, hdr, sector);
        put64(backup, HDR_MY_LBA, last_lba);
        put64(backup, HDR_ALTERNATE_LBA, 1);
        put64(backup, HDR_ENTRIES_LBA, backup_entries_lba);
        seal(backup);
        r = pwrite_full(fd, entries, entry_sectors * sector, backup_entries_lba * sector);
        if (r >= 0)
                r = pwrite_full(fd, backup, sector, last_lba * sector);
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (r >= 0)
                r = pwrite_full(fd, hdr, sector, sector);
        /* The protective MBR covers the whole disk, as far as 32 bits reach. */
        if (r >= 0 && mbr[MBR_ENTRY + 4] == 0xee) {
                put32(mbr, MBR_ENTRY + 12, (uint32_t) MIN(last_lba, UINT64_C(0xffffffff)));
                r = pwrite_full(fd, mbr, sector, 0);
        }
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        return r < 0 ? r : 0;
}
