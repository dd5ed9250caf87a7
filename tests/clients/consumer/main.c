/*
 * main.c - a program outside the wsbroker tree, built against the installed
 * client library: subscribe on one connection, publish on another (async
 * API on the caller's loop), read the message back with the blocking API.
 *
 *   consumer ws://127.0.0.1:PORT/ws            prints "ok" and exits 0
 *   consumer wss://127.0.0.1:PORT/ws CA.pem    the same over TLS
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <wsbroker/client.h>

static int acked = -1;

static void on_ack(wsc_client_t *c, const wsc_result_t *r, void *user)
{
    (void)user;
    acked = r->err;
    if (r->err != WSC_OK)
        fprintf(stderr, "publish: %s %s\n", r->code, r->message);
    wsc_close(c);
}

int main(int argc, char **argv)
{
    wsc_error_t err;
    wsc_result_t r;
    wsc_message_t m;
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: consumer URL [CA_FILE]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    wsc_options_t o;
    wsc_options_init(&o);
    o.ca_file = argc == 3 ? argv[2] : NULL;
    o.deflate_send = true;

    wsc_sync_t *sub = wsc_sync_connect(argv[1], &o, 5000, &err);
    if (sub == NULL) {
        fprintf(stderr, "connect: %s\n", err.text);
        return 1;
    }
    if (wsc_sync_subscribe(sub, "consumer.t", NULL, 5000, &r) != WSC_OK) {
        fprintf(stderr, "subscribe: %s\n", wsc_sync_error(sub));
        return 1;
    }

    uv_loop_t loop;
    uv_loop_init(&loop);
    wsc_client_t *pub = wsc_connect(&loop, argv[1], &o, &err);
    if (pub == NULL || wsc_publish(pub, "consumer.t", "{\"n\": 1}", 8, on_ack, NULL) != WSC_OK) {
        fprintf(stderr, "publish: %s\n", pub == NULL ? err.text : wsc_last_error(pub));
        return 1;
    }
    uv_run(&loop, UV_RUN_DEFAULT); /* until on_ack has closed the client */
    uv_loop_close(&loop);
    if (acked != WSC_OK)
        return 1;

    if (wsc_sync_next(sub, 5000, &m) != WSC_OK) {
        fprintf(stderr, "next: %s\n", wsc_sync_error(sub));
        return 1;
    }
    if (strcmp(m.topic, "consumer.t") != 0 || m.data_len != 8 || memcmp(m.data, "{\"n\": 1}", 8)) {
        fprintf(stderr, "unexpected message %s %.*s\n", m.topic, (int)m.data_len, m.data);
        return 1;
    }
    const char *ext = wsc_extensions(wsc_sync_client(sub));
    if (strncmp(ext, "permessage-deflate", 18) != 0) {
        fprintf(stderr, "permessage-deflate not negotiated (\"%s\")\n", ext);
        return 1;
    }
    printf("ok (%s%s%s)\n", WSC_VERSION, argc == 3 ? ", " : "",
           argc == 3 ? wsc_tls_version(wsc_sync_client(sub)) : "");
    wsc_sync_close(sub);
    return 0;
}
