/*
 * test_cli.c - the broker's command line and WSBROKER_* environment:
 * --help, --version, bad values and unknown flags (exit 2 with a message on
 * stderr), and variables that configure a running broker.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUT_CAP 8192

static int run(const char *const *args, const char *const *env, char *out, char *err)
{
    return it_run(args, env, out, OUT_CAP, err, OUT_CAP, 5000);
}

START_TEST(help_exits_0)
{
    char out[OUT_CAP], err[OUT_CAP];
    int st = run((const char *const[]){"--help", NULL}, NULL, out, err);
    IT_ASSERT(st == 0, "--help: expected exit 0, got %d (stderr: %s)", st, err);
    IT_ASSERT(strstr(out, "--port") != NULL && strstr(out, "--max-backlog") != NULL,
              "--help: usage on stdout should list the options, got: %s", out);
}
END_TEST

START_TEST(version_prints_version)
{
    char out[OUT_CAP], err[OUT_CAP];
    int st = run((const char *const[]){"--version", NULL}, NULL, out, err);
    IT_ASSERT(st == 0, "--version: expected exit 0, got %d", st);
    IT_ASSERT(strcmp(out, "wsbroker " WSBROKER_VERSION "\n") == 0,
              "--version: expected 'wsbroker %s', got '%s'", WSBROKER_VERSION, out);
}
END_TEST

START_TEST(bad_values_exit_2)
{
    static const char *const cases[][2] = {
        {"--port", "abc"},
        {"--port", "70000"},
        {"--port", "-1"},
        {"--port", "80x"},
        {"--workers", "abc"},
        {"--workers", "-2"},
        {"--max-message", "abc"},
        {"--max-backlog", "lots"},
        {"--slow-consumer", "explode"},
        {"--ping-interval", "abc"},
        {"--ping-interval", "-1"},
        {"--ping-timeout", "soon"},
        {"--close-timeout", "x1"},
        {"--handshake-timeout", "-0.5"},
        {"--max-connections", "many"},
        {"--max-subscriptions", "-3"},
        {"--log-level", "loud"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[OUT_CAP], err[OUT_CAP];
        int st = run((const char *const[]){"--bind", IT_HOST, cases[i][0], cases[i][1], NULL}, NULL,
                     out, err);
        IT_ASSERT(st == 2, "%s %s: expected exit 2, got %d", cases[i][0], cases[i][1], st);
        IT_ASSERT(strstr(err, cases[i][0]) != NULL && strstr(err, cases[i][1]) != NULL,
                  "%s %s: stderr should name the option and the value, got '%s'", cases[i][0],
                  cases[i][1], err);
    }
}
END_TEST

START_TEST(unknown_flag_exit_2)
{
    char out[OUT_CAP], err[OUT_CAP];
    int st = run((const char *const[]){"--bind", IT_HOST, "--frobnicate", NULL}, NULL, out, err);
    IT_ASSERT(st == 2, "--frobnicate: expected exit 2, got %d", st);
    IT_ASSERT(strstr(err, "frobnicate") != NULL, "unknown flag: stderr should name it, got '%s'",
              err);
    st = run((const char *const[]){"--bind", IT_HOST, "--port", NULL}, NULL, out, err);
    IT_ASSERT(st == 2, "--port without a value: expected exit 2, got %d", st);
    IT_ASSERT(err[0] != '\0', "--port without a value: no message on stderr");
}
END_TEST

START_TEST(env_bad_value_exit_2)
{
    char out[OUT_CAP], err[OUT_CAP];
    int st = run((const char *const[]){"--bind", IT_HOST, NULL},
                 (const char *const[]){"WSBROKER_PORT=abc", NULL}, out, err);
    IT_ASSERT(st == 2, "WSBROKER_PORT=abc: expected exit 2, got %d", st);
    IT_ASSERT(strstr(err, "WSBROKER_PORT") != NULL,
              "WSBROKER_PORT=abc: stderr should name the variable, got '%s'", err);
}
END_TEST

START_TEST(env_port_honoured)
{
    it_broker_t b;
    char env[32];
    int port = it_free_port();
    snprintf(env, sizeof(env), "WSBROKER_PORT=%d", port);
    it_broker_start_at(&b, port, NULL, (const char *const[]){env, NULL});
    IT_ASSERT(b.port == port, "broker not on the WSBROKER_PORT port");
    it_check_alive(port);
    it_broker_stop(&b);
}
END_TEST

START_TEST(env_options_and_precedence)
{
    it_broker_t b;
    msg_server_t h;
    int st;
    it_broker_start_env(&b, NULL,
                        (const char *const[]){"WSBROKER_PING_INTERVAL=0.25",
                                              "WSBROKER_MAX_MESSAGE=2048", "WSBROKER_NO_ECHO=1",
                                              NULL});
    it_conn_t *c = it_ws_hello(b.port, &h);
    IT_ASSERT(h.heartbeat == 0.25, "WSBROKER_PING_INTERVAL=0.25: hello heartbeat %g", h.heartbeat);
    IT_ASSERT(h.max_message == 2048, "WSBROKER_MAX_MESSAGE=2048: hello max_message %llu",
              (unsigned long long)h.max_message);
    it_conn_free(c);
    c = it_ws_try(b.port, "/echo", NULL, 0, 0, 0, &st, NULL);
    IT_ASSERT(c == NULL && st == 404, "WSBROKER_NO_ECHO=1: /echo expected 404, got %d", st);
    it_broker_stop(&b);

    /* A flag wins over its variable. */
    it_broker_start_env(&b, (const char *const[]){"--max-message", "4096", NULL},
                        (const char *const[]){"WSBROKER_MAX_MESSAGE=2048", NULL});
    c = it_ws_hello(b.port, &h);
    IT_ASSERT(h.max_message == 4096,
              "--max-message 4096 with WSBROKER_MAX_MESSAGE=2048: hello max_message %llu",
              (unsigned long long)h.max_message);
    it_conn_free(c);
    it_broker_stop(&b);
}
END_TEST

START_TEST(fractional_and_sized_values)
{
    it_broker_t b;
    msg_server_t h;
    it_broker_start(&b, "--ping-interval", "1.5", "--max-message", "2k");
    it_conn_t *c = it_ws_hello(b.port, &h);
    IT_ASSERT(h.heartbeat == 1.5, "--ping-interval 1.5: hello heartbeat %g", h.heartbeat);
    IT_ASSERT(h.max_message == 2048, "--max-message 2k: hello max_message %llu",
              (unsigned long long)h.max_message);
    it_conn_free(c);
    it_broker_stop(&b);
}
END_TEST

static Suite *cli_suite(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, help_exits_0);
    tcase_add_test(tc, version_prints_version);
    tcase_add_test(tc, bad_values_exit_2);
    tcase_add_test(tc, unknown_flag_exit_2);
    tcase_add_test(tc, env_bad_value_exit_2);
    tcase_add_test(tc, env_port_honoured);
    tcase_add_test(tc, env_options_and_precedence);
    tcase_add_test(tc, fractional_and_sized_values);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return it_run_suite(cli_suite());
}
