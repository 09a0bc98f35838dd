/* Threads through proxify.
 *
 *   hard_threads many NTHREADS TOTAL IP NAME PORT
 *       NTHREADS threads open TOTAL connections in all to the echo server, even-numbered ones
 *       to IP, odd-numbered ones to NAME (getaddrinfo, AF_INET, first answer); each does one
 *       echo round trip and checks getpeername. Prints "ok=N fail=M name_addrs=A,B,..."; exit
 *       0 only if every connection worked.
 *
 *   hard_threads stall STUCK_IP STUCK_PORT LOOP_PORT ROUNDS
 *       Thread A connects to STUCK_IP:STUCK_PORT (proxied through a proxy that never answers)
 *       and stays inside connect() until proxify's timeout. Meanwhile the main thread, 300 ms
 *       after A entered connect(), makes ROUNDS unproxied loopback echo round trips to
 *       127.0.0.1:LOOP_PORT and a remote-DNS lookup, and reports how long each took and
 *       whether A was still stuck when they finished.
 */
#include "hard_common.h"
#include <pthread.h>
#include <stdatomic.h>

static int g_nthreads, g_total, g_port;
static const char *g_ip, *g_name;
static atomic_int g_ok, g_fail;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_names[1024];
static char g_first_err[400];

static void note_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&g_mu);
    if (!g_first_err[0])
        vsnprintf(g_first_err, sizeof g_first_err, fmt, ap);
    pthread_mutex_unlock(&g_mu);
    va_end(ap);
}

static void note_name_addr(const char *a)
{
    pthread_mutex_lock(&g_mu);
    if (!strstr(g_names, a) && strlen(g_names) + strlen(a) + 2 < sizeof g_names) {
        if (g_names[0])
            strcat(g_names, ",");
        strcat(g_names, a);
    }
    pthread_mutex_unlock(&g_mu);
}

static int one(int j)
{
    char ipbuf[INET6_ADDRSTRLEN];
    const char *ip = g_ip;
    if (j % 2) {
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
        int e = getaddrinfo(g_name, NULL, &hints, &res);
        if (e != 0 || !res) {
            note_err("conn %d: getaddrinfo(%s): %s", j, g_name, gai_strerror(e));
            return -1;
        }
        inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, ipbuf, sizeof ipbuf);
        freeaddrinfo(res);
        note_name_addr(ipbuf);
        ip = ipbuf;
    }
    struct sockaddr_storage ss, peer;
    socklen_t len = make_addr(ip, g_port, &ss);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        note_err("conn %d: socket: %s", j, strerror(errno));
        return -1;
    }
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&ss, len) != 0) {
        note_err("conn %d: connect %s:%d: %s", j, ip, g_port, strerror(errno));
        close(fd);
        return -1;
    }
    socklen_t pl = sizeof peer;
    char want[80], got[80];
    if (getpeername(fd, (struct sockaddr *)&peer, &pl) != 0) {
        note_err("conn %d: getpeername: %s", j, strerror(errno));
        close(fd);
        return -1;
    }
    addr_str(&ss, want, sizeof want);
    addr_str(&peer, got, sizeof got);
    if (strcmp(want, got) != 0) {
        note_err("conn %d: getpeername %s, expected %s", j, got, want);
        close(fd);
        return -1;
    }
    char msg[64], err[200];
    snprintf(msg, sizeof msg, "conn-%d-fd-%d\n", j, fd);
    int e = echo_once(fd, msg, err, sizeof err);
    close(fd);
    if (e) {
        note_err("conn %d: %s", j, err);
        return -1;
    }
    return 0;
}

static void *worker(void *arg)
{
    int t = (int)(long)arg;
    for (int j = t; j < g_total; j += g_nthreads) {
        if (one(j) == 0)
            atomic_fetch_add(&g_ok, 1);
        else
            atomic_fetch_add(&g_fail, 1);
    }
    return NULL;
}

static int many(int argc, char **argv)
{
    if (argc != 7)
        fail("usage: many NTHREADS TOTAL IP NAME PORT");
    g_nthreads = atoi(argv[2]);
    g_total = atoi(argv[3]);
    g_ip = argv[4];
    g_name = argv[5];
    g_port = atoi(argv[6]);
    pthread_t th[1024];
    if (g_nthreads < 1 || g_nthreads > 1024)
        fail("bad thread count");
    double t0 = now_ms();
    for (int i = 0; i < g_nthreads; i++)
        if (pthread_create(&th[i], NULL, worker, (void *)(long)i) != 0)
            fail("pthread_create %d", i);
    for (int i = 0; i < g_nthreads; i++)
        pthread_join(th[i], NULL);
    printf("ok=%d fail=%d threads=%d ms=%.0f name_addrs=%s\n", atomic_load(&g_ok),
           atomic_load(&g_fail), g_nthreads, now_ms() - t0, g_names);
    if (g_first_err[0])
        printf("first_error=%s\n", g_first_err);
    return atomic_load(&g_fail) == 0 && atomic_load(&g_ok) == g_total ? 0 : 1;
}

/* ---- stall ------------------------------------------------------------------------------- */
static atomic_int a_entered, a_done;
static double a_ms;
static int a_rc, a_errno;
static const char *s_ip;
static int s_port;

static void *stuck_thread(void *arg)
{
    (void)arg;
    struct sockaddr_storage ss;
    socklen_t len = make_addr(s_ip, s_port, &ss);
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    double t0 = now_ms();
    atomic_store(&a_entered, 1);
    a_rc = connect(fd, (struct sockaddr *)&ss, len);
    a_errno = errno;
    a_ms = now_ms() - t0;
    atomic_store(&a_done, 1);
    close(fd);
    return NULL;
}

static int stall(int argc, char **argv)
{
    if (argc != 6)
        fail("usage: stall STUCK_IP STUCK_PORT LOOP_PORT ROUNDS");
    s_ip = argv[2];
    s_port = atoi(argv[3]);
    int loop_port = atoi(argv[4]), rounds = atoi(argv[5]);
    pthread_t a;
    pthread_create(&a, NULL, stuck_thread, NULL);
    while (!atomic_load(&a_entered))
        usleep(1000);
    usleep(300 * 1000); /* A is now inside connect(), waiting for the silent proxy */
    double worst = 0;
    int still_stuck = 1;
    for (int i = 0; i < rounds; i++) {
        double t0 = now_ms();
        int fd = tcp_connect("127.0.0.1", loop_port, "loopback");
        char msg[64];
        snprintf(msg, sizeof msg, "loopback-round-%d\n", i);
        must_echo(fd, msg, "loopback");
        close(fd);
        double ms = now_ms() - t0;
        if (ms > worst)
            worst = ms;
        if (atomic_load(&a_done))
            still_stuck = 0;
        printf("loopback_round=%d ms=%.1f stuck_thread_still_in_connect=%d\n", i, ms,
               !atomic_load(&a_done));
    }
    /* A remote-DNS lookup (answered from proxify's placeholder map) meanwhile. */
    double t0 = now_ms();
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int e = getaddrinfo("other-while-stuck.example", "80", &hints, &res);
    double dns_ms = now_ms() - t0;
    if (res)
        freeaddrinfo(res);
    int still_after_dns = !atomic_load(&a_done);
    pthread_join(a, NULL);
    printf("loopback_worst_ms=%.1f dns_ms=%.1f dns_rc=%d stuck_during_all=%d "
           "stuck_rc=%d stuck_errno=%s stuck_ms=%.0f\n",
           worst, dns_ms, e, still_stuck && still_after_dns, a_rc,
           a_rc ? strerrorname_np(a_errno) : "none", a_ms);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1 && !strcmp(argv[1], "many"))
        return many(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "stall"))
        return stall(argc, argv);
    fail("usage: hard_threads many|stall ...");
    return 2;
}
