/* SPDX-License-Identifier: MIT */
/* TFTP (RFC 1350, with RFC 2347's option negotiation and the blksize, timeout and tsize options of RFC
 * 2348 and 2349), read only, for firmware and boot loaders that fetch nothing else: among them Debian's
 * Secure Boot chain, whose signed GRUB network image has TFTP and no HTTP. The names it serves:
 *   boot/grub/MAC    the GRUB answer for the machine with that MAC (boot.c), decided by the controller as
 *                    GET /boot/ipxe is;
 *   boot/files/PATH  the file PATH under [Boot] Path=, as GET /boot/files/PATH;
 *   anything else    the file of that name under [Boot] TFTPRoot= (default: Path=), which
 *                    deploy/pxe/setup-tftp fills: shim, GRUB and its grub/grub.cfg, iPXE; also
 *                    served over HTTP as GET /boot/NAME, for UEFI HTTP boot.
 * Each transfer has a socket of its own, connected to the client (RFC 1350's transfer IDs), and one block
 * in flight, sent again after the timeout, TFTP_TRIES times at most. */
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "address.h"
#include "boot.h"
#include "ini.h"
#include "log.h"
#include "tftp.h"
#include "util.h"

enum { TFTP_RRQ = 1, TFTP_WRQ, TFTP_DATA, TFTP_ACK, TFTP_ERROR, TFTP_OACK };
enum { TFTP_EUNDEF = 0, TFTP_ENOTFOUND = 1, TFTP_EACCESS = 2, TFTP_EBADOP = 4 };

#define TFTP_TRIES 5
#define TFTP_TRANSFERS_MAX 256U
#define TFTP_TIMEOUT_DEFAULT_SEC 1U

typedef struct TftpTransfer {
        Bridge *bridge;
        struct TftpTransfer *prev, *next;
        int fd; /* connected to the client */
        sd_event_source *io, *timer;
        sd_bus_slot *slot; /* the controller's answer for boot/grub/MAC, while it is awaited */
        char peer[INET6_ADDRSTRLEN];
        uint16_t peer_port;
        TftpRequest request;
        int file;   /* what is sent: a file, */
        char *data; /* or an answer */
        uint64_t size;
        uint64_t block; /* the last one sent, counted without wrapping; 0: the OACK */
        unsigned tries;
        uint8_t *packet; /* the last one sent, for sending again */
        size_t packet_size;
} TftpTransfer;

static const char *next_string(const uint8_t **p, const uint8_t *end) {
        const uint8_t *nul = memchr(*p, 0, (size_t) (end - *p));
        const char *s = (const char *) *p;
        if (!nul)
                return NULL;
        *p = nul + 1;
        return s;
}

int tftp_request_parse(const uint8_t *packet, size_t size, TftpRequest *ret, const char **ret_error) {
        const uint8_t *p = packet + 2, *end = packet + size;
        const char *name, *mode, *option, *value;

        *ret = (TftpRequest){ .blksize = TFTP_BLKSIZE_DEFAULT, .timeout_sec = TFTP_TIMEOUT_DEFAULT_SEC };
        if (size < 4)
                return *ret_error = "the packet is too short", -EBADMSG;
        ret->opcode = (uint16_t) (packet[0] << 8 | packet[1]);
        if (ret->opcode != TFTP_RRQ)
                return *ret_error =
                               ret->opcode == TFTP_WRQ ? "this server is read-only" : "not a read request",
                       -EOPNOTSUPP;
        name = next_string(&p, end);
        mode = name ? next_string(&p, end) : NULL;
        if (!mode)
                return *ret_error = "the request has no file name or no mode", -EBADMSG;
        if (strcasecmp(mode, "octet") != 0)
                return *ret_error = "only octet mode is served", -EOPNOTSUPP;
        /* Firmware sends some names with a leading slash; all are under the roots. */
        name += strspn(name, "/");
        if (isempty(name) || strlen(name) >= sizeof(ret->name))
                return *ret_error = "the file name is empty or too long", -EBADMSG;
        strcpy(ret->name, name);
        /* Options the server does not know are left out of its OACK (RFC 2347). */
        while (p < end && (option = next_string(&p, end)) && (value = next_string(&p, end))) {
                uint64_t v;
                if (strcasecmp(option, "blksize") == 0 && parse_uint64(value, &v) >= 0 && v >= 8) {
                        ret->blksize = (uint32_t) MIN(v, (uint64_t) TFTP_BLKSIZE_MAX);
                        ret->options |= TFTP_OPTION_BLKSIZE;
                } else if (strcasecmp(option, "timeout") == 0 && parse_uint64(value, &v) >= 0 && v >= 1 &&
                           v <= 255) {
                        ret->timeout_sec = (unsigned) v;
                        ret->options |= TFTP_OPTION_TIMEOUT;
                } else if (strcasecmp(option, "tsize") == 0 && parse_uint64(value, &v) >= 0)
                        ret->options |= TFTP_OPTION_TSIZE;
        }
        return 0;
}

static TftpTransfer *transfer_free(TftpTransfer *t) {
        if (!t)
                return NULL;
        if (t->bridge) {
                if (t->prev)
                        t->prev->next = t->next;
                else
                        t->bridge->transfers = t->next;
                if (t->next)
                        t->next->prev = t->prev;
                t->bridge->n_transfers--;
        }
        sd_event_source_disable_unref(t->io);
        sd_event_source_disable_unref(t->timer);
        sd_bus_slot_unref(t->slot);
        closep(&t->fd);
        closep(&t->file);
        free(t->data);
        free(t->packet);
        free(t);
        return NULL;
}

static int send_packet(TftpTransfer *t, uint8_t *packet, size_t size) {
        free(t->packet);
        t->packet = packet;
        t->packet_size = size;
        t->tries = 0;
        if (send(t->fd, packet, size, 0) < 0 && errno != EAGAIN)
                return -errno;
        return sd_event_source_set_time_relative(t->timer, t->request.timeout_sec * USEC_PER_SEC) < 0 ||
                               sd_event_source_set_enabled(t->timer, SD_EVENT_ONESHOT) < 0
                       ? -ENOMEM
                       : 0;
}

static void send_error(int fd, uint16_t code, const char *message) {
        size_t n = strlen(message);
        _cleanup_free_ uint8_t *packet = malloc(5 + n);
        if (!packet)
                return;
        packet[0] = 0, packet[1] = TFTP_ERROR, packet[2] = (uint8_t) (code >> 8), packet[3] = (uint8_t) code;
        memcpy(packet + 4, message, n + 1);
        (void) send(fd, packet, 5 + n, 0);
}

/* Ends t with an error to the client, which says what went wrong. */
static void transfer_fail(TftpTransfer *t, uint16_t code, const char *message) {
        log_info("TFTP: %s asked for \"%s\": %s.", t->peer, t->request.name, message);
        send_error(t->fd, code, message);
        transfer_free(t);
}

static int send_block(TftpTransfer *t, uint64_t block) {
        uint64_t offset = (block - 1) * t->request.blksize;
        size_t n = (size_t) MIN((uint64_t) t->request.blksize, t->size - MIN(offset, t->size));
        uint8_t *packet = malloc(4 + n);

        if (!packet)
                return -ENOMEM;
        packet[0] = 0, packet[1] = TFTP_DATA, packet[2] = (uint8_t) (block >> 8),
        packet[3] = (uint8_t) block;
        if (t->data)
                memcpy(packet + 4, t->data + offset, n);
        else if (n > 0) {
                ssize_t got = pread(t->file, packet + 4, n, (off_t) offset);
                if (got != (ssize_t) n) {
                        free(packet);
                        return got < 0 ? -errno : -EIO;
                }
        }
        t->block = block;
        return send_packet(t, packet, 4 + n);
}

/* The first packet: an OACK with the options taken, or else the first block. */
static int transfer_begin(TftpTransfer *t) {
        TftpRequest *q = &t->request;
        _cleanup_free_ char *oack = NULL;
        size_t n = 2;

        log_debug("TFTP: sending \"%s\" (%" PRIu64 " bytes) to %s.", q->name, t->size, t->peer);
        if (!q->options)
                return send_block(t, 1);
        /* Opcode, then name\0value\0 pairs. */
        oack = malloc(128);
        if (!oack)
                return -ENOMEM;
        oack[0] = 0, oack[1] = TFTP_OACK;
        if (q->options & TFTP_OPTION_BLKSIZE)
                n += (size_t) sprintf(oack + n, "blksize%c%" PRIu32, 0, q->blksize) + 1;
        if (q->options & TFTP_OPTION_TIMEOUT)
                n += (size_t) sprintf(oack + n, "timeout%c%u", 0, q->timeout_sec) + 1;
        if (q->options & TFTP_OPTION_TSIZE)
                n += (size_t) sprintf(oack + n, "tsize%c%" PRIu64, 0, t->size) + 1;
        t->block = 0;
        return send_packet(t, (uint8_t *) TAKE_PTR(oack), n);
}

static int on_transfer_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        TftpTransfer *t = userdata;
        uint8_t packet[516];
        ssize_t n;
        int r;
        (void) s, (void) revents;

        n = recv(fd, packet, sizeof(packet), 0);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return 0;
                log_info("TFTP: sending \"%s\" to %s failed: %s.", t->request.name, t->peer,
                         strerror(errno));
                transfer_free(t);
                return 0;
        }
        if (n >= 4 && packet[1] == TFTP_ERROR && packet[0] == 0) {
                log_info("TFTP: %s stopped the transfer of \"%s\": %.*s", t->peer, t->request.name,
                         (int) n - 4, (const char *) packet + 4);
                transfer_free(t);
                return 0;
        }
        /* Only the ACK of the block in flight moves on; another one (late, or twice) is not answered,
         * lest every block go twice from then on (the Sorcerer's Apprentice bug). */
        if (n < 4 || packet[0] != 0 || packet[1] != TFTP_ACK ||
            (uint16_t) (packet[2] << 8 | packet[3]) != (uint16_t) t->block)
                return 0;
        if (t->block > 0 && t->block * t->request.blksize > t->size) {
                log_info("TFTP: sent \"%s\" (%" PRIu64 " bytes) to %s.", t->request.name, t->size, t->peer);
                transfer_free(t);
                return 0;
        }
        r = send_block(t, t->block + 1);
        if (r < 0) {
                log_warning_errno(r, "TFTP: failed to send \"%s\" to %s: %m", t->request.name, t->peer);
                transfer_fail(t, TFTP_EUNDEF, "the server failed to read the file");
        }
        return 0;
}

static int on_transfer_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        TftpTransfer *t = userdata;
        (void) usec;

        if (++t->tries >= TFTP_TRIES) {
                log_info("TFTP: %s stopped answering while \"%s\" was sent to it; dropped.", t->peer,
                         t->request.name);
                transfer_free(t);
                return 0;
        }
        (void) send(t->fd, t->packet, t->packet_size, 0);
        (void) sd_event_source_set_time_relative(s, t->request.timeout_sec * USEC_PER_SEC);
        return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

static int on_grub_answer(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        TftpTransfer *t = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);
        const char *mac = t->request.name + strlen("boot/grub/"), *reason = NULL;
        _cleanup_(boot_reply_done) BootReply a = {};
        int r;
        (void) ret_error;

        t->slot = sd_bus_slot_unref(t->slot);
        if (e) {
                transfer_fail(t, TFTP_EUNDEF, e->message ?: e->name);
                return 0;
        }
        r = boot_reply_read(t->bridge, m, mac, t->peer, &a, &reason);
        if (r >= 0) {
                t->data = boot_grub_script(t->bridge, &a, mac);
                r = t->data ? 0 : -errno;
        }
        if (r >= 0) {
                t->size = strlen(t->data);
                r = transfer_begin(t);
        }
        if (r < 0) {
                if (!reason)
                        log_error_errno(r, "TFTP: failed to answer %s for %s: %m", t->request.name, t->peer);
                transfer_fail(t, TFTP_EUNDEF, reason ?: "the server failed to make the answer");
        }
        return 0;
}

/* What t asks for: the answer for its MAC (asked for, sent when it comes) or a file. */
static int transfer_start(TftpTransfer *t) {
        Bridge *b = t->bridge;
        const char *name = t->request.name, *path;
        int r;

        if ((path = startswith(name, "boot/grub/")))
                return boot_ask(b, "grub", path, NULL, t->peer, &t->slot, on_grub_answer, t);
        t->file = boot_file_open(b, name, "TFTP");
        if (t->file < 0) {
                transfer_fail(t, TFTP_ENOTFOUND, "no such file");
                return 0;
        }
        struct stat st;
        if (fstat(t->file, &st) < 0)
                return -errno;
        t->size = (uint64_t) st.st_size;
        r = transfer_begin(t);
        return r;
}

/* A socket of the transfer's own, from the address the request came to (local), to the client's. */
static int transfer_socket(const SocketAddress *local, const SocketAddress *peer) {
        SocketAddress from = *local;
        _cleanup_close_ int fd = socket(peer->sa.sa_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

        if (fd < 0)
                return -errno;
        if (from.sa.sa_family == AF_INET)
                from.in.sin_port = 0;
        else
                from.in6.sin6_port = 0;
        if (bind(fd, &from.sa, from.sa.sa_family == AF_INET ? sizeof(from.in) : sizeof(from.in6)) < 0 ||
            connect(fd, &peer->sa, peer->sa.sa_family == AF_INET ? sizeof(peer->in) : sizeof(peer->in6)) < 0)
                return -errno;
        return TAKE_FD(fd);
}

/* The address a datagram came to, from its IP_PKTINFO or IPV6_PKTINFO. */
static void local_address(struct msghdr *msg, SocketAddress *ret) {
        for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c))
                if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
                        const struct in_pktinfo *i = (const struct in_pktinfo *) CMSG_DATA(c);
                        ret->in = (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr = i->ipi_addr };
                } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
                        const struct in6_pktinfo *i = (const struct in6_pktinfo *) CMSG_DATA(c);
                        ret->in6 =
                                (struct sockaddr_in6){ .sin6_family = AF_INET6, .sin6_addr = i->ipi6_addr };
                }
}

/* The transfer that answers the request for name from ip and port, if one does still. */
static TftpTransfer *transfer_find(Bridge *b, const char *ip, uint16_t port, const char *name) {
        for (TftpTransfer *t = b->transfers; t; t = t->next)
                if (t->peer_port == port && streq(t->peer, ip) && streq(t->request.name, name))
                        return t;
        return NULL;
}

static int on_request(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Bridge *b = userdata;
        uint8_t packet[1024];
        SocketAddress peer = {}, local = {};
        union {
                struct cmsghdr header;
                uint8_t buffer[CMSG_SPACE(sizeof(struct in6_pktinfo))];
        } control;
        struct iovec iov = { .iov_base = packet, .iov_len = sizeof(packet) };
        struct msghdr msg = { .msg_name = &peer,
                              .msg_namelen = sizeof(peer),
                              .msg_iov = &iov,
                              .msg_iovlen = 1,
                              .msg_control = &control,
                              .msg_controllen = sizeof(control) };
        TftpRequest request;
        const char *error = NULL;
        ssize_t n;
        int r;
        (void) s, (void) revents;

        n = recvmsg(fd, &msg, MSG_DONTWAIT);
        if (n < 0)
                return 0;
        local.sa.sa_family = peer.sa.sa_family;
        local_address(&msg, &local);
        _cleanup_close_ int tfd = transfer_socket(&local, &peer);
        if (tfd < 0)
                return log_warning_errno(tfd, "TFTP: cannot answer a request: %m"), 0;
        r = tftp_request_parse(packet, (size_t) n, &request, &error);
        if (r == -EOPNOTSUPP && request.opcode != TFTP_RRQ && request.opcode != TFTP_WRQ)
                return 0; /* a stray DATA, ACK or ERROR: nothing to answer */
        if (r < 0)
                return send_error(tfd, r == -EOPNOTSUPP ? TFTP_EBADOP : TFTP_EUNDEF, error), 0;
        char ip[INET6_ADDRSTRLEN] = "";
        uint16_t port = socket_address_port(&peer);
        (void) socket_address_ip(&peer, ip, sizeof(ip));
        if (transfer_find(b, ip, port, request.name))
                /* The client asked again before the first answer came (GRUB does when the controller's
                 * answer takes long): that transfer answers it. Another would ask the controller again, for
                 * an answer with a newer token than the one the client takes. */
                return 0;
        if (b->n_transfers >= TFTP_TRANSFERS_MAX)
                return send_error(tfd, TFTP_EUNDEF, "too many transfers at once; try again"), 0;

        TftpTransfer *t = calloc(1, sizeof(TftpTransfer));
        if (!t)
                return log_oom(), 0;
        t->fd = TAKE_FD(tfd);
        t->file = -EBADF;
        t->request = request;
        strcpy(t->peer, ip);
        t->peer_port = port;
        if (sd_event_add_io(b->event, &t->io, t->fd, EPOLLIN, on_transfer_io, t) < 0 ||
            sd_event_add_time_relative(b->event, &t->timer, CLOCK_MONOTONIC,
                                       request.timeout_sec * USEC_PER_SEC, 0, on_transfer_timer, t) < 0) {
                transfer_free(t);
                return log_oom(), 0;
        }
        (void) sd_event_source_set_enabled(t->timer, SD_EVENT_OFF);
        t->bridge = b;
        t->next = b->transfers;
        if (b->transfers)
                b->transfers->prev = t;
        b->transfers = t;
        b->n_transfers++;
        r = transfer_start(t);
        if (r < 0) {
                log_error_errno(r, "TFTP: failed to start sending \"%s\" to %s: %m", request.name, t->peer);
                transfer_fail(t, TFTP_EUNDEF, "the server cannot send it now");
        }
        return 0;
}

int tftp_start(Bridge *b) {
        SocketAddress sa = {};
        socklen_t len = sizeof(sa);

        if (b->tftp_fd < 0)
                return 0;
        if (getsockname(b->tftp_fd, &sa.sa, &len) < 0)
                return log_error_errno(errno, "Failed to read the TFTP socket's address: %m");
        b->tftp_port = socket_address_port(&sa);
        if (sa.sa.sa_family == AF_INET6)
                (void) setsockopt(b->tftp_fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &(int){ 1 }, sizeof(int));
        if (setsockopt(b->tftp_fd, IPPROTO_IP, IP_PKTINFO, &(int){ 1 }, sizeof(int)) < 0 &&
            sa.sa.sa_family == AF_INET)
                return log_error_errno(errno, "Failed to ask for the TFTP requests' addresses: %m");
        if (sd_event_add_io(b->event, &b->tftp_source, b->tftp_fd, EPOLLIN, on_request, b) < 0)
                return log_oom();
        log_info("Serving TFTP on port %u.", b->tftp_port);
        return 0;
}

void tftp_stop(Bridge *b) {
        while (b->transfers)
                transfer_free(b->transfers);
        b->tftp_source = sd_event_source_disable_unref(b->tftp_source);
        closep(&b->tftp_fd);
        b->tftp_fd = -EBADF;
}
