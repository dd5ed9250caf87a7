/*
 * sub.c - wsbroker-sub: subscribe to patterns and print one line per
 * message until interrupted, until --count messages have arrived, or until
 * --timeout seconds have passed.
 *
 * The first connection must succeed (else exit 1 at once: a subscriber
 * started against a broker that is down should say so, not hang). After
 * that the library reconnects by itself and resubscribes, and the tool
 * notes on stderr what happened and what may have been missed. stdout is
 * line-buffered, so `wsbroker-sub ... | grep x` sees each message at once.
 * Raw newlines inside a message (JSON whitespace; a JSON string cannot hold
 * one) are printed as spaces, so one message is always one line.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <wsbroker/client.h>

#include "common.h"

typedef enum fmt { FMT_DATA, FMT_JSON, FMT_TOPIC } fmt_t;

typedef struct app {
    uv_loop_t *loop;
    wsc_client_t *c;
    fmt_t fmt;
    uint64_t count, received;
    uint64_t since; /* --since */
    bool has_count;
    bool quiet;
    bool verbose;
    bool has_deadline;
    unsigned timeout_ms;
    uv_timer_t deadline;
    uv_signal_t sigint, sigterm;
    bool ever_open;
    bool finished;
    int code;
    char *out;
    size_t out_cap;
} app_t;

static app_t app;

static void usage(void)
{
    printf("Usage: wsbroker-sub [OPTION]... URL PATTERN...\n"
           "Subscribe to each PATTERN on the wsbroker at URL (ws://host:port/ws, or\n"
           "wss://host:port/ws for TLS) and print one line per message. Patterns:\n"
           "'chat.lobby', 'chat.*' (one segment), 'chat.>' (one or more segments).\n"
           "\n"
           "  -F, --format FMT     data (default): the message's data; a JSON string\n"
           "                       is printed as its text, other values as JSON;\n"
           "                       json: the whole message object as received;\n"
           "                       topic: the topic, a TAB, then the data as above\n"
           "  -c, --count N        exit after N messages\n"
           "      --last N         have the broker replay up to N retained messages of\n"
           "                       each matching topic first (needs a broker started\n"
           "                       with --history)\n"
           "      --since S        have the broker replay retained messages after seq S\n"
           "                       (concrete topics only); a notice says when some of\n"
           "                       them are no longer retained\n"
           "      --epoch E        the epoch S belongs to (from an earlier subscription;\n"
           "                       another epoch means the seqs restarted)\n"
           "      --no-reconnect   exit 1 when the connection is lost (default: reconnect\n"
           "                       and subscribe again, with backoff; concrete topics\n"
           "                       resume after the last seq received)\n" CLI_CONN_HELP
           "  -w, --timeout S      give up if not connected within S seconds (default\n"
           "                       10); when given, also stop after S seconds in all:\n"
           "                       exit 0, or 1 if --count messages have not all arrived\n"
           "  -q, --quiet          no notices on stderr about reconnects and missed\n"
           "                       messages\n"
           "  -h, --help           show this help and exit\n"
           "  -V, --version        show the version and exit\n"
           "\n"
           "Exit status: 0 after --count messages, --timeout or SIGINT/SIGTERM; 1 when\n"
           "the broker cannot be reached, refuses a subscription, or the connection is\n"
           "lost with --no-reconnect; 2 for a usage error.\n"
           "\n"
           "Examples:\n"
           "  wsbroker-sub ws://localhost:8080/ws 'chat.>'\n"
           "  wsbroker-sub --format topic ws://localhost:8080/ws 'sensors.*' 'alerts.>'\n"
           "  wsbroker-sub --count 1 --timeout 5 ws://localhost:8080/ws jobs.done\n"
           "  wsbroker-sub --last 10 --cafile ca.pem wss://broker.example:8443/ws 'chat.>'\n");
    exit(CLI_OK);
}

static void on_closed(uv_handle_t *h)
{
    (void)h;
}

static void finish(int code)
{
    if (app.finished)
        return;
    app.finished = true;
    app.code = code;
    fflush(stdout);
    wsc_close(app.c);
    uv_close((uv_handle_t *)&app.deadline, on_closed);
    uv_close((uv_handle_t *)&app.sigint, on_closed);
    uv_close((uv_handle_t *)&app.sigterm, on_closed);
}

/* Write p[0..n) with raw CR/LF turned into spaces, then a newline. */
static bool put_line(const char *a, size_t an, const char *b, size_t bn)
{
    size_t n = an + bn + 2;
    if (n > app.out_cap) {
        char *o = realloc(app.out, n);
        if (o == NULL)
            return false;
        app.out = o;
        app.out_cap = n;
    }
    char *o = app.out;
    size_t k = 0;
    for (size_t i = 0; i < an; i++)
        o[k++] = a[i] == '\n' || a[i] == '\r' ? ' ' : a[i];
    if (b != NULL) {
        o[k++] = '\t';
        for (size_t i = 0; i < bn; i++)
            o[k++] = b[i] == '\n' || b[i] == '\r' ? ' ' : b[i];
    }
    o[k++] = '\n';
    return fwrite(o, 1, k, stdout) == k && fflush(stdout) == 0;
}

/* The data as a person reads it: what `wsbroker-pub TOPIC hi` sent as the
 * JSON string "hi" prints as hi; any other value prints as its JSON. The
 * text is valid until the next call. */
static const char *data_text(const wsc_message_t *m, size_t *len)
{
    static cJSON *last;
    cJSON_Delete(last);
    last = NULL;
    *len = m->data_len;
    if (m->data_len == 0 || m->data[0] != '"')
        return m->data;
    last = cJSON_ParseWithLength(m->data, m->data_len);
    if (!cJSON_IsString(last))
        return m->data;
    *len = strlen(last->valuestring);
    return last->valuestring;
}

static void on_message(wsc_client_t *c, const wsc_message_t *m, void *user)
{
    bool ok;
    size_t dlen;
    const char *data;
    (void)c;
    (void)user;
    if (app.finished)
        return;
    switch (app.fmt) {
    case FMT_JSON:
        ok = put_line(m->raw, m->raw_len, NULL, 0);
        break;
    case FMT_TOPIC:
        data = data_text(m, &dlen);
        ok = put_line(m->topic, strlen(m->topic), data, dlen);
        break;
    default:
        data = data_text(m, &dlen);
        ok = put_line(data, dlen, NULL, 0);
        break;
    }
    if (!ok) {
        /* The reader went away (EPIPE): nothing more to do. */
        if (errno != EPIPE)
            cli_msg("writing standard output: %s", strerror(errno));
        finish(errno == EPIPE ? CLI_OK : CLI_FAIL);
        return;
    }
    app.received++;
    if (app.has_count && app.received >= app.count)
        finish(CLI_OK);
}

static void on_state(wsc_client_t *c, wsc_state_t st, int err, const char *detail, void *user)
{
    char text[512];
    (void)c;
    (void)user;
    if (app.finished)
        return;
    switch (st) {
    case WSC_OPEN:
        if (app.ever_open && !app.quiet)
            cli_msg("reconnected (%s)", detail);
        else if (!app.ever_open && app.verbose)
            cli_msg("%s", detail);
        app.ever_open = true;
        break;
    case WSC_RECONNECTING:
        if (!app.ever_open) {
            cli_strip_retry(detail, text, sizeof(text));
            cli_msg("cannot connect: %s%s", text, cli_hint(err, text));
            finish(CLI_FAIL);
        } else if (!app.quiet) {
            cli_msg("%s", detail);
        }
        break;
    case WSC_CLOSED:
        cli_msg("%s: %s%s", app.ever_open ? "connection lost" : "cannot connect", detail,
                app.ever_open ? "" : cli_hint(err, detail));
        finish(CLI_FAIL);
        break;
    case WSC_CONNECTING:
        break;
    }
}

static void on_subscribed(wsc_client_t *c, const wsc_result_t *r, void *user)
{
    (void)c;
    (void)user;
    if (app.finished)
        return;
    if (r->err == WSC_OK) {
        if (r->recovered == 0 && !app.quiet)
            cli_msg("'%s': the broker cannot replay everything after seq %llu (the topic is "
                    "at seq %llu, epoch %s)",
                    r->topic, (unsigned long long)app.since, (unsigned long long)r->seq, r->epoch);
        else if (app.verbose && r->epoch[0] != '\0')
            cli_msg("'%s': subscribed at seq %llu, epoch %s", r->topic, (unsigned long long)r->seq,
                    r->epoch);
        return;
    }
    if (r->err == WSC_E_BROKER)
        cli_msg("the broker refused the subscription to '%s': %s: %s", r->topic, r->code,
                r->message);
    else
        cli_msg("subscription to '%s' failed: %s", r->topic, r->message);
    finish(CLI_FAIL);
}

static void on_error(wsc_client_t *c, const wsc_result_t *r, void *user)
{
    (void)c;
    (void)user;
    if (app.finished)
        return;
    if (r->topic[0] != '\0') {
        cli_msg("'%s': %s: %s", r->topic, r->code, r->message);
        finish(CLI_FAIL); /* a subscription is gone for good */
    } else if (!app.quiet) {
        cli_msg("broker error: %s: %s", r->code, r->message);
    }
}

static void on_stale(wsc_client_t *c, const wsc_stale_t *s, void *user)
{
    (void)c;
    (void)user;
    if (app.quiet || app.finished)
        return;
    switch (s->reason) {
    case WSC_STALE_NOT_RECOVERED:
        if (strcmp(s->old_epoch, s->epoch) != 0)
            cli_msg("%s: messages after seq %llu are lost (the broker restarted; its seq now "
                    "%llu in a new epoch)",
                    s->pattern, (unsigned long long)s->last_seq, (unsigned long long)s->seq);
        else
            cli_msg("%s: messages after seq %llu up to %llu could not be replayed", s->pattern,
                    (unsigned long long)s->last_seq, (unsigned long long)s->seq);
        break;
    case WSC_STALE_GAP:
        cli_msg("%s: seq jumped from %llu to %llu (messages dropped)", s->pattern,
                (unsigned long long)s->last_seq, (unsigned long long)s->seq);
        break;
    case WSC_STALE_PATTERN:
        cli_msg("%s: messages published while disconnected are lost", s->pattern);
        break;
    }
}

static void on_deadline(uv_timer_t *t)
{
    (void)t;
    if (!app.ever_open) {
        cli_msg("cannot connect: no connection to the broker within %.3g s",
                app.timeout_ms / 1000.0);
        finish(CLI_FAIL);
    } else if (app.has_count) {
        cli_msg("timed out: %llu of %llu messages received", (unsigned long long)app.received,
                (unsigned long long)app.count);
        finish(CLI_FAIL);
    } else {
        finish(CLI_OK);
    }
}

static void on_signal(uv_signal_t *s, int signum)
{
    (void)s;
    (void)signum;
    finish(CLI_OK);
}

int main(int argc, char **argv)
{
    enum { OPT_LAST = 256, OPT_SINCE, OPT_EPOCH, OPT_NO_RECONNECT };
    static const struct option opts[] = {
        {"format", required_argument, NULL, 'F'},
        {"count", required_argument, NULL, 'c'},
        {"last", required_argument, NULL, OPT_LAST},
        {"since", required_argument, NULL, OPT_SINCE},
        {"epoch", required_argument, NULL, OPT_EPOCH},
        {"no-reconnect", no_argument, NULL, OPT_NO_RECONNECT},
        {"token", required_argument, NULL, 't'},
        {"timeout", required_argument, NULL, 'w'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        CLI_CONN_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    wsc_sub_opts_t so = WSC_SUB_OPTS_INIT;
    const char *token = getenv("WSBROKER_TOKEN");
    bool reconnect = true;
    unsigned timeout_ms = 10000;
    wsc_options_t o;
    wsc_error_t err;
    int ch;
    cli_init("wsbroker-sub");
    wsc_options_init(&o);
    while ((ch = getopt_long(argc, argv, "F:c:t:w:qvhV", opts, NULL)) != -1) {
        if (cli_conn_option(ch, optarg, &o))
            continue;
        switch (ch) {
        case 'F':
            if (strcmp(optarg, "data") == 0)
                app.fmt = FMT_DATA;
            else if (strcmp(optarg, "json") == 0)
                app.fmt = FMT_JSON;
            else if (strcmp(optarg, "topic") == 0)
                app.fmt = FMT_TOPIC;
            else
                cli_usage_error("--format: '%s' is not data, json or topic", optarg);
            break;
        case 'c':
            app.count = cli_uint("--count", optarg);
            app.has_count = true;
            if (app.count == 0)
                cli_usage_error("--count: must be at least 1");
            break;
        case OPT_LAST:
            so.last = (int64_t)cli_uint("--last", optarg);
            break;
        case OPT_SINCE:
            so.since = (int64_t)cli_uint("--since", optarg);
            app.since = (uint64_t)so.since;
            break;
        case OPT_EPOCH:
            so.epoch = optarg;
            break;
        case OPT_NO_RECONNECT:
            reconnect = false;
            break;
        case 't':
            token = optarg;
            break;
        case 'w':
            timeout_ms = cli_seconds("--timeout", optarg);
            app.has_deadline = true;
            break;
        case 'q':
            app.quiet = true;
            break;
        case 'v':
            app.verbose = true;
            break;
        case 'h':
            usage();
            break;
        case 'V':
            cli_version();
            break;
        default:
            cli_usage_error("unknown option");
        }
    }
    if (argc - optind < 2)
        cli_usage_error("missing %s", argc - optind == 0 ? "URL and PATTERN" : "PATTERN");
    if (so.epoch != NULL && so.since < 0)
        cli_usage_error("--epoch needs --since");
    if (token != NULL && token[0] == '\0')
        token = NULL;
    const char *url = argv[optind];

    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    app.loop = uv_default_loop();
    uv_timer_init(app.loop, &app.deadline);
    uv_signal_init(app.loop, &app.sigint);
    uv_signal_init(app.loop, &app.sigterm);
    uv_signal_start(&app.sigint, on_signal, SIGINT);
    uv_signal_start(&app.sigterm, on_signal, SIGTERM);
    app.timeout_ms = timeout_ms;
    if (app.has_deadline)
        uv_timer_start(&app.deadline, on_deadline, timeout_ms, 0);

    o.token = token;
    o.reconnect = reconnect;
    o.connect_timeout_ms = timeout_ms;
    o.on_state = on_state;
    o.on_message = on_message;
    o.on_error = on_error;
    o.on_stale = on_stale;
    app.c = wsc_connect(app.loop, url, &o, &err);
    if (app.c == NULL) {
        if (err.code == WSC_E_INVAL)
            cli_usage_error("%s", err.text);
        cli_msg("%s", err.text);
        return CLI_FAIL;
    }
    for (int i = optind + 1; i < argc && !app.finished; i++) {
        if (wsc_subscribe(app.c, argv[i], &so, on_subscribed, NULL) != WSC_OK) {
            cli_msg("'%s': %s", argv[i], wsc_last_error(app.c));
            finish(CLI_USAGE);
        }
    }
    uv_run(app.loop, UV_RUN_DEFAULT);
    uv_loop_close(app.loop);
    free(app.out);
    return app.code;
}
