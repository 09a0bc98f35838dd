/* Fail-closed cases of issue 14 (and issue 17 item 7): fork while logging, signal storms
 * against the hooks, EINTR and SO_SNDTIMEO on a blocking proxied connect, connect(AF_UNSPEC),
 * fd reuse after a close from another thread. Each mode prints key=value lines and "done";
 * the Python side (test_failclosed_*.py) judges them. Every loop is bounded in count and time.
 *
 *   failclosed forklog N HOST PORT          N forks while another thread connects to HOST:PORT
 *                                           (denied: a warning line each); prints hangs=K
 *   failclosed storm KIND HOST PORT SECS    SIGALRM+SIGUSR1 storm while the main thread runs
 *                                           KIND (connect|gai|poll|epoll|soerror|close) and the
 *                                           handlers connect/resolve/close; prints calls=N
 *   failclosed eintr HOST PORT              blocking connect through a silent proxy, alarm
 *                                           without SA_RESTART: EINTR, then EALREADY
 *   failclosed sndtimeo HOST PORT MS        blocking connect with SO_SNDTIMEO=MS through a silent
 *                                           proxy: EINPROGRESS after about MS, disconnected
 *   failclosed unspec HOST PORT [UHOST UPORT]  connect, AF_UNSPEC, getpeername, connect again
 *                                           (then, with UHOST, the same on UDP with an echo)
 *   failclosed longjmp HOST PORT SHOST SPORT  a blocking connect to SHOST:SPORT (routed to a
 *                                           silent proxy) left by siglongjmp from an alarm
 *                                           handler; then HOST:PORT (proxied): echo, prints
 *                                           jumped=1 echo=ok
 *   failclosed fdreuse HOST PORT            thread A: blocking connect through a silent proxy;
 *                                           thread B closes the fd, a nonblocking socketpair
 *                                           takes the number; prints nonblock=0|1 afterwards
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *host;
static int port;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static struct sockaddr_in dest(const char *h, int p) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(p);
    inet_pton(AF_INET, h, &a.sin_addr);
    return a;
}

static int connect_to(int fd, const char *h, int p) {
    struct sockaddr_in a = dest(h, p);
    return connect(fd, (struct sockaddr *)&a, sizeof a);
}

/* ---- forklog ------------------------------------------------------------------------- */
static volatile int stop_logging;

static void *logger_thread(void *arg) {
    (void)arg;
    for (int i = 0; i < 200000 && !stop_logging; i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        connect_to(s, host, port);
        close(s);
    }
    return NULL;
}

static int forklog(int n) {
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, logger_thread, NULL);
    int hangs = 0, bad = 0;
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            /* The child logs at once (a denied connect), then exits. */
            int s = socket(AF_INET, SOCK_STREAM, 0);
            connect_to(s, host, port);
            _exit(0);
        }
        if (pid < 0) { perror("fork"); bad++; continue; }
        double end = now() + 5.0;
        int st = 0, done = 0;
        while (now() < end) {
            pid_t r = waitpid(pid, &st, WNOHANG);
            if (r == pid) { done = 1; break; }
            struct timespec d = {0, 1000000};
            nanosleep(&d, NULL);
        }
        if (!done) {
            hangs++;
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
        } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            bad++;
        }
    }
    stop_logging = 1;
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    printf("forks=%d hangs=%d bad=%d\n", n, hangs, bad);
    return hangs || bad;
}

/* ---- storm --------------------------------------------------------------------------- */
static volatile sig_atomic_t handler_calls, handler_errnos;
static const char *storm_kind;
static int shared_fd = -1;

static void on_signal(int sig) {
    int saved = errno;
    handler_calls++;
    /* What a handler may call (async-signal-safe in POSIX): socket, connect, close. */
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s >= 0) {
        if (connect_to(s, host, port) != 0 && errno != EINPROGRESS) handler_errnos++;
        close(s);
    }
    if (sig == SIGUSR1) {
        int fd = shared_fd;
        if (fd >= 0 && strcmp(storm_kind, "close") == 0) {
            /* Close the main thread's socket under it (it may be mid-handshake). */
            shared_fd = -1;
            close(fd);
        }
    }
    errno = saved;
}

static volatile int storm_stop;
static pthread_t main_thread;

static void *usr1_thread(void *arg) {
    (void)arg;
    for (int i = 0; i < 200000 && !storm_stop; i++) {
        pthread_kill(main_thread, SIGUSR1);
        struct timespec d = {0, 200000};
        nanosleep(&d, NULL);
    }
    return NULL;
}

static int storm_once(void) {
    if (strcmp(storm_kind, "gai") == 0) {
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_socktype = SOCK_STREAM;
        char name[64];
        snprintf(name, sizeof name, "n%d.storm.example", rand() % 500);
        if (getaddrinfo(name, "80", &hints, &res) == 0) freeaddrinfo(res);
        return 0;
    }
    int nb = strcmp(storm_kind, "connect") != 0;
    int s = socket(AF_INET, SOCK_STREAM | (nb ? SOCK_NONBLOCK : 0), 0);
    if (s < 0) return 0;
    shared_fd = s;
    int r = connect_to(s, host, port);
    if (r != 0 && errno == EINPROGRESS) {
        if (strcmp(storm_kind, "poll") == 0 || strcmp(storm_kind, "close") == 0) {
            struct pollfd p = {s, POLLOUT, 0};
            poll(&p, 1, 200);
        } else if (strcmp(storm_kind, "epoll") == 0) {
            int ep = epoll_create1(0);
            struct epoll_event ev = {.events = EPOLLOUT, .data.fd = s}, out;
            epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
            epoll_wait(ep, &out, 1, 200);
            close(ep);
        } else if (strcmp(storm_kind, "soerror") == 0) {
            struct pollfd p = {s, POLLOUT, 0};
            poll(&p, 1, 200);
            int e = 0;
            socklen_t l = sizeof e;
            getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &l);
        }
    }
    if (shared_fd == s) {
        shared_fd = -1;
        close(s);
    }
    return 0;
}

static int storm(double secs) {
    main_thread = pthread_self();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    struct itimerval it = {{0, 300}, {0, 300}};
    setitimer(ITIMER_REAL, &it, NULL);
    pthread_t th;
    pthread_create(&th, NULL, usr1_thread, NULL);
    int calls = 0;
    double end = now() + secs;
    while (now() < end && calls < 100000) {
        storm_once();
        calls++;
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    storm_stop = 1;
    pthread_join(th, NULL);
    printf("calls=%d handler_calls=%d\n", calls, (int)handler_calls);
    return 0;
}

/* ---- eintr / sndtimeo ------------------------------------------------------------------ */
static volatile sig_atomic_t alarms;
static void on_alarm(int sig) { (void)sig; alarms++; }

static int eintr(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = 0; /* no SA_RESTART */
    sigaction(SIGALRM, &sa, NULL);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct itimerval it = {{0, 0}, {0, 300000}};
    setitimer(ITIMER_REAL, &it, NULL);
    double t0 = now();
    int r = connect_to(s, host, port);
    int e = errno;
    printf("first=%s elapsed=%.2f alarms=%d\n", r == 0 ? "0" : strerrorname_np(e), now() - t0,
           (int)alarms);
    r = connect_to(s, host, port);
    e = errno;
    printf("second=%s\n", r == 0 ? "0" : strerrorname_np(e));
    int fl = fcntl(s, F_GETFL);
    printf("nonblock=%d\n", (fl & O_NONBLOCK) != 0);
    close(s);
    printf("done\n");
    return 0;
}

static int sndtimeo(int ms) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    double t0 = now();
    int r = connect_to(s, host, port);
    int e = errno;
    printf("first=%s elapsed=%.2f\n", r == 0 ? "0" : strerrorname_np(e), now() - t0);
    struct sockaddr_storage ss;
    socklen_t l = sizeof ss;
    r = getpeername(s, (struct sockaddr *)&ss, &l);
    printf("getpeername=%s\n", r == 0 ? "0" : strerrorname_np(errno));
    int fl = fcntl(s, F_GETFL);
    printf("nonblock=%d\n", (fl & O_NONBLOCK) != 0);
    close(s);
    printf("done\n");
    return 0;
}

/* ---- unspec -------------------------------------------------------------------------- */
static int dissolve(int s) {
    struct sockaddr a;
    memset(&a, 0, sizeof a);
    a.sa_family = AF_UNSPEC;
    return connect(s, &a, sizeof a);
}

static const char *peer_of(int s) {
    static char buf[80];
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    if (getpeername(s, (struct sockaddr *)&a, &l) != 0) return strerrorname_np(errno);
    char ip[32];
    inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
    snprintf(buf, sizeof buf, "%s:%d", ip, ntohs(a.sin_port));
    return buf;
}

static int echo_ok(int s, const char *msg) {
    char buf[64];
    if (send(s, msg, strlen(msg), 0) != (ssize_t)strlen(msg)) return 0;
    struct pollfd p = {s, POLLIN, 0};
    if (poll(&p, 1, 3000) != 1) return 0;
    ssize_t n = recv(s, buf, sizeof buf, 0);
    return n == (ssize_t)strlen(msg) && memcmp(buf, msg, n) == 0;
}

static int unspec(const char *uhost, int uport) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int r = connect_to(s, host, port);
    printf("tcp_connect=%s\n", r == 0 ? "0" : strerrorname_np(errno));
    printf("tcp_peer=%s\n", peer_of(s));
    r = dissolve(s);
    printf("tcp_unspec=%s\n", r == 0 ? "0" : strerrorname_np(errno));
    printf("tcp_peer_after=%s\n", peer_of(s));
    r = connect_to(s, host, port);
    printf("tcp_reconnect=%s\n", r == 0 ? "0" : strerrorname_np(errno));
    printf("tcp_echo_after=%d\n", r == 0 && echo_ok(s, "again"));
    close(s);
    if (uhost) {
        int u = socket(AF_INET, SOCK_DGRAM, 0);
        r = connect_to(u, uhost, uport);
        printf("udp_connect=%s\n", r == 0 ? "0" : strerrorname_np(errno));
        printf("udp_echo=%d\n", r == 0 && echo_ok(u, "one"));
        r = dissolve(u);
        printf("udp_unspec=%s\n", r == 0 ? "0" : strerrorname_np(errno));
        printf("udp_peer_after=%s\n", peer_of(u));
        /* Unconnected now: sendto the echo, the reply must come back (from the echo). */
        struct sockaddr_in a = dest(uhost, uport), from;
        socklen_t fl = sizeof from;
        char buf[64];
        ssize_t n = sendto(u, "two", 3, 0, (struct sockaddr *)&a, sizeof a);
        struct pollfd p = {u, POLLIN, 0};
        int got = n == 3 && poll(&p, 1, 3000) == 1 &&
                  recvfrom(u, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl) == 3 &&
                  memcmp(buf, "two", 3) == 0 && from.sin_addr.s_addr == a.sin_addr.s_addr &&
                  from.sin_port == a.sin_port;
        printf("udp_reply_after=%d\n", got);
        close(u);
    }
    printf("done\n");
    return 0;
}

/* ---- fdreuse ------------------------------------------------------------------------- */
static volatile int victim = -1;
static int pair[2] = {-1, -1};

static void *connector(void *arg) {
    (void)arg;
    int s = victim;
    int r = connect_to(s, host, port);
    printf("connect=%s\n", r == 0 ? "0" : strerrorname_np(errno));
    return NULL;
}

static int fdreuse(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    victim = s;
    pthread_t th;
    pthread_create(&th, NULL, connector, NULL);
    /* Let the connect start (bounded: the silent proxy keeps it waiting for seconds). */
    struct timespec d = {0, 300000000};
    nanosleep(&d, NULL);
    close(s);
    /* The lowest free number is s again: a non-blocking socketpair takes it. */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, pair) != 0) { perror("socketpair"); return 1; }
    int same = pair[0] == s || pair[1] == s;
    printf("reused=%d\n", same);
    pthread_join(th, NULL);
    int fd = pair[0] == s ? pair[0] : pair[1];
    int fl = fcntl(fd, F_GETFL);
    printf("nonblock=%d\n", (fl & O_NONBLOCK) != 0);
    printf("done\n");
    return 0;
}

/* ---- longjmp --------------------------------------------------------------------------- */
static sigjmp_buf jump_env;
static void on_alarm_jump(int sig) { (void)sig; siglongjmp(jump_env, 1); }

static int longjmp_out(const char *shost, int sport) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm_jump;
    sigaction(SIGALRM, &sa, NULL);
    int jumped = 0;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (sigsetjmp(jump_env, 1) == 0) {
        struct itimerval it = {{0, 0}, {0, 300000}};
        setitimer(ITIMER_REAL, &it, NULL);
        connect_to(s, shost, sport); /* the silent proxy never answers: the alarm jumps out */
        printf("error=the connect returned before the alarm\n");
        return 1;
    }
    jumped = 1;
    close(s);
    /* The old-style timeout idiom done: the next connect must work as usual. */
    int t = socket(AF_INET, SOCK_STREAM, 0);
    if (connect_to(t, host, port) != 0) {
        printf("jumped=%d error=%s\n", jumped, strerrorname_np(errno));
        return 1;
    }
    const char msg[] = "jmp\n";
    char buf[8] = {0};
    if (write(t, msg, 4) != 4 || read(t, buf, 4) != 4 || memcmp(buf, msg, 4) != 0) {
        printf("jumped=%d error=echo\n", jumped);
        return 1;
    }
    printf("jumped=%d echo=ok\n", jumped);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 4) { fprintf(stderr, "usage: failclosed MODE ... HOST PORT\n"); return 2; }
    const char *mode = argv[1];
    if (strcmp(mode, "forklog") == 0 && argc >= 5) {
        host = argv[3]; port = atoi(argv[4]);
        return forklog(atoi(argv[2]));
    }
    if (strcmp(mode, "storm") == 0 && argc >= 6) {
        storm_kind = argv[2]; host = argv[3]; port = atoi(argv[4]);
        return storm(atof(argv[5]));
    }
    host = argv[2]; port = atoi(argv[3]);
    if (strcmp(mode, "eintr") == 0) return eintr();
    if (strcmp(mode, "sndtimeo") == 0 && argc >= 5) return sndtimeo(atoi(argv[4]));
    if (strcmp(mode, "unspec") == 0) return unspec(argc >= 6 ? argv[4] : NULL, argc >= 6 ? atoi(argv[5]) : 0);
    if (strcmp(mode, "fdreuse") == 0) return fdreuse();
    if (strcmp(mode, "longjmp") == 0 && argc >= 6) return longjmp_out(argv[4], atoi(argv[5]));
    fprintf(stderr, "failclosed: unknown mode %s\n", mode);
    return 2;
}
