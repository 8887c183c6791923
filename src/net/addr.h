/*
 * addr.h - "HOST:PORT" strings <-> socket addresses.
 *
 * The one place that knows the textual address forms the daemon accepts:
 * "127.0.0.1:11211", "[::1]:11211", "localhost:0", "*:11211" (any IPv4
 * address) and "[::]:11211".  Port 0 asks the kernel for a free port.
 * Called by the server when it binds listeners and by whoever prints a
 * bound address (logs, the daemon's ready file).
 */
#ifndef CLOISTER_NET_ADDR_H
#define CLOISTER_NET_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

/* Longest text net_addr_format() produces, with its NUL:
 * "[" INET6_ADDRSTRLEN "]:" "65535". */
#define NET_ADDR_STRLEN 56

/*
 * Parses "HOST:PORT" into *out (*outlen set to its length).  HOST is an
 * IPv4 address, a bracketed IPv6 address, "*" (0.0.0.0) or a host name
 * (resolved; the first address wins).  Returns CL_OK or CL_EINVAL
 * (malformed, port out of range, or the name does not resolve).
 */
int net_addr_parse(const char *text, struct sockaddr_storage *out, socklen_t *outlen)
    __attribute__((warn_unused_result));

/* Writes "a.b.c.d:port" or "[v6]:port" into buf (cap >= NET_ADDR_STRLEN
 * is always enough).  Returns buf; "?" for an unknown family. */
char *net_addr_format(const struct sockaddr *sa, char *buf, size_t cap);

#endif
