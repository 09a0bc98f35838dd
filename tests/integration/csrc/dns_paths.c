/* Issue 12: the glibc look-up paths and the ways around the hooks, one mode per run.
 *
 *   dns_paths gethostbyaddr         lengths 4, 5, 16 (AF_INET), AF_INET6 with a v4-mapped
 *                                   address, AF_INET6 with length 4: prints one line each
 *   dns_paths gai_a NAME PORT       getaddrinfo_a GAI_WAIT, then GAI_NOWAIT with SIGEV_SIGNAL
 *                                   and SIGEV_THREAD; connects to the first answer and sends an
 *                                   HTTP request: prints the addresses and the status line
 *   dns_paths dlsym IP PORT         connect() taken with dlsym(dlopen("libc.so.6"), ...)
 *   dns_paths dlvsym IP PORT        connect() taken with dlvsym(..., "GLIBC_2.2.5")
 *   dns_paths dlsym_gai NAME PORT   getaddrinfo() taken with dlsym(dlopen("libc.so.6"), ...)
 *   dns_paths rtld_next IP PORT     connect() taken with dlsym(RTLD_NEXT, ...) from the program
 *   dns_paths res_query NAME        res_query A and MX: prints the answer / h_errno
 *   dns_paths legacy NAME           rcmd, rexec, ruserok, getnetbyname(_r), getnetbyaddr:
 *                                   calls that look up and connect inside libc; prints each
 *                                   result
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <dlfcn.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);
typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

static int http_status(int fd)
{
    const char req[] = "GET / HTTP/1.0\r\nHost: x\r\n\r\n";
    if (write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1))
        return -1;
    char buf[64] = {0};
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n < 12)
        return -1;
    printf("status %.12s\n", buf);
    return 0;
}

static int fetch(connect_fn c, const char *ip, const char *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(port))};
    if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1)
        return 2;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        printf("connect: %s\n", strerror(errno));
        return 1;
    }
    int r = http_status(fd);
    close(fd);
    return r == 0 ? 0 : 1;
}

static void one_ghba(const char *what, const void *addr, socklen_t len, int af)
{
    struct hostent *h = gethostbyaddr(addr, len, af);
    printf("%s: %s h_errno=%d\n", what, h ? h->h_name : "(null)", h ? 0 : h_errno);
}

static atomic_int got_signal, got_thread;

static void on_signal(int sig, siginfo_t *si, void *ctx)
{
    (void)sig; (void)si; (void)ctx;
    atomic_store(&got_signal, 1);
}

static void on_thread(union sigval v)
{
    (void)v;
    atomic_store(&got_thread, 1);
}

static int gai_a(const char *name, const char *port)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    struct gaicb req = {.ar_name = name, .ar_service = port, .ar_request = &hints};
    struct gaicb *list[1] = {&req};
    int rc = getaddrinfo_a(GAI_WAIT, list, 1, NULL);
    if (rc != 0 || gai_error(&req) != 0) {
        printf("GAI_WAIT: %d %d\n", rc, gai_error(&req));
        return 1;
    }
    char ip[64];
    struct sockaddr_in *sin = (struct sockaddr_in *)req.ar_result->ai_addr;
    inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip);
    printf("wait %s\n", ip);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, req.ar_result->ai_addr, req.ar_result->ai_addrlen) != 0) {
        printf("connect: %s\n", strerror(errno));
        return 1;
    }
    if (http_status(fd) != 0)
        return 1;
    close(fd);
    freeaddrinfo(req.ar_result);

    /* GAI_NOWAIT with a signal, then with a thread. */
    struct sigaction sa = {.sa_sigaction = on_signal, .sa_flags = SA_SIGINFO};
    sigaction(SIGUSR1, &sa, NULL);
    struct gaicb r2 = {.ar_name = name, .ar_service = port, .ar_request = &hints};
    struct gaicb *l2[1] = {&r2};
    struct sigevent sev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR1};
    rc = getaddrinfo_a(GAI_NOWAIT, l2, 1, &sev);
    const struct gaicb *wait2[1] = {&r2};
    struct timespec ts = {5, 0};
    while (gai_error(&r2) == EAI_INPROGRESS)
        gai_suspend(wait2, 1, &ts);
    for (int i = 0; i < 500 && !atomic_load(&got_signal); i++)
        usleep(10000);
    sin = r2.ar_result ? (struct sockaddr_in *)r2.ar_result->ai_addr : NULL;
    if (sin)
        inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip);
    printf("nowait-signal rc=%d err=%d %s signal=%d\n", rc, gai_error(&r2), sin ? ip : "-",
           atomic_load(&got_signal));

    struct gaicb r3 = {.ar_name = name, .ar_service = port, .ar_request = &hints};
    struct gaicb *l3[1] = {&r3};
    struct sigevent sev3 = {.sigev_notify = SIGEV_THREAD, .sigev_notify_function = on_thread};
    rc = getaddrinfo_a(GAI_NOWAIT, l3, 1, &sev3);
    const struct gaicb *wait3[1] = {&r3};
    while (gai_error(&r3) == EAI_INPROGRESS)
        gai_suspend(wait3, 1, &ts);
    for (int i = 0; i < 500 && !atomic_load(&got_thread); i++)
        usleep(10000);
    printf("nowait-thread rc=%d err=%d thread=%d\n", rc, gai_error(&r3), atomic_load(&got_thread));
    return 0;
}

static int res(const char *name)
{
    unsigned char ans[1024];
    int n = res_query(name, ns_c_in, ns_t_a, ans, sizeof ans);
    if (n > 0) {
        /* The last 4 bytes of a one-answer reply are the address. */
        printf("A %d.%d.%d.%d\n", ans[n - 4], ans[n - 3], ans[n - 2], ans[n - 1]);
    } else {
        printf("A failed h_errno=%d\n", h_errno);
    }
    n = res_query(name, ns_c_in, ns_t_mx, ans, sizeof ans);
    printf("MX %d h_errno=%d\n", n, n < 0 ? h_errno : 0);
    return 0;
}

static int legacy(const char *name)
{
    char host[256];
    char *h = host;
    int fd2 = -1;
    snprintf(host, sizeof host, "%s", name);
    errno = 0;
    int r = rcmd(&h, htons(514), "root", "root", "true", NULL);
    printf("rcmd %d %s\n", r, strerror(errno));
    snprintf(host, sizeof host, "%s", name);
    h = host;
    errno = 0;
    r = rexec(&h, htons(512), "u", "p", "true", &fd2);
    printf("rexec %d %s\n", r, strerror(errno));
    printf("ruserok %d\n", ruserok(name, 0, "root", "root"));
    struct netent *n = getnetbyname(name);
    printf("getnetbyname %s\n", n ? "found" : "null");
    struct netent ne, *res = NULL;
    char buf[1024];
    int herr = 0;
    r = getnetbyname_r(name, &ne, buf, sizeof buf, &res, &herr);
    printf("getnetbyname_r %d %s\n", r, res ? "found" : "null");
    n = getnetbyaddr(inet_network("198.51.100.0"), AF_INET);
    printf("getnetbyaddr %s\n", n ? "found" : "null");
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2)
        return 2;
    const char *mode = argv[1];
    if (strcmp(mode, "gethostbyaddr") == 0) {
        unsigned char a5[5] = {192, 0, 2, 7, 9};
        struct in6_addr m = {0};
        m.s6_addr[10] = m.s6_addr[11] = 0xff;
        memcpy(&m.s6_addr[12], a5, 4);
        struct in6_addr full;
        inet_pton(AF_INET6, "2001:db8:2::77", &full);
        one_ghba("len4", a5, 4, AF_INET);
        one_ghba("len5", a5, 5, AF_INET);
        one_ghba("len16", &full, 16, AF_INET);
        one_ghba("inet6-mapped", &m, 16, AF_INET6);
        one_ghba("inet6-len4", a5, 4, AF_INET6);
        one_ghba("inet6-full", &full, 16, AF_INET6);
        return 0;
    }
    if (strcmp(mode, "gai_a") == 0 && argc == 4)
        return gai_a(argv[2], argv[3]);
    if (strcmp(mode, "res_query") == 0 && argc == 3)
        return res(argv[2]);
    if (strcmp(mode, "legacy") == 0 && argc == 3)
        return legacy(argv[2]);
    if (argc != 4)
        return 2;
    void *libc = dlopen("libc.so.6", RTLD_NOW);
    if (!libc)
        return 3;
    if (strcmp(mode, "dlsym") == 0)
        return fetch((connect_fn)dlsym(libc, "connect"), argv[2], argv[3]);
    if (strcmp(mode, "dlvsym") == 0)
        return fetch((connect_fn)dlvsym(libc, "connect", "GLIBC_2.2.5"), argv[2], argv[3]);
    if (strcmp(mode, "rtld_next") == 0)
        return fetch((connect_fn)dlsym(RTLD_NEXT, "connect"), argv[2], argv[3]);
    if (strcmp(mode, "dlsym_gai") == 0) {
        gai_fn g = (gai_fn)dlsym(libc, "getaddrinfo");
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
        int rc = g(argv[2], argv[3], &hints, &res);
        if (rc != 0) {
            printf("getaddrinfo: %s\n", gai_strerror(rc));
            return 1;
        }
        char ip[64];
        inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, ip, sizeof ip);
        printf("addr %s\n", ip);
        return fetch((connect_fn)dlsym(libc, "connect"), ip, argv[3]);
    }
    return 2;
}
