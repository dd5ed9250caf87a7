/*
 * pub.c - wsbroker-pub: publish one message, or one per line of standard
 * input, and wait until the broker has acknowledged every one.
 *
 * Input is read with uv_fs_read (works for pipes, terminals and files
 * alike) while the loop keeps the connection alive. At most WINDOW
 * publishes are unacknowledged at once; reading pauses until acks arrive,
 * so a large pipe streams at the broker's pace in bounded memory.
 *
 * The tool never reconnects: a lost connection is an error (exit 1), as is
 * any publish the broker refuses. --timeout bounds every wait for the
 * broker (connecting, each acknowledgement), not the time spent waiting
 * for input, so `tail -f log | wsbroker-pub URL topic` runs indefinitely.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wsbroker/client.h>

#include "common.h"

#define WINDOW       256
#define PUB_LINE_MAX (16u << 20)
#define READ_BUF     65536

typedef struct app {
    uv_loop_t *loop;
    wsc_client_t *c;
    const char *topic;
    bool json;
    bool verbose;
    unsigned timeout_ms;
    uv_timer_t timer; /* waiting for the broker */
    bool open;
    bool conn_failed; /* connection error already reported */
    bool stop;        /* no more input will be published */
    bool finished;
    int code;

    bool from_stdin;
    uv_fs_t rreq;
    bool reading; /* a read is outstanding */
    bool eof;
    char rbuf[READ_BUF];
    size_t roff, rlen; /* unprocessed input in rbuf */
    char *line;        /* partial line carried between reads */
    size_t line_len, line_cap;
    uint64_t lineno;
    uint64_t sent, acked;
} app_t;

static app_t app;

static void usage(void)
{
    printf("Usage: wsbroker-pub [OPTION]... URL TOPIC [DATA]\n"
           "Publish DATA to TOPIC on the wsbroker at URL (ws://host:port/ws, or\n"
           "wss://host:port/ws for TLS) and wait until the broker has acknowledged it.\n"
           "Without DATA, or with DATA '-', publish one message per line of standard\n"
           "input (empty lines are skipped).\n"
           "\n"
           "Each message is sent as a JSON string, unless --json is given.\n"
           "\n"
           "  -j, --json           DATA (or each line) is a JSON value, sent as is;\n"
           "                       invalid JSON is an error\n" CLI_CONN_HELP
           "  -w, --timeout S      give up when connecting, or waiting for an\n"
           "                       acknowledgement, takes longer than S seconds\n"
           "                       (default 10)\n"
           "  -h, --help           show this help and exit\n"
           "  -V, --version        show the version and exit\n"
           "\n"
           "Exit status: 0 when every message was acknowledged; 1 when the broker cannot\n"
           "be reached, the connection is lost, or the broker refuses a message; 2 for a\n"
           "usage error (including invalid --json DATA).\n"
           "\n"
           "Examples:\n"
           "  wsbroker-pub ws://localhost:8080/ws chat.lobby 'hello'\n"
           "  wsbroker-pub --json ws://localhost:8080/ws sensors.t1 '{\"celsius\":21.5}'\n"
           "  tail -f app.log | wsbroker-pub ws://localhost:8080/ws logs.app\n"
           "  WSBROKER_TOKEN=$(wsbroker token --secret S --publish 'chat.>') \\\n"
           "    wsbroker-pub --cafile ca.pem wss://broker.example:8443/ws chat.lobby hi\n");
    exit(CLI_OK);
}

static void on_timeout(uv_timer_t *t);
static void pump(void);

/* Arm the timeout while something is expected from the broker. progress:
 * something just arrived, so the wait starts over. */
static void update_timer(bool progress)
{
    bool waiting = !app.finished && (!app.open || wsc_pending(app.c) > 0);
    if (!waiting)
        uv_timer_stop(&app.timer);
    else if (progress || !uv_is_active((uv_handle_t *)&app.timer))
        uv_timer_start(&app.timer, on_timeout, app.timeout_ms, 0);
}

/* End the run with code (the first failure's code wins). */
static void finish(int code)
{
    if (app.finished)
        return;
    app.finished = true;
    app.code = code;
    app.stop = true;
    uv_timer_stop(&app.timer);
    uv_close((uv_handle_t *)&app.timer, NULL);
    wsc_close(app.c);
    if (app.reading) {
        /* A read of stdin is blocked in the thread pool (a terminal, or a
         * pipe nobody writes to) and cannot be canceled: leave now. */
        fflush(stdout);
        exit(code);
    }
}

static void maybe_done(void)
{
    if (!app.finished && app.stop && wsc_pending(app.c) == 0)
        finish(app.code);
}

static void on_timeout(uv_timer_t *t)
{
    (void)t;
    if (!app.open)
        cli_msg("no connection to the broker within %.3g s", app.timeout_ms / 1000.0);
    else
        cli_msg("no acknowledgement from the broker within %.3g s (%zu message%s waiting)",
                app.timeout_ms / 1000.0, wsc_pending(app.c), wsc_pending(app.c) == 1 ? "" : "s");
    finish(CLI_FAIL);
}

static void on_ack(wsc_client_t *c, const wsc_result_t *r, void *user)
{
    uint64_t line = (uint64_t)(uintptr_t)user;
    char where[48];
    (void)c;
    if (line > 0)
        snprintf(where, sizeof(where), "line %llu", (unsigned long long)line);
    else
        snprintf(where, sizeof(where), "the message");
    if (r->err == WSC_OK) {
        app.acked++;
    } else if (r->err == WSC_E_BROKER) {
        cli_msg("the broker refused %s (topic '%s'): %s: %s", where, r->topic, r->code, r->message);
        app.stop = true;
        app.code = CLI_FAIL;
    } else if (!app.conn_failed && !app.finished) {
        cli_msg("%s was not published: %s", where, r->message);
        app.stop = true;
        app.code = CLI_FAIL;
    }
    update_timer(true);
    if (app.from_stdin && !app.stop && !app.finished)
        pump();
    maybe_done();
}

static void on_state(wsc_client_t *c, wsc_state_t st, int err, const char *detail, void *user)
{
    (void)c;
    (void)user;
    if (st == WSC_OPEN) {
        app.open = true;
        if (app.verbose)
            cli_msg("%s", detail);
        update_timer(true);
    } else if (st == WSC_CLOSED && !app.finished) {
        if (app.open)
            cli_msg("connection lost: %s", detail);
        else
            cli_msg("cannot connect: %s%s", detail, cli_hint(err, detail));
        app.conn_failed = true;
        app.open = false;
        finish(CLI_FAIL);
    }
}

/* Publish one message. line is 0 for DATA from the command line. Returns
 * false (after reporting) if it could not be queued. */
static bool publish(const char *p, size_t n, uint64_t line)
{
    void *user = (void *)(uintptr_t)line;
    int rc = app.json ? wsc_publish(app.c, app.topic, p, n, on_ack, user)
                      : wsc_publish_text(app.c, app.topic, p, n, on_ack, user);
    if (rc == WSC_OK) {
        app.sent++;
        update_timer(false);
        return true;
    }
    if (app.finished || app.conn_failed)
        return false;
    if (line == 0 && rc == WSC_E_INVAL) {
        cli_msg("DATA: %s", wsc_last_error(app.c));
        finish(CLI_USAGE);
    } else {
        if (line > 0)
            cli_msg("line %llu: %s", (unsigned long long)line, wsc_last_error(app.c));
        else
            cli_msg("%s", wsc_last_error(app.c));
        app.stop = true;
        app.code = CLI_FAIL;
        maybe_done();
    }
    return false;
}

/* One complete input line (without its newline). */
static void input_line(char *p, size_t n)
{
    app.lineno++;
    if (n > 0 && p[n - 1] == '\r')
        n--;
    if (n == 0)
        return;
    publish(p, n, app.lineno);
}

static bool append_line(const char *p, size_t n)
{
    if (app.line_len + n > PUB_LINE_MAX) {
        cli_msg("line %llu is longer than %u bytes", (unsigned long long)app.lineno + 1,
                PUB_LINE_MAX);
        app.stop = true;
        app.code = CLI_FAIL;
        maybe_done();
        return false;
    }
    if (app.line_len + n > app.line_cap) {
        size_t cap = app.line_cap ? app.line_cap : 4096;
        while (cap < app.line_len + n)
            cap *= 2;
        char *l = realloc(app.line, cap);
        if (l == NULL) {
            cli_msg("out of memory");
            finish(CLI_FAIL);
            return false;
        }
        app.line = l;
        app.line_cap = cap;
    }
    memcpy(app.line + app.line_len, p, n);
    app.line_len += n;
    return true;
}

static void start_read(void);

/* Publish buffered input while the window has room, then read more. */
static void pump(void)
{
    while (!app.stop && app.roff < app.rlen && wsc_pending(app.c) < WINDOW) {
        char *p = app.rbuf + app.roff;
        size_t avail = app.rlen - app.roff;
        char *nl = memchr(p, '\n', avail);
        if (nl == NULL) {
            if (append_line(p, avail))
                app.roff = app.rlen;
            break;
        }
        size_t n = (size_t)(nl - p);
        app.roff += n + 1;
        if (app.line_len > 0) {
            if (!append_line(p, n))
                break;
            size_t len = app.line_len;
            app.line_len = 0;
            input_line(app.line, len);
        } else {
            input_line(p, n);
        }
    }
    if (app.stop || app.finished) {
        maybe_done();
        return;
    }
    if (app.roff == app.rlen && !app.eof && !app.reading)
        start_read();
}

static void on_read(uv_fs_t *req)
{
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    app.reading = false;
    if (app.finished)
        return;
    if (n < 0) {
        cli_msg("reading standard input: %s", uv_strerror((int)n));
        app.stop = true;
        app.code = CLI_FAIL;
        maybe_done();
        return;
    }
    if (n == 0) {
        app.eof = true;
        if (app.line_len > 0) {
            size_t len = app.line_len;
            app.line_len = 0;
            input_line(app.line, len);
        }
        app.stop = true;
        maybe_done();
        return;
    }
    app.roff = 0;
    app.rlen = (size_t)n;
    pump();
}

static void start_read(void)
{
    uv_buf_t b = uv_buf_init(app.rbuf, sizeof(app.rbuf));
    int r = uv_fs_read(app.loop, &app.rreq, 0, &b, 1, -1, on_read);
    if (r < 0) {
        cli_msg("reading standard input: %s", uv_strerror(r));
        app.stop = true;
        app.code = CLI_FAIL;
        maybe_done();
        return;
    }
    app.reading = true;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"token", required_argument, NULL, 't'},
        {"timeout", required_argument, NULL, 'w'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        CLI_CONN_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    const char *token = getenv("WSBROKER_TOKEN");
    wsc_options_t o;
    wsc_error_t err;
    int ch;
    cli_init("wsbroker-pub");
    wsc_options_init(&o);
    app.timeout_ms = 10000;
    while ((ch = getopt_long(argc, argv, "jt:w:vhV", opts, NULL)) != -1) {
        if (cli_conn_option(ch, optarg, &o))
            continue;
        switch (ch) {
        case 'j':
            app.json = true;
            break;
        case 't':
            token = optarg;
            break;
        case 'v':
            app.verbose = true;
            break;
        case 'w':
            app.timeout_ms = cli_seconds("--timeout", optarg);
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
    int nargs = argc - optind;
    if (nargs < 2)
        cli_usage_error("missing %s", nargs == 0 ? "URL and TOPIC" : "TOPIC");
    if (nargs > 3)
        cli_usage_error("too many arguments (quote DATA that contains spaces)");
    const char *url = argv[optind];
    app.topic = argv[optind + 1];
    const char *data = nargs == 3 ? argv[optind + 2] : NULL;
    app.from_stdin = data == NULL || strcmp(data, "-") == 0;
    if (token != NULL && token[0] == '\0')
        token = NULL;

    signal(SIGPIPE, SIG_IGN);
    app.loop = uv_default_loop();
    uv_timer_init(app.loop, &app.timer);

    o.token = token;
    o.reconnect = false;
    o.connect_timeout_ms = app.timeout_ms;
    o.on_state = on_state;
    app.c = wsc_connect(app.loop, url, &o, &err);
    if (app.c == NULL) {
        if (err.code == WSC_E_INVAL)
            cli_usage_error("%s", err.text);
        cli_msg("%s", err.text);
        return CLI_FAIL;
    }
    update_timer(true);
    if (app.from_stdin) {
        start_read();
    } else {
        publish(data, strlen(data), 0);
        app.stop = true;
        maybe_done();
    }
    uv_run(app.loop, UV_RUN_DEFAULT);
    uv_loop_close(app.loop);
    free(app.line);
    return app.code;
}
