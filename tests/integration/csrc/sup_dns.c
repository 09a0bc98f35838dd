/* Name look-ups of a statically linked glibc program under the supervisor, built with
 * `cc -static` (glibc's static getaddrinfo asks the resolv.conf nameserver itself):
 *
 *   sup_dns gai NAME PORT MESSAGE
 *       getaddrinfo(NAME, AI_ADDRCONFIG: glibc asks the kernel for the interface addresses
 *       over netlink first), prints "addrs N" and each address ("addr IP"), connects to them
 *       in turn until one takes, prints "peer IP PORT" (getpeername), sends MESSAGE and a
 *       newline and prints what comes back ("echo TEXT"). Exits 3 if no address connects.
 *   sup_dns query NAME WAY
 *       an A query for NAME (and with WAY mmsg, an AAAA query beside it) to the first
 *       nameserver of /etc/resolv.conf, port 53, sent WAY:
 *         send     connect, send()                  (a write on a connected socket)
 *         mmsg     connect, sendmmsg() of both       (glibc's own way)
 *         msg      connect, sendmsg()
 *         sendto   bind to port 0, sendto() the nameserver
 *         unbound  sendto() the nameserver, no bind first
 *         v6mmsg   an AF_INET6 socket connected to the IPv4-mapped nameserver, sendmmsg()
 *       prints the send's result ("sent N" or "sent -1 ERRNO") and, for each reply within
 *       3 s, "reply ID RCODE ANSWERS FIRST-ADDRESS". Exits 4 if a query got no reply.
 *   sup_dns leak IP PORT
 *       sendmmsg() of two datagrams to IP:PORT (not a nameserver): prints "sent ..." as above.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static const char *errname(int e) {
    switch (e) {
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EACCES: return "EACCES";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EINVAL: return "EINVAL";
    case ENOSYS: return "ENOSYS";
    default: return strerror(e);
    }
}

static void show_addr(const char *what, const struct sockaddr *sa) {
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        port = ntohs(a->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        port = ntohs(a->sin6_port);
    }
    printf("%s %s %d\n", what, ip, port);
}

static int gai(const char *name, const char *port, const char *msg) {
    struct addrinfo hints, *res, *p;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    int rc = getaddrinfo(name, port, &hints, &res);
    if (rc != 0) {
        printf("getaddrinfo: %s\n", gai_strerror(rc));
        return 3;
    }
    int n = 0;
    for (p = res; p; p = p->ai_next)
        n++;
    printf("addrs %d\n", n);
    for (p = res; p; p = p->ai_next)
        show_addr("addr", p->ai_addr);
    for (p = res; p; p = p->ai_next) {
        int fd = socket(p->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        if (connect(fd, p->ai_addr, p->ai_addrlen) != 0) {
            printf("connect -1 %s\n", errname(errno));
            close(fd);
            continue;
        }
        struct sockaddr_storage peer;
        socklen_t pl = sizeof peer;
        if (getpeername(fd, (struct sockaddr *)&peer, &pl) == 0)
            show_addr("peer", (struct sockaddr *)&peer);
        char line[512];
        snprintf(line, sizeof line, "%s\n", msg);
        if (write(fd, line, strlen(line)) < 0) {
            close(fd);
            continue;
        }
        struct timeval tv = {5, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char buf[512];
        size_t got = 0;
        while (got < sizeof buf - 1) {
            ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
            if (r <= 0)
                break;
            got += r;
            if (memchr(buf, '\n', got))
                break;
        }
        buf[got] = 0;
        char *nl = strchr(buf, '\n');
        if (nl)
            *nl = 0;
        printf("echo %s\n", buf);
        close(fd);
        freeaddrinfo(res);
        return 0;
    }
    freeaddrinfo(res);
    return 3;
}

/* A standard query for NAME of type QTYPE, id ID, into OUT; returns its length. */
static size_t make_query(const char *name, int qtype, int id, unsigned char *out) {
    unsigned char *p = out;
    *p++ = id >> 8;
    *p++ = id & 0xff;
    *p++ = 0x01; /* RD */
    *p++ = 0;
    *p++ = 0;
    *p++ = 1; /* QDCOUNT */
    memset(p, 0, 6);
    p += 6;
    const char *s = name;
    while (*s) {
        const char *dot = strchr(s, '.');
        size_t l = dot ? (size_t)(dot - s) : strlen(s);
        *p++ = (unsigned char)l;
        memcpy(p, s, l);
        p += l;
        s += l;
        if (*s == '.')
            s++;
    }
    *p++ = 0;
    *p++ = 0;
    *p++ = qtype;
    *p++ = 0;
    *p++ = 1; /* IN */
    return p - out;
}

/* Prints "reply ID RCODE ANSWERS ADDR" for one reply (ADDR: the first A/AAAA, or -). */
static void show_reply(const unsigned char *m, size_t n) {
    if (n < 12) {
        printf("reply short\n");
        return;
    }
    int id = m[0] << 8 | m[1], rcode = m[3] & 0x0f, an = m[6] << 8 | m[7];
    size_t at = 12;
    /* Skip the question (no compression in it). */
    while (at < n && m[at])
        at += m[at] + 1;
    at += 5;
    char ip[INET6_ADDRSTRLEN] = "-";
    for (int i = 0; i < an && at + 12 <= n; i++) {
        if ((m[at] & 0xc0) == 0xc0)
            at += 2;
        else {
            while (at < n && m[at])
                at += m[at] + 1;
            at++;
        }
        if (at + 10 > n)
            break;
        int type = m[at] << 8 | m[at + 1], rdlen = m[at + 8] << 8 | m[at + 9];
        at += 10;
        if (at + rdlen > n)
            break;
        if (type == 1 && rdlen == 4) {
            inet_ntop(AF_INET, m + at, ip, sizeof ip);
            break;
        }
        if (type == 28 && rdlen == 16) {
            inet_ntop(AF_INET6, m + at, ip, sizeof ip);
            break;
        }
        at += rdlen;
    }
    printf("reply %d %d %d %s\n", id, rcode, an, ip);
}

static int nameserver(struct in_addr *ns) {
    FILE *f = fopen("/etc/resolv.conf", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        char ip[64];
        if (sscanf(line, "nameserver %63s", ip) == 1 && inet_pton(AF_INET, ip, ns) == 1) {
            fclose(f);
            return 0;
        }
    }
    if (f)
        fclose(f);
    return -1;
}

static void show_sent(ssize_t r) {
    if (r < 0)
        printf("sent -1 %s\n", errname(errno));
    else
        printf("sent %zd\n", r);
}

static int two_by_mmsg(int fd, unsigned char q[2][300], size_t ql[2], const struct sockaddr *to,
                       socklen_t tl) {
    struct iovec iov[2] = {{q[0], ql[0]}, {q[1], ql[1]}};
    struct mmsghdr mm[2];
    memset(mm, 0, sizeof mm);
    for (int i = 0; i < 2; i++) {
        mm[i].msg_hdr.msg_iov = &iov[i];
        mm[i].msg_hdr.msg_iovlen = 1;
        mm[i].msg_hdr.msg_name = (void *)to;
        mm[i].msg_hdr.msg_namelen = tl;
    }
    int r = sendmmsg(fd, mm, 2, 0);
    show_sent(r);
    if (r == 2)
        printf("lens %u %u\n", mm[0].msg_len, mm[1].msg_len);
    return r;
}

static int query(const char *name, const char *way) {
    struct in_addr ns;
    if (nameserver(&ns) != 0) {
        printf("no nameserver\n");
        return 2;
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(53), .sin_addr = ns};
    struct sockaddr_in6 to6 = {.sin6_family = AF_INET6, .sin6_port = htons(53)};
    memset(&to6.sin6_addr.s6_addr[10], 0xff, 2);
    memcpy(&to6.sin6_addr.s6_addr[12], &ns, 4);
    unsigned char q[2][300];
    size_t ql[2] = {make_query(name, 1, 0x1234, q[0]), make_query(name, 28, 0x5678, q[1])};
    int want = 1;
    int v6 = strcmp(way, "v6mmsg") == 0;
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 2;
    int connected = !strcmp(way, "send") || !strcmp(way, "mmsg") || !strcmp(way, "msg") || v6;
    if (connected) {
        int r = v6 ? connect(fd, (struct sockaddr *)&to6, sizeof to6)
                   : connect(fd, (struct sockaddr *)&to, sizeof to);
        if (r != 0) {
            printf("connect -1 %s\n", errname(errno));
            return 3;
        }
    }
    if (!strcmp(way, "send")) {
        show_sent(send(fd, q[0], ql[0], 0));
    } else if (!strcmp(way, "mmsg") || v6) {
        want = 2;
        two_by_mmsg(fd, q, ql, NULL, 0);
    } else if (!strcmp(way, "msg")) {
        struct iovec iov[2] = {{q[0], 5}, {q[0] + 5, ql[0] - 5}}; /* in two pieces */
        struct msghdr m;
        memset(&m, 0, sizeof m);
        m.msg_iov = iov;
        m.msg_iovlen = 2;
        show_sent(sendmsg(fd, &m, 0));
    } else if (!strcmp(way, "sendto") || !strcmp(way, "unbound")) {
        if (!strcmp(way, "sendto")) {
            struct sockaddr_in any = {.sin_family = AF_INET};
            if (bind(fd, (struct sockaddr *)&any, sizeof any) != 0)
                return 2;
        }
        show_sent(sendto(fd, q[0], ql[0], 0, (struct sockaddr *)&to, sizeof to));
    } else {
        return 2;
    }
    int got = 0;
    while (got < want) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 3000) != 1)
            break;
        unsigned char buf[2048];
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0)
            break;
        show_reply(buf, n);
        got++;
    }
    close(fd);
    return got == want ? 0 : 4;
}

static int leak(const char *ip, int port) {
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, ip, &to.sin_addr) != 1)
        return 2;
    unsigned char q[2][300];
    size_t ql[2] = {make_query("leak.example", 1, 1, q[0]), make_query("leak.example", 28, 2, q[1])};
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    two_by_mmsg(fd, q, ql, (struct sockaddr *)&to, sizeof to);
    close(fd);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc == 5 && !strcmp(argv[1], "gai"))
        return gai(argv[2], argv[3], argv[4]);
    if (argc == 4 && !strcmp(argv[1], "query"))
        return query(argv[2], argv[3]);
    if (argc == 4 && !strcmp(argv[1], "leak"))
        return leak(argv[2], atoi(argv[3]));
    fprintf(stderr, "usage: see the comment at the top of sup_dns.c\n");
    return 2;
}
