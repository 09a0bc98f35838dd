/* Shared by the hard-case C helpers (tests/integration/csrc/hard_*.c): address parsing,
 * a bounded echo round trip, and a peer check. Every failure prints "FAIL: ..." and exits 1. */
#ifndef HARD_COMMON_H
#define HARD_COMMON_H
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define IO_TIMEOUT_MS 10000

static __attribute__((unused)) void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("FAIL: ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    fflush(stdout);
    exit(1);
}

static __attribute__((unused)) double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* "203.0.113.10" or "2001:db8::1" (optionally "fe80::1%lo") + port -> sockaddr. */
static __attribute__((unused)) socklen_t make_addr(const char *ip, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        return sizeof *a4;
    }
    char buf[128];
    snprintf(buf, sizeof buf, "%s", ip);
    char *pct = strchr(buf, '%');
    if (pct) {
        *pct = 0;
        a6->sin6_scope_id = if_nametoindex(pct + 1);
    }
    if (inet_pton(AF_INET6, buf, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        return sizeof *a6;
    }
    fail("bad address %s", ip);
    return 0;
}

static __attribute__((unused)) void addr_str(const struct sockaddr_storage *ss, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        port = ntohs(a->sin_port);
        snprintf(out, n, "%s:%d", ip, port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        port = ntohs(a->sin6_port);
        snprintf(out, n, "[%s]:%d", ip, port);
    } else {
        snprintf(out, n, "family-%d", ss->ss_family);
    }
}

/* Waits for `ev` on fd; 0 on time-out. */
static __attribute__((unused)) int wait_fd(int fd, short ev, int ms)
{
    struct pollfd p = {.fd = fd, .events = ev};
    int r;
    do {
        r = poll(&p, 1, ms);
    } while (r < 0 && errno == EINTR);
    return r;
}

/* Sends msg and reads the same bytes back, bounded in time (works on non-blocking fds too).
 * Returns 0, or an errno-ish code with a message in err. */
static __attribute__((unused)) int echo_once(int fd, const char *msg, char *err, size_t errn)
{
    size_t len = strlen(msg), off = 0;
    double end = now_ms() + IO_TIMEOUT_MS;
    while (off < len) {
        ssize_t n = send(fd, msg + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (now_ms() > end || wait_fd(fd, POLLOUT, (int)(end - now_ms()) + 1) < 0) {
                snprintf(err, errn, "send timed out");
                return ETIMEDOUT;
            }
            continue;
        }
        snprintf(err, errn, "send: %s", strerror(errno));
        return errno ? errno : EIO;
    }
    char buf[512];
    off = 0;
    while (off < len) {
        int left = (int)(end - now_ms());
        if (left <= 0 || wait_fd(fd, POLLIN, left) == 0) {
            snprintf(err, errn, "recv timed out after %zu of %zu bytes", off, len);
            return ETIMEDOUT;
        }
        ssize_t n = recv(fd, buf + off, len - off, MSG_DONTWAIT);
        if (n > 0) {
            off += n;
        } else if (n == 0) {
            snprintf(err, errn, "peer closed after %zu of %zu bytes", off, len);
            return ECONNRESET;
        } else if (errno != EAGAIN && errno != EINTR) {
            snprintf(err, errn, "recv: %s", strerror(errno));
            return errno;
        }
    }
    if (memcmp(buf, msg, len) != 0) {
        snprintf(err, errn, "echo mismatch");
        return EPROTO;
    }
    return 0;
}

static __attribute__((unused)) void must_echo(int fd, const char *msg, const char *what)
{
    char err[200];
    if (echo_once(fd, msg, err, sizeof err) != 0)
        fail("%s: echo on fd %d: %s", what, fd, err);
}

/* getpeername(fd) must be ip:port. */
static __attribute__((unused)) void must_peer(int fd, const char *ip, int port, const char *what)
{
    struct sockaddr_storage want, got;
    make_addr(ip, port, &want);
    socklen_t len = sizeof got;
    memset(&got, 0, sizeof got);
    if (getpeername(fd, (struct sockaddr *)&got, &len) != 0)
        fail("%s: getpeername(%d): %s", what, fd, strerror(errno));
    char a[80], b[80];
    addr_str(&want, a, sizeof a);
    addr_str(&got, b, sizeof b);
    if (strcmp(a, b) != 0)
        fail("%s: getpeername(%d) = %s, expected %s", what, fd, b, a);
}

/* getpeername(fd) must fail with ENOTCONN (a fresh, unconnected socket). */
static __attribute__((unused)) void must_be_unconnected(int fd, const char *what)
{
    struct sockaddr_storage got;
    socklen_t len = sizeof got;
    if (getpeername(fd, (struct sockaddr *)&got, &len) == 0) {
        char b[80];
        addr_str(&got, b, sizeof b);
        fail("%s: getpeername(%d) = %s on an unconnected socket (stale state)", what, fd, b);
    }
    if (errno != ENOTCONN)
        fail("%s: getpeername(%d) failed with %s, expected ENOTCONN", what, fd, strerror(errno));
}

/* A blocking TCP connect to ip:port with send/recv time-outs; exits on failure. */
static __attribute__((unused)) int tcp_connect(const char *ip, int port, const char *what)
{
    struct sockaddr_storage ss;
    socklen_t len = make_addr(ip, port, &ss);
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    if (fd < 0)
        fail("%s: socket: %s", what, strerror(errno));
    struct timeval tv = {.tv_sec = IO_TIMEOUT_MS / 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&ss, len) != 0)
        fail("%s: connect to %s:%d: %s", what, ip, port, strerror(errno));
    return fd;
}

#endif
