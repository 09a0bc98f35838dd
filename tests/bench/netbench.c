/* netbench: the load generator, servers and micro-benchmarks of scripts/bench.
 *
 * Built by scripts/bench at run time (cc -O2 -pthread). One binary, one job per sub-command:
 *
 *   netbench server --echo IP:PORT --source IP:PORT --udp IP:PORT
 *       TCP echo (epoll), TCP source (the client sends an 8-byte big-endian count, the server
 *       sends that many bytes and closes), UDP echo (the reply is the datagram followed by
 *       " src=IP:PORT", the sender address the server saw).
 *   netbench conn  TARGET [SOCKS] [--threads T] --count N --secs S
 *       connect + 1-byte echo + close, in a loop bounded by count and time; prints ok/err/rate
 *       and the process's CPU time (user, system) and context switches (getrusage).
 *   netbench rtt   TARGET [SOCKS] --count N
 *       time from connect() to the first response byte, one line per connection (microseconds).
 *   netbench bulk  TARGET [SOCKS] --bytes B
 *       receives B bytes from the source server; prints MB/s (time from the request on).
 *   netbench udp   --addr IP:PORT [--socks IP:PORT] --count N --secs S
 *       UDP ping-pong (one datagram out, its echo back); with --socks it does the SOCKS5 UDP
 *       ASSOCIATE itself. Reports whether the echo server saw our own address (sent direct).
 *   netbench hook  --op unix_connect|udp_sendto|gai_numeric|pipe_rw --count N --secs S [--reps R]
 *       ns per call of a call the shim must pass straight through: R loops of S/R seconds each
 *       (at most N calls in all), the median loop reported.
 *   netbench soak  TARGET [SOCKS] --count N --warmup W --secs S [--settle T]
 *       W connects (connect + 1-byte echo + close), then N more, in one process and in
 *       sequence; prints the process's own VmRSS and RssAnon (/proc/self/status) and number of
 *       open fds (/proc/self/fd) before the first connect, after the W and after all: what a
 *       long-lived program keeps per connection. Stops at the first failed connection or after
 *       S seconds, and then prints the same figures as they were there, with an error line.
 *       With --settle: then T seconds idle and one more connect, and the figures again (what is
 *       still held once the loop is over, beyond anything released a while after it).
 *   netbench rss -- PROGRAM ARGS...
 *       fork() + execvp() + wait4(): prints the child's peak RSS (ru_maxrss, KiB). fork, not
 *       vfork/posix_spawn: the peak is carried across exec, so a vfork child would report its
 *       parent's memory; this process is small.
 *
 *   TARGET: --addr IP:PORT (connect to the address) or --name NAME:PORT (getaddrinfo on NAME, or
 *           with --socks the name goes to the proxy: no local look-up at all).
 *   SOCKS:  --socks IP:PORT [--user U --pass P]: the minimal hand-written SOCKS5 client (the
 *           floor): plain connect to the proxy, greeting, [auth], request, replies read exactly.
 *
 * Every loop is bounded in count and in time. Output is key=value lines for scripts/bench.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
    printf("error=%s: %s\n", what, strerror(errno));
    fflush(stdout);
    exit(1);
}

static void usage(void) {
    fprintf(stderr, "usage: see the comment at the top of tests/bench/netbench.c\n");
    exit(2);
}

/* "IP:PORT" or "[IPv6]:PORT" into a sockaddr. */
static int parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len) {
    char host[128];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) return -1;
    memcpy(host, s, colon - s);
    host[colon - s] = 0;
    int port = atoi(colon + 1);
    memset(ss, 0, sizeof *ss);
    char *h = host;
    if (h[0] == '[') {
        h++;
        h[strlen(h) - 1] = 0;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, h, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        *len = sizeof *a4;
        return 0;
    }
    if (inet_pton(AF_INET6, h, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        *len = sizeof *a6;
        return 0;
    }
    return -1;
}

static int readn(int fd, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = ECONNRESET;
            return -1;
        }
        got += r;
    }
    return 0;
}

static int writen(int fd, const void *buf, size_t n) {
    size_t put = 0;
    while (put < n) {
        ssize_t r = write(fd, (const char *)buf + put, n - put);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        put += r;
    }
    return 0;
}

/* ---- client configuration ------------------------------------------------------------ */

struct cfg {
    int have_addr;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char name[256];
    char port[8];
    int socks;
    struct sockaddr_storage proxy;
    socklen_t proxylen;
    const char *user, *pass;
    int threads;
    long count;
    double secs;
    long long bytes;
    const char *op;
    int reps;
    long warmup;
    double settle;
};

static void parse_client(int argc, char **argv, struct cfg *c) {
    memset(c, 0, sizeof *c);
    c->threads = 1;
    c->count = 1000;
    c->secs = 1.0;
    c->reps = 1;
    for (int i = 2; i < argc; i++) {
        const char *k = argv[i];
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(k, "--addr")) {
            if (parse_addr(v, &c->addr, &c->addrlen)) usage();
            c->have_addr = 1;
        } else if (!strcmp(k, "--name")) {
            const char *colon = strrchr(v, ':');
            if (!colon || (size_t)(colon - v) >= sizeof c->name) usage();
            memcpy(c->name, v, colon - v);
            c->name[colon - v] = 0;
            snprintf(c->port, sizeof c->port, "%s", colon + 1);
        } else if (!strcmp(k, "--socks")) {
            if (parse_addr(v, &c->proxy, &c->proxylen)) usage();
            c->socks = 1;
        } else if (!strcmp(k, "--user")) {
            c->user = v;
        } else if (!strcmp(k, "--pass")) {
            c->pass = v;
        } else if (!strcmp(k, "--threads")) {
            c->threads = atoi(v);
        } else if (!strcmp(k, "--count")) {
            c->count = atol(v);
        } else if (!strcmp(k, "--secs")) {
            c->secs = atof(v);
        } else if (!strcmp(k, "--bytes")) {
            c->bytes = atoll(v);
        } else if (!strcmp(k, "--op")) {
            c->op = v;
        } else if (!strcmp(k, "--reps")) {
            c->reps = atoi(v);
        } else if (!strcmp(k, "--warmup")) {
            c->warmup = atol(v);
        } else if (!strcmp(k, "--settle")) {
            c->settle = atof(v);
        } else {
            usage();
        }
    }
    if (c->threads < 1 || c->threads > 64 || c->count < 1 || c->secs <= 0 || c->reps < 1 || c->reps > 100 ||
        c->warmup < 0 || c->settle < 0 || c->settle > 60)
        usage();
}

/* The minimal SOCKS5 client: one write per step, replies read exactly. */
static int socks5_connect(const struct cfg *c, int *fdp) {
    int fd = socket(c->proxy.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    *fdp = fd;
    if (connect(fd, (const struct sockaddr *)&c->proxy, c->proxylen)) return -1;
    unsigned char b[600];
    int auth = c->user != NULL;
    unsigned char greet[3] = {5, 1, auth ? 2 : 0};
    if (writen(fd, greet, 3) || readn(fd, b, 2)) return -1;
    if (b[0] != 5 || b[1] != greet[2]) {
        errno = EPROTO;
        return -1;
    }
    if (auth) {
        size_t ul = strlen(c->user), pl = strlen(c->pass), n = 0;
        b[n++] = 1;
        b[n++] = ul;
        memcpy(b + n, c->user, ul);
        n += ul;
        b[n++] = pl;
        memcpy(b + n, c->pass, pl);
        n += pl;
        if (writen(fd, b, n) || readn(fd, b, 2)) return -1;
        if (b[1] != 0) {
            errno = EACCES;
            return -1;
        }
    }
    size_t n = 0;
    b[n++] = 5;
    b[n++] = 1;
    b[n++] = 0;
    if (c->have_addr && c->addr.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)&c->addr;
        b[n++] = 1;
        memcpy(b + n, &a->sin_addr, 4);
        n += 4;
        memcpy(b + n, &a->sin_port, 2);
        n += 2;
    } else if (c->have_addr) {
        const struct sockaddr_in6 *a = (const void *)&c->addr;
        b[n++] = 4;
        memcpy(b + n, &a->sin6_addr, 16);
        n += 16;
        memcpy(b + n, &a->sin6_port, 2);
        n += 2;
    } else {
        size_t l = strlen(c->name);
        b[n++] = 3;
        b[n++] = l;
        memcpy(b + n, c->name, l);
        n += l;
        uint16_t p = htons(atoi(c->port));
        memcpy(b + n, &p, 2);
        n += 2;
    }
    if (writen(fd, b, n) || readn(fd, b, 4)) return -1;
    if (b[0] != 5 || b[1] != 0) {
        errno = ECONNREFUSED;
        return -1;
    }
    size_t rest = b[3] == 1 ? 6 : b[3] == 4 ? 18 : 0;
    if (b[3] == 3) {
        if (readn(fd, b, 1)) return -1;
        rest = b[0] + 2;
    }
    if (rest == 0 || readn(fd, b, rest)) {
        errno = EPROTO;
        return -1;
    }
    return 0;
}

/* A connected TCP socket to the target: plainly (the shim or proxychains may take over), or
 * through the minimal SOCKS5 client. Returns 0 and the fd in *fdp (also on failure, -1 if none). */
static int open_target(const struct cfg *c, int *fdp) {
    *fdp = -1;
    if (c->socks) return socks5_connect(c, fdp);
    if (c->have_addr) {
        int fd = socket(c->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return -1;
        *fdp = fd;
        return connect(fd, (const struct sockaddr *)&c->addr, c->addrlen);
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(c->name, c->port, &hints, &res);
    if (rc) {
        errno = EHOSTUNREACH;
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(res);
        return -1;
    }
    *fdp = fd;
    rc = connect(fd, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return rc;
}

static int echo_once(int fd) {
    char x = 'x';
    if (writen(fd, &x, 1) || readn(fd, &x, 1)) return -1;
    return 0;
}

/* ---- conn ------------------------------------------------------------------------------ */

struct worker {
    const struct cfg *c;
    double deadline;
    long quota, ok, err;
    int last_errno;
    pthread_t th;
};

static void *conn_worker(void *p) {
    struct worker *w = p;
    for (long i = 0; i < w->quota; i++) {
        if ((i & 7) == 0 && now() > w->deadline) break;
        int fd;
        int rc = open_target(w->c, &fd);
        if (rc == 0) rc = echo_once(fd);
        if (rc) {
            w->err++;
            w->last_errno = errno;
        } else {
            w->ok++;
        }
        if (fd >= 0) close(fd);
        if (w->err > 20 && w->err > w->ok) break;
    }
    return NULL;
}

static int cmd_conn(const struct cfg *c) {
    struct worker w[64];
    double t0 = now();
    for (int i = 0; i < c->threads; i++) {
        w[i] = (struct worker){.c = c, .deadline = t0 + c->secs,
                               .quota = (c->count + c->threads - 1) / c->threads};
        if (pthread_create(&w[i].th, NULL, conn_worker, &w[i])) die("pthread_create");
    }
    long ok = 0, err = 0;
    int last = 0;
    for (int i = 0; i < c->threads; i++) {
        pthread_join(w[i].th, NULL);
        ok += w[i].ok;
        err += w[i].err;
        if (w[i].err) last = w[i].last_errno;
    }
    double dt = now() - t0;
    printf("ok=%ld\nerr=%ld\nsecs=%.6f\nrate=%.3f\n", ok, err, dt, ok / dt);
    /* The process's CPU time and context switches so far (its threads', and what ran in it
     * before an exec: scripts/bench takes the difference of two counts). */
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        printf("cpu_user_us=%ld\ncpu_sys_us=%ld\ncsw=%ld\n",
               ru.ru_utime.tv_sec * 1000000L + ru.ru_utime.tv_usec,
               ru.ru_stime.tv_sec * 1000000L + ru.ru_stime.tv_usec, ru.ru_nvcsw + ru.ru_nivcsw);
    if (err) printf("error=%s\n", strerror(last));
    return err ? 1 : 0;
}

/* ---- rtt ------------------------------------------------------------------------------- */

static int cmd_rtt(const struct cfg *c) {
    double deadline = now() + c->secs;
    for (long i = 0; i < c->count && now() < deadline; i++) {
        double t0 = now();
        int fd;
        int rc = open_target(c, &fd);
        if (rc == 0) rc = echo_once(fd);
        double t1 = now();
        if (rc) {
            printf("error=%s\n", strerror(errno));
            return 1;
        }
        close(fd);
        printf("us=%.1f\n", (t1 - t0) * 1e6);
    }
    return 0;
}

/* ---- bulk ------------------------------------------------------------------------------ */

static int cmd_bulk(const struct cfg *c) {
    int fd;
    if (open_target(c, &fd)) die("connect");
    static char buf[1 << 18];
    uint64_t want = (uint64_t)c->bytes;
    unsigned char be[8];
    for (int i = 0; i < 8; i++) be[i] = (want >> (56 - 8 * i)) & 0xff;
    double t0 = now();
    if (writen(fd, be, 8)) die("write");
    uint64_t got = 0;
    while (got < want) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = ECONNRESET;
            die("read");
        }
        got += r;
        if (now() - t0 > c->secs) {
            errno = ETIMEDOUT;
            die("bulk");
        }
    }
    double dt = now() - t0;
    close(fd);
    printf("bytes=%llu\nsecs=%.6f\nmbps=%.3f\n", (unsigned long long)got, dt, got / dt / 1e6);
    return 0;
}

/* ---- udp ------------------------------------------------------------------------------- */

static void fmt_addr(const struct sockaddr_storage *ss, char *out, size_t n) {
    char h[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)ss;
        inet_ntop(AF_INET, &a->sin_addr, h, sizeof h);
        port = ntohs(a->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, h, sizeof h);
        port = ntohs(a->sin6_port);
    }
    snprintf(out, n, "%s:%d", h, port);
}

static int cmd_udp(const struct cfg *c) {
    if (!c->have_addr || c->addr.ss_family != AF_INET) usage();
    int ctrl = -1;
    struct sockaddr_storage relay;
    socklen_t relaylen = 0;
    int us = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (us < 0) die("socket");
    struct sockaddr_in any = {.sin_family = AF_INET};
    if (bind(us, (struct sockaddr *)&any, sizeof any)) die("bind");
    if (c->socks) {
        /* UDP ASSOCIATE on a TCP control connection, then datagrams to the relay with the
         * SOCKS5 UDP header. */
        ctrl = socket(c->proxy.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (ctrl < 0 || connect(ctrl, (struct sockaddr *)&c->proxy, c->proxylen)) die("connect proxy");
        unsigned char b[32] = {5, 1, 0};
        if (writen(ctrl, b, 3) || readn(ctrl, b, 2) || b[1] != 0) die("greeting");
        unsigned char req[10] = {5, 3, 0, 1, 0, 0, 0, 0, 0, 0};
        if (writen(ctrl, req, 10) || readn(ctrl, b, 4)) die("udp associate");
        if (b[1] != 0 || b[3] != 1) {
            errno = ECONNREFUSED;
            die("udp associate reply");
        }
        if (readn(ctrl, b + 4, 6)) die("udp associate reply");
        struct sockaddr_in *r = (struct sockaddr_in *)&relay;
        memset(&relay, 0, sizeof relay);
        r->sin_family = AF_INET;
        memcpy(&r->sin_addr, b + 4, 4);
        memcpy(&r->sin_port, b + 8, 2);
        if (r->sin_addr.s_addr == 0) r->sin_addr = ((struct sockaddr_in *)&c->proxy)->sin_addr;
        relaylen = sizeof *r;
    }
    const struct sockaddr_in *dst = (const void *)&c->addr;
    unsigned char out[64], in[512];
    size_t hdr = 0;
    if (c->socks) {
        out[0] = 0, out[1] = 0, out[2] = 0, out[3] = 1;
        memcpy(out + 4, &dst->sin_addr, 4);
        memcpy(out + 8, &dst->sin_port, 2);
        hdr = 10;
    }
    memcpy(out + hdr, "ping", 4);
    size_t outlen = hdr + 4;
    long ok = 0, lost = 0;
    int direct = -1;
    double t0 = now(), deadline = t0 + c->secs;
    for (long i = 0; i < c->count && now() < deadline; i++) {
        ssize_t s = c->socks ? sendto(us, out, outlen, 0, (struct sockaddr *)&relay, relaylen)
                             : sendto(us, out, outlen, 0, (const struct sockaddr *)dst, sizeof *dst);
        if (s < 0) {
            printf("error=sendto: %s\n", strerror(errno));
            return 1;
        }
        struct pollfd p = {.fd = us, .events = POLLIN};
        int pr = poll(&p, 1, 500);
        if (pr <= 0) {
            if (++lost > 10 && lost > ok) {
                printf("error=no echo (%ld datagrams lost)\n", lost);
                return 1;
            }
            continue;
        }
        ssize_t r = recv(us, in, sizeof in - 1, 0);
        if (r < 0) {
            printf("error=recv: %s\n", strerror(errno));
            return 1;
        }
        in[r] = 0;
        ok++;
        if (direct < 0) {
            /* Did the echo server see our own socket as the sender? Then the datagram went
             * straight to it, not through a proxy's relay. */
            struct sockaddr_storage me;
            socklen_t ml = sizeof me;
            char mine[80], *src = strstr((char *)in + (c->socks ? hdr : 0), " src=");
            getsockname(us, (struct sockaddr *)&me, &ml);
            fmt_addr(&me, mine, sizeof mine);
            const char *port = strrchr(mine, ':');
            const char *sport = src ? strrchr(src, ':') : NULL;
            direct = (sport && port && !strcmp(port, sport)) ? 1 : 0;
            if (src) printf("seen_as=%s\nlocal=%s\n", src + 5, mine);
        }
    }
    double dt = now() - t0;
    printf("ok=%ld\nlost=%ld\nsecs=%.6f\nrate=%.3f\ndirect=%d\n", ok, lost, dt, ok / dt, direct);
    if (ctrl >= 0) close(ctrl);
    return 0;
}

/* ---- hook fast path -------------------------------------------------------------------- */

/* The calls of one op, n times; returns ns per call. */
struct hookctx {
    int cl, tx, p[2];
    struct sockaddr_un ua;
    socklen_t ualen;
    struct sockaddr_in ia;
    struct addrinfo hints;
};

static double hook_loop(const char *op, struct hookctx *h, long count, double secs, long *calls) {
    long n;
    double t0 = now(), deadline = t0 + secs;
    if (!strcmp(op, "unix_connect")) {
        for (n = 0; n < count; n++) {
            if ((n & 255) == 0 && now() > deadline) break;
            if (connect(h->cl, (struct sockaddr *)&h->ua, h->ualen)) die("connect unix");
        }
    } else if (!strcmp(op, "udp_sendto")) {
        for (n = 0; n < count; n++) {
            if ((n & 255) == 0 && now() > deadline) break;
            if (sendto(h->tx, "x", 1, 0, (struct sockaddr *)&h->ia, sizeof h->ia) != 1) die("sendto");
        }
    } else if (!strcmp(op, "gai_numeric")) {
        struct addrinfo *res;
        for (n = 0; n < count; n++) {
            if ((n & 15) == 0 && now() > deadline) break;
            if (getaddrinfo("127.0.0.1", "80", &h->hints, &res)) die("getaddrinfo");
            freeaddrinfo(res);
        }
    } else {
        char x = 'x';
        for (n = 0; n < count; n++) {
            if ((n & 255) == 0 && now() > deadline) break;
            if (write(h->p[1], &x, 1) != 1 || read(h->p[0], &x, 1) != 1) die("pipe");
        }
        n *= 2; /* one call = one write() or one read() */
    }
    double t1 = now();
    *calls = n;
    return (t1 - t0) * 1e9 / (n ? n : 1);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cmd_hook(const struct cfg *c) {
    if (!c->op) usage();
    struct hookctx h;
    memset(&h, 0, sizeof h);
    if (!strcmp(c->op, "unix_connect")) {
        /* A datagram AF_UNIX socket may be connected again and again: one connect() per call
         * and nothing else (no accept, no backlog to fill). */
        int srv = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        h.ua.sun_family = AF_UNIX;
        int l = snprintf(h.ua.sun_path + 1, sizeof h.ua.sun_path - 1, "netbench-%d", (int)getpid());
        h.ualen = offsetof(struct sockaddr_un, sun_path) + 1 + l;
        if (srv < 0 || bind(srv, (struct sockaddr *)&h.ua, h.ualen)) die("bind unix");
        h.cl = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    } else if (!strcmp(c->op, "udp_sendto")) {
        /* An unconnected UDP socket the shim does not track, sending to a bound loopback
         * receiver (whose full buffer just drops the datagrams). */
        int rx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        h.ia.sin_family = AF_INET;
        h.ia.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t al = sizeof h.ia;
        if (rx < 0 || bind(rx, (struct sockaddr *)&h.ia, al) || getsockname(rx, (struct sockaddr *)&h.ia, &al))
            die("bind udp");
        h.tx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    } else if (!strcmp(c->op, "gai_numeric")) {
        h.hints.ai_family = AF_UNSPEC;
        h.hints.ai_socktype = SOCK_STREAM;
    } else if (!strcmp(c->op, "pipe_rw")) {
        if (pipe(h.p)) die("pipe");
    } else {
        usage();
    }
    long calls, total = 0;
    hook_loop(c->op, &h, 1000, 1.0, &calls); /* warm-up */
    double ns[100];
    for (int r = 0; r < c->reps; r++) {
        ns[r] = hook_loop(c->op, &h, (c->count - total) / (c->reps - r), c->secs / c->reps, &calls);
        total += calls;
    }
    qsort(ns, c->reps, sizeof ns[0], cmp_double);
    printf("calls=%ld\nns=%.2f\n", total, ns[c->reps / 2]);
    return 0;
}

/* ---- soak ------------------------------------------------------------------------------ */

/* A field of /proc/self/status in KiB ("\nVmRSS:"), read with open/read into a stack buffer (no
 * stdio, no malloc: the measurement must not grow the heap it measures). -1 if not there. */
static long status_kib(const char *key) {
    char buf[4096];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = 0, r;
    while (n < (ssize_t)sizeof buf - 1 && (r = read(fd, buf + n, sizeof buf - 1 - n)) > 0) n += r;
    close(fd);
    buf[n < 0 ? 0 : n] = 0;
    char *p = strstr(buf, key);
    return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

static long vmrss_kib(void) {
    return status_kib("\nVmRSS:");
}

static long rssanon_kib(void) {
    return status_kib("\nRssAnon:");
}

/* Open fds, from /proc/self/fd read with getdents64 (no opendir: no malloc), not counting the
 * directory's own fd. -1 if it cannot be read. */
static long open_fds(void) {
    int dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return -1;
    char buf[8192];
    long count = 0;
    for (;;) {
        long n = syscall(SYS_getdents64, dfd, buf, sizeof buf);
        if (n < 0) {
            close(dfd);
            return -1;
        }
        if (n == 0) break;
        for (long off = 0; off < n;) {
            unsigned short reclen;
            memcpy(&reclen, buf + off + 16, sizeof reclen); /* d_ino 8, d_off 8, d_reclen 2 */
            const char *name = buf + off + 19;             /* then d_type 1, d_name */
            if (name[0] != '.') count++;
            off += reclen;
        }
    }
    close(dfd);
    return count - 1;
}

static int cmd_soak(const struct cfg *c, long warmup) {
    /* The settling sleep's code, faulted in before the first figure (VmRSS counts file pages,
     * and the kernel maps them 64 KiB around each fault). */
    struct timespec tiny = {0, 1};
    nanosleep(&tiny, NULL);
    double t0 = now(), deadline = t0 + c->secs;
    long rss0 = vmrss_kib(), fds0 = open_fds(), rss_warm = -1, fds_warm = -1, done = 0;
    long anon0 = rssanon_kib(), anon_warm = -1, anon2 = -1;
    char error[160] = "";
    for (long i = 0; i < warmup + c->count; i++) {
        if (i == warmup) {
            rss_warm = vmrss_kib();
            anon_warm = rssanon_kib();
            fds_warm = open_fds();
        }
        if (now() > deadline) {
            snprintf(error, sizeof error, "stopped after %.0f s", c->secs);
            break;
        }
        int fd;
        int rc = open_target(c, &fd);
        if (rc == 0) rc = echo_once(fd);
        int e = errno;
        if (fd >= 0) close(fd);
        if (rc) {
            snprintf(error, sizeof error, "connection %ld: %s", i + 1, strerror(e));
            break;
        }
        done++;
    }
    /* At the end, or where it stopped: a leak that ends in EMFILE is still measured. */
    long rss1 = vmrss_kib(), anon1 = rssanon_kib(), fds1 = open_fds(), rss2 = -1, fds2 = -1;
    double dt = now() - t0;
    /* Settle before printing anything: the first printf faults in stdio's code and buffer,
     * which VmRSS would count. */
    if (!error[0] && c->settle > 0) {
        struct timespec ts = {(time_t)c->settle, (long)((c->settle - (time_t)c->settle) * 1e9)};
        while (nanosleep(&ts, &ts) && errno == EINTR) {
        }
        int fd;
        int rc = open_target(c, &fd);
        if (rc == 0) rc = echo_once(fd);
        int e = errno;
        if (fd >= 0) close(fd);
        if (rc)
            snprintf(error, sizeof error, "the connection after settling: %s", strerror(e));
        rss2 = vmrss_kib();
        anon2 = rssanon_kib();
        fds2 = open_fds();
    }
    printf("warmup=%ld\ncount=%ld\ndone=%ld\nsecs=%.6f\n", warmup, c->count, done, dt);
    printf("rss_start_kib=%ld\nrss_warm_kib=%ld\nrss_end_kib=%ld\n", rss0, rss_warm, rss1);
    printf("fds_start=%ld\nfds_warm=%ld\nfds_end=%ld\n", fds0, fds_warm, fds1);
    /* RssAnon (the heap and other private memory, no file pages): for a closer look. */
    printf("anon_start_kib=%ld\nanon_warm_kib=%ld\nanon_end_kib=%ld\n", anon0, anon_warm, anon1);
    if (rss2 >= 0 && fds2 >= 0)
        printf("settle_secs=%.3f\nrss_settled_kib=%ld\nanon_settled_kib=%ld\nfds_settled=%ld\n",
               c->settle, rss2, anon2, fds2);
    if (error[0]) {
        printf("error=%s, after %ld of %ld connections\n", error, done, warmup + c->count);
        return 1;
    }
    if (rss0 < 0 || rss_warm < 0 || rss1 < 0 || fds0 < 0 || fds_warm < 0 || fds1 < 0 ||
        (c->settle > 0 && (rss2 < 0 || fds2 < 0))) {
        printf("error=cannot read /proc/self/status or /proc/self/fd\n");
        return 1;
    }
    return 0;
}

/* ---- rss ------------------------------------------------------------------------------- */

static int cmd_rss(int argc, char **argv) {
    if (argc < 4 || strcmp(argv[2], "--")) usage();
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) dup2(null, 1);
        execvp(argv[3], argv + 3);
        _exit(127);
    }
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) die("wait4");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        printf("error=%s exited with status %d\n", argv[3], WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        return 1;
    }
    printf("maxrss_kib=%ld\n", ru.ru_maxrss);
    return 0;
}

/* ---- servers --------------------------------------------------------------------------- */

static int listen_on(const char *spec, int type, int flags) {
    struct sockaddr_storage ss;
    socklen_t len;
    if (parse_addr(spec, &ss, &len)) usage();
    int fd = socket(ss.ss_family, type | SOCK_CLOEXEC | flags, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, (struct sockaddr *)&ss, len)) die(spec);
    if (type == SOCK_STREAM && listen(fd, 4096)) die("listen");
    return fd;
}

static void *source_thread(void *p) {
    int ls = *(int *)p;
    static char buf[1 << 18];
    memset(buf, 'b', sizeof buf);
    for (;;) {
        int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) continue;
        unsigned char be[8];
        if (readn(fd, be, 8) == 0) {
            uint64_t n = 0;
            for (int i = 0; i < 8; i++) n = (n << 8) | be[i];
            while (n > 0) {
                size_t k = n < sizeof buf ? n : sizeof buf;
                if (writen(fd, buf, k)) break;
                n -= k;
            }
        }
        close(fd);
    }
    return NULL;
}

static _Noreturn void serve(int ep, int le, int lu);

static int cmd_server(int argc, char **argv) {
    const char *echo = NULL, *source = NULL, *udp = NULL;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--echo")) echo = argv[i + 1];
        else if (!strcmp(argv[i], "--source")) source = argv[i + 1];
        else if (!strcmp(argv[i], "--udp")) udp = argv[i + 1];
        else usage();
    }
    if (!echo || !source || !udp) usage();
    signal(SIGPIPE, SIG_IGN);
    /* The epoll loop's sockets are non-blocking; the source thread blocks in accept(). */
    int le = listen_on(echo, SOCK_STREAM, SOCK_NONBLOCK), lsrc = listen_on(source, SOCK_STREAM, 0);
    int lu = listen_on(udp, SOCK_DGRAM, SOCK_NONBLOCK);
    pthread_t th;
    if (pthread_create(&th, NULL, source_thread, &lsrc)) die("pthread_create");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = le};
    epoll_ctl(ep, EPOLL_CTL_ADD, le, &ev);
    ev.data.fd = lu;
    epoll_ctl(ep, EPOLL_CTL_ADD, lu, &ev);
    printf("ready=1\n");
    fflush(stdout);
    serve(ep, le, lu);
}

static _Noreturn void serve(int ep, int le, int lu) {
    struct epoll_event evs[256];
    char buf[65536];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == le) {
                for (;;) {
                    int c = accept4(le, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;
                    int one = 1;
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                }
            } else if (fd == lu) {
                for (;;) {
                    struct sockaddr_storage from;
                    socklen_t fl = sizeof from;
                    ssize_t r = recvfrom(lu, buf, 400, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
                    if (r < 0) break;
                    char who[80];
                    fmt_addr(&from, who, sizeof who);
                    r += snprintf(buf + r, sizeof buf - r, " src=%s", who);
                    sendto(lu, buf, r, MSG_DONTWAIT, (struct sockaddr *)&from, fl);
                }
            } else {
                ssize_t r = read(fd, buf, sizeof buf);
                if (r <= 0) {
                    close(fd);
                    continue;
                }
                /* Small messages only (1-byte echoes): a short write is not retried. */
                if (write(fd, buf, r) < 0) close(fd);
            }
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(argv[1], "server")) return cmd_server(argc, argv);
    if (!strcmp(argv[1], "rss")) return cmd_rss(argc, argv);
    struct cfg c;
    parse_client(argc, argv, &c);
    if (!strcmp(argv[1], "hook")) return cmd_hook(&c);
    if (!c.have_addr && !c.name[0]) usage();
    if (!strcmp(argv[1], "conn")) return cmd_conn(&c);
    if (!strcmp(argv[1], "rtt")) return cmd_rtt(&c);
    if (!strcmp(argv[1], "bulk")) return cmd_bulk(&c);
    if (!strcmp(argv[1], "udp")) return cmd_udp(&c);
    if (!strcmp(argv[1], "soak")) return cmd_soak(&c, c.warmup);
    usage();
    return 2;
}
