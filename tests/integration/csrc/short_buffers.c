/* Short address buffers and aliased fd_sets, which C allows and proxify must honour.
 *
 *   short_buffers dns NAMESERVER NAME
 *     sends a DNS query for NAME (type A) to NAMESERVER:53 and receives the answer with
 *     recvfrom and recvmsg into a 4-byte address buffer followed by a canary; prints
 *     "recvfrom alen=N canary=ok|BROKEN" and the same for recvmsg. The kernel truncates the
 *     address to the 4 bytes and reports its full length; nothing may be written past them.
 *
 *   short_buffers select IP PORT
 *     a non-blocking connect to IP:PORT, then select(n, &s, &s, NULL) with ONE fd_set passed
 *     as both the read and the write set until the fd is in it; prints "select connected" or
 *     "select failed ERRNO". */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int query(unsigned char *q, const char *name, unsigned short id) {
    int n = 0;
    q[n++] = id >> 8; q[n++] = id & 0xff;
    q[n++] = 0x01; q[n++] = 0x00;           /* RD */
    q[n++] = 0; q[n++] = 1;                 /* QDCOUNT 1 */
    memset(q + n, 0, 6); n += 6;
    const char *p = name;
    while (*p) {
        const char *dot = strchr(p, '.');
        int len = dot ? (int)(dot - p) : (int)strlen(p);
        q[n++] = (unsigned char)len;
        memcpy(q + n, p, len); n += len;
        p += len;
        if (*p == '.') p++;
    }
    q[n++] = 0;
    q[n++] = 0; q[n++] = 1;                 /* A */
    q[n++] = 0; q[n++] = 1;                 /* IN */
    return n;
}

struct guarded { unsigned char addr[4]; unsigned char canary[60]; };

/* The canary starts with 127.0.0.1, where a sockaddr_in's address would be: code that read
 * the full reported length would see a loopback source and could rewrite it. */
static const unsigned char LOOP[4] = {127, 0, 0, 1};

static void arm(struct guarded *g) {
    memset(g, 0xAA, sizeof *g);
    memcpy(g->canary, LOOP, sizeof LOOP);
}

static const char *intact(const struct guarded *g) {
    if (memcmp(g->canary, LOOP, sizeof LOOP) != 0) return "BROKEN";
    for (size_t i = sizeof LOOP; i < sizeof g->canary; i++)
        if (g->canary[i] != 0xAA) return "BROKEN";
    return "ok";
}

static int dns(const char *ns, const char *name) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(53)};
    inet_pton(AF_INET, ns, &to.sin_addr);
    struct timeval tv = {5, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    unsigned char q[512], r[512];
    for (int round = 0; round < 2; round++) {
        int n = query(q, name, 0x5100 + round);
        if (sendto(s, q, n, 0, (struct sockaddr *)&to, sizeof to) != n) {
            printf("sendto failed %s\n", strerror(errno));
            return 1;
        }
        struct guarded g;
        arm(&g);
        socklen_t alen = sizeof g.addr;
        ssize_t got;
        if (round == 0) {
            got = recvfrom(s, r, sizeof r, 0, (struct sockaddr *)&g, &alen);
        } else {
            struct iovec iov = {r, sizeof r};
            struct msghdr m = {.msg_name = &g, .msg_namelen = alen, .msg_iov = &iov,
                               .msg_iovlen = 1};
            got = recvmsg(s, &m, 0);
            alen = m.msg_namelen;
        }
        if (got < 12) {
            printf("%s failed %s\n", round ? "recvmsg" : "recvfrom", strerror(errno));
            return 1;
        }
        printf("%s alen=%u canary=%s\n", round ? "recvmsg" : "recvfrom", (unsigned)alen,
               intact(&g));
    }
    return 0;
}

static int sel(const char *ip, int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    fcntl(s, F_SETFL, O_NONBLOCK);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &to.sin_addr);
    if (connect(s, (struct sockaddr *)&to, sizeof to) != 0 && errno != EINPROGRESS) {
        printf("select failed connect %s\n", strerror(errno));
        return 1;
    }
    for (int i = 0; i < 100; i++) {
        fd_set set;
        FD_ZERO(&set);
        FD_SET(s, &set);
        struct timeval tv = {0, 100000};
        int n = select(s + 1, &set, &set, NULL, &tv);
        if (n < 0) {
            printf("select failed %s\n", strerror(errno));
            return 1;
        }
        if (n > 0 && FD_ISSET(s, &set)) {
            int err = 0;
            socklen_t l = sizeof err;
            getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &l);
            if (err) {
                printf("select failed %s\n", strerror(err));
                return 1;
            }
            printf("select connected\n");
            return 0;
        }
    }
    printf("select failed timeout\n");
    return 1;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "dns") == 0) return dns(argv[2], argv[3]);
    if (argc == 4 && strcmp(argv[1], "select") == 0) return sel(argv[2], atoi(argv[3]));
    fprintf(stderr, "usage: short_buffers dns NAMESERVER NAME | select IP PORT\n");
    return 2;
}
