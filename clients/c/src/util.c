/*
 * util.c - small pieces without state: error and state names, option
 * defaults, the reconnect backoff, the JSON check of published data and
 * the intrusive request list.
 */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "client_int.h"

const char *wsc_strerror(int err)
{
    switch (err) {
    case WSC_OK:
        return "success";
    case WSC_E_INVAL:
        return "invalid argument";
    case WSC_E_NOMEM:
        return "out of memory";
    case WSC_E_CLOSED:
        return "client closed or not connected (reconnect is off)";
    case WSC_E_OUTBOX_FULL:
        return "too many requests waiting to be sent";
    case WSC_E_CONNECT:
        return "cannot connect to the broker";
    case WSC_E_HANDSHAKE:
        return "the broker refused the WebSocket upgrade";
    case WSC_E_PROTOCOL:
        return "protocol error";
    case WSC_E_TIMEOUT:
        return "timed out";
    case WSC_E_BROKER:
        return "refused by the broker";
    case WSC_E_DISCONNECTED:
        return "connection lost before the broker answered";
    case WSC_E_TOO_BIG:
        return "message larger than the broker accepts";
    case WSC_E_NOT_SUBSCRIBED:
        return "not subscribed to this pattern";
    case WSC_E_CANCELED:
        return "canceled by a later unsubscribe";
    case WSC_E_TLS:
        return "TLS handshake or certificate verification failed";
    case WSC_E_TOKEN:
        return "no token for the connection attempt";
    default:
        return "unknown error";
    }
}

const char *wsc_state_name(wsc_state_t state)
{
    switch (state) {
    case WSC_CONNECTING:
        return "connecting";
    case WSC_OPEN:
        return "open";
    case WSC_RECONNECTING:
        return "reconnecting";
    case WSC_CLOSED:
        return "closed";
    default:
        return "unknown";
    }
}

void wsc_options_init(wsc_options_t *o)
{
    memset(o, 0, sizeof(*o));
    o->reconnect = true;
    o->backoff_min_ms = 250;
    o->backoff_max_ms = 30000;
    o->connect_timeout_ms = 10000;
    o->ping_interval_ms = 25000;
    o->ping_timeout_ms = 10000;
    o->close_timeout_ms = 2000;
    o->outbox_max = 1000;
    o->outbox_max_bytes = (size_t)8 << 20;
    o->max_message = (size_t)64 << 20;
    o->deflate = true;
    o->deflate_min_size = 128;
}

uint64_t wsc__backoff_ms(unsigned base, unsigned cap, unsigned attempt, uint64_t rnd)
{
    uint64_t ceil = base;
    for (unsigned i = 0; i < attempt && ceil < cap; i++)
        ceil *= 2;
    if (ceil > cap)
        ceil = cap;
    return ceil == 0 ? 0 : rnd % (ceil + 1);
}

static bool json_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

bool wsc__json_check(const char *p, size_t len, char *err, size_t errcap)
{
    const char *end = NULL;
    size_t i = 0;
    while (i < len && json_space(p[i]))
        i++;
    if (i == len) {
        snprintf(err, errcap, "data is empty, not a JSON value");
        return false;
    }
    cJSON *v = cJSON_ParseWithLengthOpts(p, len, &end, 0);
    if (v == NULL) {
        size_t at = end != NULL && end >= p ? (size_t)(end - p) : 0;
        snprintf(err, errcap, "data is not valid JSON (error at byte %zu)", at);
        return false;
    }
    cJSON_Delete(v);
    for (size_t k = (size_t)(end - p); k < len; k++) {
        if (!json_space(p[k])) {
            snprintf(err, errcap, "data holds more than one JSON value (extra text at byte %zu)",
                     k);
            return false;
        }
    }
    return true;
}

void wsc__list_push(wsc_list_t *l, wsc_req_t *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail != NULL)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->count++;
}

void wsc__list_push_front(wsc_list_t *l, wsc_req_t *r)
{
    r->prev = NULL;
    r->next = l->head;
    if (l->head != NULL)
        l->head->prev = r;
    else
        l->tail = r;
    l->head = r;
    l->count++;
}

void wsc__list_remove(wsc_list_t *l, wsc_req_t *r)
{
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->next = r->prev = NULL;
    l->count--;
}

wsc_req_t *wsc__list_pop(wsc_list_t *l)
{
    wsc_req_t *r = l->head;
    if (r != NULL)
        wsc__list_remove(l, r);
    return r;
}
