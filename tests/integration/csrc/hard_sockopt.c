/* Socket options set before a proxied connect, read back after it.
 *
 *   hard_sockopt block|nonblock IP PORT BIND_IP BIND_PORT DEVICE
 *
 * Creates a SOCK_STREAM|SOCK_CLOEXEC socket (|SOCK_NONBLOCK for "nonblock"), sets TCP_NODELAY,
 * SO_KEEPALIVE, SO_RCVBUF=65536, IP_TOS=0x10, SO_BINDTODEVICE=DEVICE, binds it to
 * BIND_IP:BIND_PORT, connects to IP:PORT (an echo server, proxied), and prints key=value lines:
 * each option as read back before and after the connect, the fd and file status flags,
 * getsockname before and after, getpeername, and the result of an echo round trip.
 */
#include "hard_common.h"
#include <netinet/ip.h>
#include <netinet/tcp.h>

static int geti(int fd, int level, int name)
{
    int v = -1;
    socklen_t l = sizeof v;
    if (getsockopt(fd, level, name, &v, &l) != 0)
        return -1;
    return v;
}

static void seti(int fd, int level, int name, int v, const char *what)
{
    if (setsockopt(fd, level, name, &v, sizeof v) != 0)
        fail("setsockopt %s: %s", what, strerror(errno));
}

static void print_opts(int fd, const char *when)
{
    char dev[IFNAMSIZ + 1] = "";
    socklen_t dl = sizeof dev;
    if (getsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, dev, &dl) != 0)
        snprintf(dev, sizeof dev, "error-%d", errno);
    int fdfl = fcntl(fd, F_GETFD), fl = fcntl(fd, F_GETFL);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char local[80] = "error";
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        addr_str(&ss, local, sizeof local);
    printf("%s.nodelay=%d\n%s.keepalive=%d\n%s.rcvbuf=%d\n%s.tos=%d\n%s.bindtodevice=%s\n"
           "%s.cloexec=%d\n%s.nonblock=%d\n%s.getsockname=%s\n",
           when, geti(fd, IPPROTO_TCP, TCP_NODELAY), when, geti(fd, SOL_SOCKET, SO_KEEPALIVE),
           when, geti(fd, SOL_SOCKET, SO_RCVBUF), when, geti(fd, IPPROTO_IP, IP_TOS), when, dev,
           when, fdfl >= 0 && (fdfl & FD_CLOEXEC), when, fl >= 0 && (fl & O_NONBLOCK), when,
           local);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 7)
        fail("usage: hard_sockopt block|nonblock IP PORT BIND_IP BIND_PORT DEVICE");
    int nb = !strcmp(argv[1], "nonblock");
    const char *ip = argv[2], *dev = argv[6];
    int port = atoi(argv[3]);
    struct sockaddr_storage dst, src;
    socklen_t dl = make_addr(ip, port, &dst), sl = make_addr(argv[4], atoi(argv[5]), &src);
    int fd = socket(dst.ss_family, SOCK_STREAM | SOCK_CLOEXEC | (nb ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0)
        fail("socket: %s", strerror(errno));
    seti(fd, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
    seti(fd, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
    seti(fd, SOL_SOCKET, SO_RCVBUF, 65536, "SO_RCVBUF");
    seti(fd, IPPROTO_IP, IP_TOS, IPTOS_LOWDELAY, "IP_TOS");
    if (setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, dev, strlen(dev)) != 0)
        fail("SO_BINDTODEVICE %s: %s", dev, strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&src, sl) != 0)
        fail("bind %s:%s: %s", argv[4], argv[5], strerror(errno));
    print_opts(fd, "before");
    int r = connect(fd, (struct sockaddr *)&dst, dl);
    if (r != 0) {
        if (!nb || errno != EINPROGRESS)
            fail("connect: %s", strerror(errno));
        printf("connect=EINPROGRESS\n");
        if (wait_fd(fd, POLLOUT, 10000) <= 0)
            fail("non-blocking connect did not complete within 10 s");
        int e = geti(fd, SOL_SOCKET, SO_ERROR);
        if (e != 0)
            fail("non-blocking connect: SO_ERROR %s", strerror(e));
    } else {
        printf("connect=0\n");
    }
    print_opts(fd, "after");
    struct sockaddr_storage peer;
    socklen_t pl = sizeof peer;
    char p[80] = "error";
    if (getpeername(fd, (struct sockaddr *)&peer, &pl) == 0)
        addr_str(&peer, p, sizeof p);
    printf("getpeername=%s\n", p);
    char err[200] = "";
    int e = echo_once(fd, "socket-options-survive\n", err, sizeof err);
    printf("echo=%s\n", e ? err : "ok");
    print_opts(fd, "end");
    close(fd);
    return 0;
}
