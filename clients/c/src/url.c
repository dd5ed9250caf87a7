/*
 * url.c - ws:// and wss:// URLs (RFC 6455 section 3):
 *
 *   ws://localhost:8080/ws        host "localhost", port 8080, target "/ws"
 *   ws://127.0.0.1/?token=x       port 80, target "/?token=x"
 *   ws://[::1]:9000               host "::1", target "/"
 *   wss://broker.example/ws       TLS, port 443
 *
 * Only the ws and wss schemes are accepted. User information ("user@host")
 * and fragments ("#x") are errors rather than silently dropped, and the
 * target may not hold bytes that would break the HTTP request line.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "client_int.h"

static int fail(char *err, size_t cap, const char *url, const char *why)
{
    snprintf(err, cap, "invalid URL \"%.120s\": %s", url, why);
    return WSC_E_INVAL;
}

int wsc__url_parse(const char *url, wsc_url_t *u, char *err, size_t errcap)
{
    memset(u, 0, sizeof(*u));
    if (url == NULL)
        return fail(err, errcap, "", "no URL given");
    const char *p;
    if (strncasecmp(url, "ws://", 5) == 0) {
        p = url + 5;
    } else if (strncasecmp(url, "wss://", 6) == 0) {
        p = url + 6;
        u->tls = true;
    } else {
        return fail(err, errcap, url,
                    "it must start with ws:// or wss:// (e.g. ws://localhost:8080/ws)");
    }

    size_t alen = strcspn(p, "/?#");
    const char *auth = p;
    const char *rest = p + alen;
    if (memchr(auth, '@', alen) != NULL)
        return fail(err, errcap, url, "user information (user@host) is not supported");
    if (alen == 0)
        return fail(err, errcap, url, "no host");
    if (alen >= sizeof(u->authority))
        return fail(err, errcap, url, "host too long");

    const char *host = auth, *port = NULL;
    size_t hlen;
    if (auth[0] == '[') {
        const char *close = memchr(auth, ']', alen);
        if (close == NULL)
            return fail(err, errcap, url, "missing ']' after an IPv6 address");
        host = auth + 1;
        hlen = (size_t)(close - host);
        if (close + 1 < auth + alen) {
            if (close[1] != ':')
                return fail(err, errcap, url, "unexpected text after ']'");
            port = close + 2;
        }
    } else {
        const char *colon = memchr(auth, ':', alen);
        hlen = colon != NULL ? (size_t)(colon - auth) : alen;
        if (colon != NULL)
            port = colon + 1;
    }
    if (hlen == 0 || hlen >= sizeof(u->host))
        return fail(err, errcap, url, hlen == 0 ? "no host" : "host too long");
    for (size_t i = 0; i < hlen; i++) {
        unsigned char ch = (unsigned char)host[i];
        if (ch <= 0x20 || ch >= 0x7f)
            return fail(err, errcap, url, "invalid character in the host");
    }
    memcpy(u->host, host, hlen);
    {
        unsigned char addr[16];
        u->host_is_ip =
            inet_pton(AF_INET, u->host, addr) == 1 || inet_pton(AF_INET6, u->host, addr) == 1;
    }

    if (port != NULL) {
        size_t plen = (size_t)(auth + alen - port);
        unsigned long v = 0;
        if (plen == 0 || plen > 5)
            return fail(err, errcap, url, "the port must be a number from 1 to 65535");
        for (size_t i = 0; i < plen; i++) {
            if (port[i] < '0' || port[i] > '9')
                return fail(err, errcap, url, "the port must be a number from 1 to 65535");
            v = v * 10 + (unsigned long)(port[i] - '0');
        }
        if (v == 0 || v > 65535)
            return fail(err, errcap, url, "the port must be a number from 1 to 65535");
        snprintf(u->port, sizeof(u->port), "%lu", v);
    } else {
        memcpy(u->port, u->tls ? "443" : "80", u->tls ? 4 : 3);
    }
    memcpy(u->authority, auth, alen);

    if (strchr(rest, '#') != NULL)
        return fail(err, errcap, url, "WebSocket URLs cannot have a fragment (#)");
    size_t tlen = strlen(rest);
    if (tlen + 2 > sizeof(u->target))
        return fail(err, errcap, url, "path too long");
    for (size_t i = 0; i < tlen; i++) {
        unsigned char ch = (unsigned char)rest[i];
        if (ch <= 0x20 || ch >= 0x7f)
            return fail(err, errcap, url,
                        "spaces, control and non-ASCII characters must be %-encoded");
    }
    if (rest[0] != '/')
        u->target[0] = '/';
    memcpy(u->target + (rest[0] != '/'), rest, tlen + 1);
    return WSC_OK;
}
