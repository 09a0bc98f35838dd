/* Issue 11: readiness waits on a proxied non-blocking connect.
 *
 * evloop_wait MODE IP PORT WAIT_MS
 *   MODE cpu-epoll | cpu-epoll-dup | cpu-epoll-et-dup | cpu-poll | cpu-select:
 *     connect (non-blocking), then wait up to WAIT_MS for the socket to become writable in
 *     epoll (registered through the same fd, or through a dup of it, level or edge
 *     triggered), poll or select. Prints "events=N wakeups=W cpu_ms=C" (N: reports for the
 *     socket, W: returns of the wait call, C: user+system CPU time of the process).
 *   MODE uring: calls syscall(SYS_io_uring_setup) and prints "uring=RC" (no connect).
 *   MODE samedata: as cpu-epoll, plus a pipe registered with the SAME data as the socket
 *     and made readable before the first wait: prints "pipe_seen_ms=T" (-1: not within
 *     WAIT_MS) and "sock_in=K" (EPOLLIN reports for the socket: must stay 0 while its
 *     handshake runs).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <linux/io_uring.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static double cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000.0 +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000.0;
}

static void die(const char *what)
{
    printf("FAIL: %s: %s\n", what, strerror(errno));
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: evloop_wait MODE IP PORT WAIT_MS\n");
        return 2;
    }
    const char *mode = argv[1];
    if (strcmp(mode, "uring") == 0) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        long fd = syscall(SYS_io_uring_setup, 4, &p);
        printf("uring=%ld\n", fd);
        return 0;
    }
    int wait_ms = atoi(argv[4]);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
    if (inet_pton(AF_INET, argv[2], &sin.sin_addr) != 1)
        die("address");
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s < 0)
        die("socket");
    if (connect(s, (struct sockaddr *)&sin, sizeof sin) == 0) {
        printf("FAIL: connect returned 0 at once\n");
        return 1;
    }
    if (errno != EINPROGRESS)
        die("connect");
    double t0 = now_ms(), c0 = cpu_ms();
    int events = 0, wakeups = 0, sock_in = 0;
    double pipe_seen = -1;
    int is_epoll = strncmp(mode, "cpu-epoll", 9) == 0 || strcmp(mode, "samedata") == 0;
    int ep = -1, p[2] = {-1, -1};
    if (is_epoll) {
        ep = epoll_create1(EPOLL_CLOEXEC);
        int reg = ep;
        if (strstr(mode, "dup"))
            reg = dup(ep); /* mio's Registry: a dup of the Poll's epoll fd */
        struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP, .data.u64 = 42};
        if (strstr(mode, "-et-"))
            ev.events |= EPOLLET;
        if (epoll_ctl(reg, EPOLL_CTL_ADD, s, &ev) != 0)
            die("epoll_ctl socket");
        if (strcmp(mode, "samedata") == 0) {
            if (pipe(p) != 0)
                die("pipe");
            struct epoll_event pe = {.events = EPOLLIN, .data.u64 = 42};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &pe) != 0)
                die("epoll_ctl pipe");
            if (write(p[1], "x", 1) != 1)
                die("write pipe");
        }
    }
    for (;;) {
        int left = (int)(t0 + wait_ms - now_ms());
        if (left <= 0)
            break;
        int n;
        if (is_epoll) {
            struct epoll_event out[8];
            n = epoll_wait(ep, out, 8, left);
            for (int i = 0; i < n; i++) {
                if (p[0] >= 0 && (out[i].events & EPOLLIN) && pipe_seen < 0) {
                    /* The pipe's or the socket's: the socket cannot be readable before its
                     * handshake (silent proxy), so a readable report here is the pipe's. */
                    char c;
                    if (read(p[0], &c, 1) == 1) {
                        pipe_seen = now_ms() - t0;
                        continue;
                    }
                }
                if (out[i].events & EPOLLIN)
                    sock_in++;
                events++;
            }
        } else if (strcmp(mode, "cpu-poll") == 0) {
            struct pollfd pf = {.fd = s, .events = POLLOUT};
            n = poll(&pf, 1, left);
            if (n > 0)
                events++;
        } else if (strcmp(mode, "cpu-select") == 0) {
            fd_set w;
            FD_ZERO(&w);
            FD_SET(s, &w);
            struct timeval tv = {.tv_sec = left / 1000, .tv_usec = (left % 1000) * 1000};
            n = select(s + 1, NULL, &w, NULL, &tv);
            if (n > 0)
                events++;
        } else {
            fprintf(stderr, "unknown mode %s\n", mode);
            return 2;
        }
        if (n < 0 && errno != EINTR)
            die("wait");
        wakeups++;
        if (events > 0 && strcmp(mode, "samedata") != 0)
            break;
        if (strcmp(mode, "samedata") == 0 && pipe_seen >= 0)
            break;
        if (wakeups > 100000)
            break;
    }
    if (strcmp(mode, "samedata") == 0)
        printf("pipe_seen_ms=%.0f sock_in=%d wakeups=%d\n", pipe_seen, sock_in, wakeups);
    else
        printf("events=%d wakeups=%d cpu_ms=%.1f\n", events, wakeups, cpu_ms() - c0);
    return 0;
}
