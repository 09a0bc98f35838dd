/* fd juggling through proxify. Every step prints "ok: ..."; the first failure prints
 * "FAIL: ..." and exits 1; the end prints "done".
 *
 *   hard_fd dups IP PORT            dup/dup2/dup3/F_DUPFD/F_DUPFD_CLOEXEC/SYS_dup of a proxied
 *                                   socket, close of the original, reuse of fd numbers
 *   hard_fd closerange IP PORT UIP UPORT   close_range(first, ~0U, 0) with a UDP association
 *                                          and a proxied TCP socket open, then new connections
 *   hard_fd closefrom IP PORT UIP UPORT    the same with closefrom(first)
 *   hard_fd daemon IP PORT UIP UPORT       close(3..1023) except the program's UDP socket, then
 *                                          dup2(/dev/null) over 3..63, then new connections
 *   hard_fd dup-before-connect IP PORT   dups made before the proxied connect see its peer
 *   hard_fd syscall IP PORT          syscall(SYS_connect / SYS_getpeername / SYS_dup / SYS_close)
 *
 * IP:PORT is a TCP echo server reached through the proxy, UIP:UPORT a UDP echo server.
 */
#include "hard_common.h"
#include <sys/syscall.h>

static const char *ip, *uip;
static int port, uport;

static void must_cloexec(int fd, int want, const char *what)
{
    int f = fcntl(fd, F_GETFD);
    if (f < 0)
        fail("%s: F_GETFD(%d): %s", what, fd, strerror(errno));
    if (!!(f & FD_CLOEXEC) != want)
        fail("%s: FD_CLOEXEC on fd %d is %d, expected %d", what, fd, !!(f & FD_CLOEXEC), want);
}

static void must_be_closed(int fd, const char *what)
{
    if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
        fail("%s: fd %d is still open", what, fd);
}

static void udp_echo(int u, const char *msg, const char *what)
{
    struct sockaddr_storage to, from;
    socklen_t tl = make_addr(uip, uport, &to), fl = sizeof from;
    if (sendto(u, msg, strlen(msg), 0, (struct sockaddr *)&to, tl) != (ssize_t)strlen(msg))
        fail("%s: UDP sendto %s:%d: %s", what, uip, uport, strerror(errno));
    char buf[512];
    if (wait_fd(u, POLLIN, 5000) <= 0)
        fail("%s: no UDP echo within 5 s", what);
    ssize_t n = recvfrom(u, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
    if (n != (ssize_t)strlen(msg) || memcmp(buf, msg, n) != 0)
        fail("%s: UDP echo wrong (%zd bytes: %s)", what, n, n < 0 ? strerror(errno) : "data");
    char a[80], b[80];
    addr_str(&to, a, sizeof a);
    addr_str(&from, b, sizeof b);
    if (strcmp(a, b) != 0)
        fail("%s: UDP reply from %s, expected %s", what, b, a);
}

static int new_proxied(const char *what)
{
    int fd = tcp_connect(ip, port, what);
    must_peer(fd, ip, port, what);
    char msg[80];
    snprintf(msg, sizeof msg, "%s-on-fd-%d\n", what, fd);
    must_echo(fd, msg, what);
    return fd;
}

static int dups(void)
{
    int fd = new_proxied("original");
    printf("ok: proxied socket fd %d, getpeername and echo\n", fd);
    int d1 = dup(fd);
    must_peer(d1, ip, port, "dup");
    int d2 = dup2(fd, 100);
    if (d2 != 100)
        fail("dup2 returned %d", d2);
    must_peer(100, ip, port, "dup2");
    must_cloexec(100, 0, "dup2");
    if (dup3(fd, 101, O_CLOEXEC) != 101)
        fail("dup3: %s", strerror(errno));
    must_peer(101, ip, port, "dup3");
    must_cloexec(101, 1, "dup3(O_CLOEXEC)");
    int d4 = fcntl(fd, F_DUPFD, 200);
    if (d4 < 200)
        fail("F_DUPFD returned %d", d4);
    must_peer(d4, ip, port, "F_DUPFD");
    int d5 = fcntl(fd, F_DUPFD_CLOEXEC, 300);
    if (d5 < 300)
        fail("F_DUPFD_CLOEXEC returned %d", d5);
    must_peer(d5, ip, port, "F_DUPFD_CLOEXEC");
    must_cloexec(d5, 1, "F_DUPFD_CLOEXEC");
    int d6 = (int)syscall(SYS_dup, fd);
    if (d6 < 0)
        fail("syscall(SYS_dup): %s", strerror(errno));
    must_peer(d6, ip, port, "syscall(SYS_dup)");
    printf("ok: getpeername reports %s:%d on dup %d, dup2 100, dup3 101, F_DUPFD %d, "
           "F_DUPFD_CLOEXEC %d, SYS_dup %d\n", ip, port, d1, d4, d5, d6);

    close(fd);
    must_echo(d1, "after-close-of-original-via-dup\n", "dup after close");
    must_echo(100, "after-close-of-original-via-dup2\n", "dup2 after close");
    must_echo(d5, "after-close-of-original-via-dupfd-cloexec\n", "F_DUPFD_CLOEXEC after close");
    must_peer(d1, ip, port, "dup after close of the original");
    printf("ok: original fd %d closed, the dups still work\n", fd);

    /* The closed number, reused by a fresh unconnected socket, has no stale state. */
    int n = socket(AF_INET, SOCK_STREAM, 0);
    if (n != fd)
        fail("expected the fresh socket to reuse fd %d, got %d", fd, n);
    must_be_unconnected(n, "fresh socket on a reused number");
    printf("ok: fresh socket on reused fd %d: getpeername ENOTCONN\n", n);

    /* dup2/dup3 of an unconnected socket over a proxied dup replace its state. */
    if (dup2(n, 100) != 100)
        fail("dup2 over proxied: %s", strerror(errno));
    must_be_unconnected(100, "dup2 of an unconnected socket over a proxied dup");
    if (dup3(n, 101, 0) != 101)
        fail("dup3 over proxied: %s", strerror(errno));
    must_be_unconnected(101, "dup3 of an unconnected socket over a proxied dup");
    must_echo(d1, "other-dups-unaffected\n", "dup after dup2 over a sibling");
    printf("ok: dup2/dup3 of an unconnected socket over proxied dups: ENOTCONN there, the "
           "others still work\n");

    /* Close every remaining dup; the numbers come back clean. */
    close(d1);
    close(d4);
    close(d5);
    close(d6);
    int m = socket(AF_INET, SOCK_STREAM, 0);
    if (m != d1)
        fail("expected fd %d again, got %d", d1, m);
    must_be_unconnected(m, "fresh socket on the number of a closed dup");
    int k = fcntl(m, F_DUPFD, 200);
    if (k != d4)
        fail("expected F_DUPFD to give %d again, got %d", d4, k);
    must_be_unconnected(k, "F_DUPFD onto a number a proxied dup had");
    close(k);
    close(m);
    printf("ok: numbers of closed dups (%d, %d) reused without stale state\n", d1, d4);

    /* The fresh socket n can itself be connected through the proxy. */
    struct sockaddr_storage ss;
    socklen_t len = make_addr(ip, port, &ss);
    if (connect(n, (struct sockaddr *)&ss, len) != 0)
        fail("connect of the fresh socket: %s", strerror(errno));
    must_peer(n, ip, port, "fresh socket");
    must_echo(n, "fresh-socket-connected\n", "fresh socket");
    must_echo(100, "fresh-socket-via-its-older-dup2\n", "fresh socket via a dup made before connect");
    printf("ok: the fresh socket connects through the proxy\n");
    return 0;
}

/* A dup made BEFORE the proxied connect refers to the same socket: it must report the same
 * peer as the fd that connected (the kernel's answer would be the proxy's address). */
static int dup_before_connect(void)
{
    struct sockaddr_storage ss;
    socklen_t len = make_addr(ip, port, &ss);
    int s = socket(ss.ss_family, SOCK_STREAM, 0);
    int d = dup(s);
    int d2 = fcntl(s, F_DUPFD_CLOEXEC, 50);
    if (connect(s, (struct sockaddr *)&ss, len) != 0)
        fail("connect: %s", strerror(errno));
    must_peer(s, ip, port, "the fd that connected");
    must_echo(d, "via-a-dup-made-before-connect\n", "dup made before connect");
    printf("ok: fd %d connected through the proxy; dup %d (made before) carries its data\n", s, d);
    must_peer(d, ip, port, "dup made before the connect");
    must_peer(d2, ip, port, "F_DUPFD_CLOEXEC made before the connect");
    printf("ok: getpeername on dups made before the connect (%d, %d) reports the destination\n", d, d2);
    return 0;
}

static int closing(const char *mode)
{
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    if (u < 0)
        fail("UDP socket: %s", strerror(errno));
    udp_echo(u, "udp-before\n", "UDP before");
    int a = new_proxied("tcp-before");
    printf("ok: UDP socket %d associated, proxied TCP socket %d\n", u, a);
    int first = u + 1;
    if (!strcmp(mode, "closerange")) {
        if (close_range(first, ~0U, 0) != 0)
            fail("close_range(%d, ~0U, 0): %s", first, strerror(errno));
        printf("ok: close_range(%d, ~0U, 0)\n", first);
    } else if (!strcmp(mode, "closefrom")) {
        closefrom(first);
        printf("ok: closefrom(%d)\n", first);
    } else {
        for (int fd = 3; fd < 1024; fd++)
            if (fd != u)
                close(fd);
        printf("ok: closed every fd 3..1023 but %d\n", u);
    }
    must_be_closed(a, "proxied TCP socket after the mass close");
    udp_echo(u, "udp-after-mass-close\n", "UDP after the mass close");
    printf("ok: the UDP association of fd %d survived\n", u);

    if (!strcmp(mode, "daemon")) {
        int dn = open("/dev/null", O_RDWR);
        if (dn < 0)
            fail("/dev/null: %s", strerror(errno));
        for (int fd = 3; fd < 64; fd++) {
            if (fd == u || fd == dn)
                continue;
            if (dup2(dn, fd) != fd)
                fail("dup2(/dev/null, %d): %s", fd, strerror(errno));
        }
        for (int fd = 3; fd < 64; fd++)
            if (fd != u)
                close(fd);
        udp_echo(u, "udp-after-dup2-over-everything\n", "UDP after dup2 over 3..63");
        printf("ok: dup2(/dev/null) over fds 3..63 and close: UDP association still works\n");
    }

    int n = socket(AF_INET, SOCK_STREAM, 0);
    must_be_unconnected(n, "fresh socket after the mass close");
    close(n);
    for (int i = 0; i < 3; i++) {
        int fd = new_proxied("tcp-after");
        printf("ok: new proxied connection on fd %d after the mass close\n", fd);
        close(fd);
    }
    udp_echo(u, "udp-at-the-end\n", "UDP at the end");
    close(u);
    return 0;
}

static int sys(void)
{
    struct sockaddr_storage ss, got;
    socklen_t len = make_addr(ip, port, &ss), gl = sizeof got;
    int s = socket(ss.ss_family, SOCK_STREAM, 0);
    long r = syscall(SYS_connect, s, (struct sockaddr *)&ss, len);
    if (r != 0)
        fail("syscall(SYS_connect): %s", strerror(errno));
    if (syscall(SYS_getpeername, s, (struct sockaddr *)&got, &gl) != 0)
        fail("syscall(SYS_getpeername): %s", strerror(errno));
    char a[80], b[80];
    addr_str(&ss, a, sizeof a);
    addr_str(&got, b, sizeof b);
    if (strcmp(a, b) != 0)
        fail("syscall(SYS_getpeername) = %s, expected %s", b, a);
    must_peer(s, ip, port, "getpeername after syscall(SYS_connect)");
    must_echo(s, "connected-by-syscall\n", "syscall(SYS_connect)");
    printf("ok: syscall(SYS_connect) fd %d, SYS_getpeername %s, echo\n", s, b);
    if (syscall(SYS_close, s) != 0)
        fail("syscall(SYS_close): %s", strerror(errno));
    int n = socket(AF_INET, SOCK_STREAM, 0);
    if (n != s)
        fail("expected fd %d again, got %d", s, n);
    must_be_unconnected(n, "fresh socket after syscall(SYS_close)");
    printf("ok: syscall(SYS_close) forgot fd %d\n", s);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 4)
        fail("usage: hard_fd MODE IP PORT [UIP UPORT]");
    ip = argv[2];
    port = atoi(argv[3]);
    if (argc >= 6) {
        uip = argv[4];
        uport = atoi(argv[5]);
    }
    const char *m = argv[1];
    int r;
    if (!strcmp(m, "dups"))
        r = dups();
    else if (!strcmp(m, "dup-before-connect"))
        r = dup_before_connect();
    else if (!strcmp(m, "syscall"))
        r = sys();
    else if (uip && (!strcmp(m, "closerange") || !strcmp(m, "closefrom") || !strcmp(m, "daemon")))
        r = closing(m);
    else
        fail("unknown mode %s (or missing UDP address)", m);
    printf("done\n");
    return r;
}
