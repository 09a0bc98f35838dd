/* UDP from a statically linked program under the supervisor (issue 13), built with
 * `cc -static`:
 *
 *   sup_udp IP PORT
 *
 * sendto(IP:PORT), connect(IP:PORT) + send, sendmsg(IP:PORT): prints each result ("-1 NAME"
 * or the byte count); then a datagram to a socket of its own on 127.0.0.1 and back
 * ("loopback ok"). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <stdlib.h>
#include <unistd.h>

static const char *name(int e) {
    switch (e) {
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case ENOSYS: return "ENOSYS";
    default: return strerror(e);
    }
}

static void show(const char *what, ssize_t r) {
    if (r < 0)
        printf("%s -1 %s\n", what, name(errno));
    else
        printf("%s %zd\n", what, r);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc != 3)
        return 2;
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &to.sin_addr) != 1)
        return 2;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    show("sendto", sendto(s, "x", 1, 0, (struct sockaddr *)&to, sizeof to));
    struct iovec v = {.iov_base = "y", .iov_len = 1};
    struct msghdr m = {.msg_name = &to, .msg_namelen = sizeof to, .msg_iov = &v, .msg_iovlen = 1};
    show("sendmsg", sendmsg(s, &m, 0));
    int c = socket(AF_INET, SOCK_DGRAM, 0);
    int rc = connect(c, (struct sockaddr *)&to, sizeof to);
    show("connect", rc);
    if (rc == 0)
        show("send", send(c, "z", 1, 0));
    /* Loopback: direct, as without proxify. */
    int l = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in lo = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof lo;
    bind(l, (struct sockaddr *)&lo, sizeof lo);
    getsockname(l, (struct sockaddr *)&lo, &len);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(l, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[8];
    if (sendto(s, "lo", 2, 0, (struct sockaddr *)&lo, sizeof lo) == 2 && recv(l, buf, sizeof buf, 0) == 2)
        printf("loopback ok\n");
    else
        printf("loopback failed %s\n", name(errno));
    return 0;
}
