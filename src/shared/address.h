/* SPDX-License-Identifier: MIT */
/* IP addresses: checked and parsed from text, as socket addresses, and subnets (ADDRESS/PREFIX) with
 * whether an address is in one, which is what the controller allows a node to name as its data address. */
#pragma once

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

typedef union SocketAddress {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
} SocketAddress;

/* An IPv4 or IPv6 address in text: its family (AF_INET, AF_INET6) and its 4 or 16 bytes. -EINVAL if it
 * is not one. */
int ip_address_parse(const char *s, int *ret_family, uint8_t ret[16]);
bool ip_address_is_valid(const char *s);
/* A host name (RFC 1123) or an IP address. */
bool host_is_valid(const char *s);
/* ip and port as a socket address, and its length. */
int socket_address_from_ip(const char *ip, uint16_t port, SocketAddress *ret, socklen_t *ret_len);
/* The address of sa in text (INET6_ADDRSTRLEN bytes at most). */
int socket_address_ip(const SocketAddress *sa, char *buf, size_t size);
uint16_t socket_address_port(const SocketAddress *sa);

typedef struct Subnet {
        int family; /* AF_INET or AF_INET6 */
        uint8_t address[16];
        unsigned prefix;
} Subnet;

/* "10.1.0.0/16", "fd00::/64"; a bare address is itself alone (/32, /128). Host bits may be set. */
int subnet_parse(const char *s, Subnet *ret);
/* Whether address (text) is in s; false for anything that is not an address. */
bool subnet_contains(const Subnet *s, const char *address);
