/* Issue 11: libevent (epoll backend) bufferevent connect through proxify, one echo round trip.
 * evloop_libevent IP PORT: prints "libevent-echo-ok" (or "FAIL: ..." and exits 1). */
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char MSG[] = "libevent-echo-ok\n";
static int ok;

static void on_read(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    if (evbuffer_get_length(in) < strlen(MSG))
        return;
    char buf[64] = {0};
    evbuffer_remove(in, buf, strlen(MSG));
    ok = strcmp(buf, MSG) == 0;
    event_base_loopexit(arg, NULL);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    if (what & BEV_EVENT_CONNECTED) {
        bufferevent_write(bev, MSG, strlen(MSG));
        return;
    }
    printf("FAIL: event 0x%x: %s\n", what, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    event_base_loopexit(arg, NULL);
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    struct event_base *base = event_base_new();
    printf("backend=%s\n", event_base_get_method(base));
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &sin.sin_addr);
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(bev, on_read, NULL, on_event, base);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    struct timeval limit = {10, 0};
    bufferevent_set_timeouts(bev, &limit, &limit);
    if (bufferevent_socket_connect(bev, (struct sockaddr *)&sin, sizeof sin) < 0) {
        printf("FAIL: bufferevent_socket_connect\n");
        return 1;
    }
    event_base_dispatch(base);
    bufferevent_free(bev);
    event_base_free(base);
    if (!ok) {
        printf("FAIL: no echo\n");
        return 1;
    }
    printf("%s", MSG);
    return 0;
}
