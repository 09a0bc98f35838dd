/* A client for the supervisor tests, built with `cc -static` (the shim cannot reach it).
 *
 *   sup_client [-n] [-w] [-c COUNT] HOST PORT MESSAGE
 *
 * Connects to HOST:PORT (an IPv4 or IPv6 address), prints "peer ADDR PORT" (getpeername),
 * sends MESSAGE and a newline, reads until a newline, EOF or 5 s and prints what came. -n: non-blocking connect
 * waited for with epoll. -w: before each connect, wait for a line on stdin (the test's go).
 * -c COUNT: COUNT connects in turn. A failed connect prints "connect: NAME" (the errno's
 * name) and exits 3; -a: a SIGALRM every 2 ms (SA_RESTART) throughout; -c goes on with the next one and exits 3 at the end if any failed. */
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
#include <sys/socket.h>
#include <sys/time.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

#ifdef RAW_CONNECT
/* connect(2) through an inline `syscall` instruction (x86-64), no libc wrapper: a preloaded
 * library cannot see it (csrc/raw_client.c builds this file so, dynamically linked). */
static int raw_connect(int fd, const struct sockaddr *a, socklen_t l) {
    long r;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "0"((long)SYS_connect), "D"((long)fd), "S"(a), "d"((long)l)
                     : "rcx", "r11", "memory");
    if (r < 0) { errno = (int)-r; return -1; }
    return 0;
}
#define connect raw_connect
#endif

static const char *errname(int e) {
    switch (e) {
    case ECONNREFUSED: return "ECONNREFUSED";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EACCES: return "EACCES";
    case ENETUNREACH: return "ENETUNREACH";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case EPROTO: return "EPROTO";
    case ECONNRESET: return "ECONNRESET";
    case ENOSYS: return "ENOSYS";
    case EPERM: return "EPERM";
    case EIO: return "EIO";
    case EINPROGRESS: return "EINPROGRESS";
    case EALREADY: return "EALREADY";
    case EISCONN: return "EISCONN";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EINVAL: return "EINVAL";
    default: return "OTHER";
    }
}

static int one(int nonblock, const char *host, int port, const char *msg) {
    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof ss);
    int family = strchr(host, ':') ? AF_INET6 : AF_INET;
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1) { fprintf(stderr, "bad address\n"); exit(2); }
        len = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) { fprintf(stderr, "bad address\n"); exit(2); }
        len = sizeof *a;
    }
    int s = socket(family, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (s < 0) { perror("socket"); exit(2); }
    int rc = connect(s, (struct sockaddr *)&ss, len);
    if (rc < 0 && nonblock && errno == EINPROGRESS) {
        int ep = epoll_create1(0);
        struct epoll_event ev = {.events = EPOLLOUT};
        epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
        int w;
        do w = epoll_wait(ep, &ev, 1, 20000); while (w < 0 && errno == EINTR);
        if (w != 1) { printf("connect: epoll timeout\n"); close(s); return 3; }
        close(ep);
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) { errno = err; rc = -1; } else rc = 0;
    }
    if (rc < 0) {
        printf("connect: %s\n", errname(errno));
        fflush(stdout);
        close(s);
        return 3;
    }
    struct sockaddr_storage peer;
    socklen_t pl = sizeof peer;
    char buf[8192];
    if (getpeername(s, (struct sockaddr *)&peer, &pl) == 0) {
        char a[INET6_ADDRSTRLEN] = "?";
        int p = 0;
        if (peer.ss_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&peer)->sin_addr, a, sizeof a);
            p = ntohs(((struct sockaddr_in *)&peer)->sin_port);
        } else {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&peer)->sin6_addr, a, sizeof a);
            p = ntohs(((struct sockaddr_in6 *)&peer)->sin6_port);
        }
        printf("peer %s %d\n", a, p);
    } else {
        printf("peer error %s\n", errname(errno));
    }
    char line[1024];
    snprintf(line, sizeof line, "%s\n", msg);
    size_t ml = strlen(line);
    if (send(s, line, ml, MSG_NOSIGNAL) != (ssize_t)ml) { printf("send failed\n"); close(s); return 3; }
    size_t got = 0;
    struct pollfd pf = {.fd = s, .events = POLLIN};
    for (;;) {
        int w = poll(&pf, 1, 5000);
        if (w < 0 && errno == EINTR) continue;
        if (w != 1) break;
        ssize_t n = recv(s, buf, sizeof buf, 0);
        if (n < 0 && errno == EAGAIN) continue;
        if (n <= 0) break;
        fwrite(buf, 1, n, stdout);
        got += n;
        if (memchr(buf, '\n', n)) break; /* one line back is enough (echo) */
    }
    (void)got;
    fflush(stdout);
    close(s);
    return 0;
}

static volatile sig_atomic_t alarms;
static void on_alarm(int sig) { (void)sig; alarms++; }

int main(int argc, char **argv) {
    int nonblock = 0, wait_go = 0, count = 1, storm = 0, opt;
    while ((opt = getopt(argc, argv, "nwac:")) != -1) {
        if (opt == 'n') nonblock = 1;
        else if (opt == 'a') storm = 1;
        else if (opt == 'w') wait_go = 1;
        else if (opt == 'c') count = atoi(optarg);
        else return 2;
    }
    if (argc - optind != 3) { fprintf(stderr, "usage: sup_client [-n] [-w] [-c N] HOST PORT MESSAGE\n"); return 2; }
    if (storm) {
        /* A SIGALRM every 2 ms, with SA_RESTART (as Go's runtime signals are). */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_alarm;
        sa.sa_flags = SA_RESTART;
        sigaction(SIGALRM, &sa, NULL);
        struct itimerval it = {{0, 2000}, {0, 2000}};
        setitimer(ITIMER_REAL, &it, NULL);
    }
    int bad = 0;
    for (int i = 0; i < count; i++) {
        if (wait_go) {
            char line[64];
            if (!fgets(line, sizeof line, stdin)) return 4;
        }
        if (one(nonblock, argv[optind], atoi(argv[optind + 1]), argv[optind + 2])) bad = 1;
    }
    return bad ? 3 : 0;
}
