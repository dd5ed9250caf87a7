/*
 * common.c - see common.h.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wsbroker/client.h>

#include "common.h"

static const char *prog_name = "wsbroker";

void cli_init(const char *prog)
{
    prog_name = prog;
}

void cli_msg(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help' for more information.\n", prog_name);
    exit(CLI_USAGE);
}

unsigned cli_seconds(const char *opt, const char *value)
{
    char *end;
    errno = 0;
    double s = strtod(value, &end);
    if (errno != 0 || end == value || *end != '\0' || !(s > 0) || s > 86400)
        cli_usage_error("%s: '%s' is not a number of seconds (0 < S <= 86400)", opt, value);
    unsigned ms = (unsigned)(s * 1000 + 0.5);
    return ms > 0 ? ms : 1;
}

uint64_t cli_uint(const char *opt, const char *value)
{
    char *end;
    errno = 0;
    if (value[0] < '0' || value[0] > '9')
        cli_usage_error("%s: '%s' is not a non-negative integer", opt, value);
    unsigned long long v = strtoull(value, &end, 10);
    if (errno != 0 || *end != '\0' || v > INT64_MAX)
        cli_usage_error("%s: '%s' is not a non-negative integer", opt, value);
    return (uint64_t)v;
}

void cli_version(void)
{
    printf("%s (wsbroker) %s\n", prog_name, WSC_VERSION);
    exit(CLI_OK);
}

void cli_strip_retry(const char *detail, char *out, unsigned cap)
{
    const char *cut = strstr(detail, "; retry in ");
    size_t n = cut != NULL ? (size_t)(cut - detail) : strlen(detail);
    if (n >= cap)
        n = cap - 1;
    memcpy(out, detail, n);
    out[n] = '\0';
}

const char *cli_hint(int err, const char *detail)
{
    if (err == WSC_E_TLS &&
        (strstr(detail, "not trusted") != NULL || strstr(detail, "not valid for") != NULL))
        return " (--cafile FILE trusts the CA that signed it; --insecure skips the check, for "
               "test setups only)";
    if (err == WSC_E_HANDSHAKE && strstr(detail, "HTTP 401") != NULL)
        return " (give a token with --token or WSBROKER_TOKEN)";
    return "";
}

bool cli_conn_option(int ch, const char *arg, wsc_options_t *o)
{
    switch (ch) {
    case CLI_OPT_CAFILE:
        o->ca_file = arg;
        return true;
    case CLI_OPT_INSECURE:
        o->insecure = true;
        return true;
    case CLI_OPT_NO_DEFLATE:
        o->deflate = false;
        return true;
    default:
        return false;
    }
}
