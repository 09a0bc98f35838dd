/* Issue 11: GLib/GIO (GMainLoop, poll) GSocketClient async connect by name through proxify,
 * one echo round trip. evloop_gio HOST PORT: prints "gio-echo-ok" (or "FAIL: ..."). */
#include <gio/gio.h>
#include <stdio.h>
#include <string.h>

static const char MSG[] = "gio-echo-ok\n";
static GMainLoop *loop;
static int ok;

static void on_connect(GObject *src, GAsyncResult *res, gpointer data)
{
    GError *err = NULL;
    GSocketConnection *c = g_socket_client_connect_to_host_finish(G_SOCKET_CLIENT(src), res, &err);
    if (!c) {
        printf("FAIL: connect: %s\n", err->message);
        g_main_loop_quit(loop);
        return;
    }
    GOutputStream *out = g_io_stream_get_output_stream(G_IO_STREAM(c));
    GInputStream *in = g_io_stream_get_input_stream(G_IO_STREAM(c));
    gsize n = 0;
    if (!g_output_stream_write_all(out, MSG, strlen(MSG), &n, NULL, &err)) {
        printf("FAIL: write: %s\n", err->message);
    } else {
        char buf[64] = {0};
        if (!g_input_stream_read_all(in, buf, strlen(MSG), &n, NULL, &err))
            printf("FAIL: read: %s\n", err->message);
        else
            ok = strcmp(buf, MSG) == 0;
    }
    g_object_unref(c);
    g_main_loop_quit(loop);
}

static gboolean on_timeout(gpointer data)
{
    printf("FAIL: timed out\n");
    g_main_loop_quit(loop);
    return G_SOURCE_REMOVE;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    loop = g_main_loop_new(NULL, FALSE);
    GSocketClient *cl = g_socket_client_new();
    g_socket_client_set_timeout(cl, 10);
    g_socket_client_connect_to_host_async(cl, argv[1], atoi(argv[2]), NULL, on_connect, NULL);
    g_timeout_add_seconds(15, on_timeout, NULL);
    g_main_loop_run(loop);
    g_object_unref(cl);
    if (!ok) {
        printf("FAIL: no echo\n");
        return 1;
    }
    printf("%s", MSG);
    return 0;
}
