/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "address.h"
#include "ini.h"
#include "util.h"

int ip_address_parse(const char *s, int *ret_family, uint8_t ret[16]) {
        if (!s)
                return -EINVAL;
        if (inet_pton(AF_INET, s, ret) == 1)
                *ret_family = AF_INET;
        else if (inet_pton(AF_INET6, s, ret) == 1)
                *ret_family = AF_INET6;
        else
                return -EINVAL;
        return 0;
}

bool ip_address_is_valid(const char *s) {
        uint8_t buf[16];
        int family;
        return ip_address_parse(s, &family, buf) >= 0;
}

bool host_is_valid(const char *s) {
        return hostname_is_valid(s) || ip_address_is_valid(s);
}

int socket_address_from_ip(const char *ip, uint16_t port, SocketAddress *ret, socklen_t *ret_len) {
        uint8_t buf[16];
        int family;

        if (ip_address_parse(ip, &family, buf) < 0)
                return -EINVAL;
        *ret = (SocketAddress){};
        if (family == AF_INET) {
                ret->in.sin_family = AF_INET;
                ret->in.sin_port = htons(port);
                memcpy(&ret->in.sin_addr, buf, 4);
                *ret_len = sizeof(ret->in);
        } else {
                ret->in6.sin6_family = AF_INET6;
                ret->in6.sin6_port = htons(port);
                memcpy(&ret->in6.sin6_addr, buf, 16);
                *ret_len = sizeof(ret->in6);
        }
        return 0;
}

int socket_address_ip(const SocketAddress *sa, char *buf, size_t size) {
        const void *a = sa->sa.sa_family == AF_INET    ? (const void *) &sa->in.sin_addr
                        : sa->sa.sa_family == AF_INET6 ? (const void *) &sa->in6.sin6_addr
                                                       : NULL;
        if (!a)
                return -EAFNOSUPPORT;
        return inet_ntop(sa->sa.sa_family, a, buf, (socklen_t) size) ? 0 : -errno;
}

uint16_t socket_address_port(const SocketAddress *sa) {
        return ntohs(sa->sa.sa_family == AF_INET ? sa->in.sin_port : sa->in6.sin6_port);
}

int subnet_parse(const char *s, Subnet *ret) {
        char text[INET6_ADDRSTRLEN];
        const char *slash = strchr(s, '/');
        size_t n = slash ? (size_t) (slash - s) : strlen(s);
        Subnet net = {};
        uint64_t prefix;

        if (n == 0 || n >= sizeof(text))
                return -EINVAL;
        memcpy(text, s, n);
        text[n] = 0;
        if (ip_address_parse(text, &net.family, net.address) < 0)
                return -EINVAL;
        unsigned bits = net.family == AF_INET ? 32 : 128;
        if (!slash)
                prefix = bits;
        else if (parse_uint64(slash + 1, &prefix) < 0 || prefix > bits)
                return -EINVAL;
        net.prefix = (unsigned) prefix;
        *ret = net;
        return 0;
}

bool subnet_contains(const Subnet *s, const char *address) {
        uint8_t a[16];
        int family;

        if (ip_address_parse(address, &family, a) < 0 || family != s->family)
                return false;
        unsigned whole = s->prefix / 8, rest = s->prefix % 8;
        if (memcmp(a, s->address, whole) != 0)
                return false;
        uint8_t mask = (uint8_t) (0xff00 >> rest);
        return rest == 0 || (a[whole] & mask) == (s->address[whole] & mask);
}
