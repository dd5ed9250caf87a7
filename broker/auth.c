/*
 * auth.c - JWT-based authentication and topic ACLs (see auth.h).
 */
#include "auth.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <wsproto/topic.h>

#include "jwt.h"

typedef struct grant {
    size_t len;
    bool wildcard;
    const char *pattern; /* inside the auth_t block */
} grant_t;

struct auth {
    int64_t exp;
    const char *sub;
    grant_t *pub, *subs;
    size_t npub, nsubs;
    char data[]; /* grants, then the strings */
};

/* The token of a handshake: the Authorization header's bearer token, else
 * the "token" query parameter (percent-decoded into buf). NULL if none. */
static const char *find_token(const wsh_request_t *req, char *buf, size_t cap, size_t *len)
{
    const wsh_str_t *h = wsh_header_get(req->headers, req->num_headers, "authorization");
    if (h != NULL) {
        if (h->len > 7 && strncasecmp(h->p, "Bearer ", 7) == 0) {
            const char *p = h->p + 7;
            size_t n = h->len - 7;
            while (n > 0 && *p == ' ') {
                p++;
                n--;
            }
            *len = n;
            return n > 0 ? p : NULL;
        }
        return NULL; /* another scheme: not ours */
    }
    const char *q = req->query.p;
    size_t qlen = req->query.len;
    for (size_t i = 0; i < qlen;) {
        size_t end = i;
        while (end < qlen && q[end] != '&')
            end++;
        if (end - i > 6 && memcmp(q + i, "token=", 6) == 0) {
            size_t o = 0;
            for (size_t k = i + 6; k < end && o < cap; k++) {
                char c = q[k];
                if (c == '%' && k + 2 < end) {
                    char hex[3] = {q[k + 1], q[k + 2], 0};
                    char *stop;
                    long v = strtol(hex, &stop, 16);
                    if (*stop != '\0')
                        return NULL;
                    c = (char)v;
                    k += 2;
                }
                buf[o++] = c;
            }
            if (o == cap)
                return NULL;
            *len = o;
            return buf;
        }
        i = end + 1;
    }
    return NULL;
}

/* Patterns of acl.<name>: a list of valid topic patterns. Counts them and
 * their bytes; returns -1 if the claim is malformed. */
static int measure(const cJSON *acl, const char *name, size_t *n, size_t *bytes)
{
    const cJSON *list = acl ? cJSON_GetObjectItemCaseSensitive(acl, name) : NULL;
    *n = 0;
    if (list == NULL)
        return 0;
    if (!cJSON_IsArray(list))
        return -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, list)
    {
        if (!cJSON_IsString(it) ||
            topic_check(it->valuestring, strlen(it->valuestring), true) != TOPIC_OK)
            return -1;
        (*n)++;
        *bytes += strlen(it->valuestring) + 1;
    }
    return 0;
}

static char *copy_grants(const cJSON *acl, const char *name, grant_t *out, char *strings)
{
    const cJSON *list = acl ? cJSON_GetObjectItemCaseSensitive(acl, name) : NULL;
    const cJSON *it;
    size_t i = 0;
    if (list == NULL)
        return strings;
    cJSON_ArrayForEach(it, list)
    {
        size_t len = strlen(it->valuestring);
        memcpy(strings, it->valuestring, len + 1);
        out[i++] = (grant_t){len, topic_is_pattern(strings, len), strings};
        strings += len + 1;
    }
    return strings;
}

auth_t *auth_check(const uint8_t *key, size_t keylen, const wsh_request_t *req, int64_t now,
                   const char **why)
{
    char buf[JWT_MAX];
    size_t tlen = 0;
    const char *token = find_token(req, buf, sizeof(buf), &tlen);
    if (token == NULL) {
        *why = "missing token";
        return NULL;
    }
    cJSON *claims;
    int rc = jwt_verify(token, tlen, key, keylen, now, &claims);
    if (rc != JWT_OK) {
        *why = jwt_strerror(rc);
        return NULL;
    }
    const cJSON *sub = cJSON_GetObjectItemCaseSensitive(claims, "sub");
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(claims, "exp");
    const cJSON *acl = cJSON_GetObjectItemCaseSensitive(claims, "acl");
    size_t npub = 0, nsubs = 0, bytes = 0;
    if ((sub != NULL && !cJSON_IsString(sub)) || (acl != NULL && !cJSON_IsObject(acl)) ||
        measure(acl, "publish", &npub, &bytes) != 0 ||
        measure(acl, "subscribe", &nsubs, &bytes) != 0) {
        cJSON_Delete(claims);
        *why = "bad token claims";
        return NULL;
    }
    const char *subject = sub ? sub->valuestring : "";
    size_t sublen = strlen(subject);
    size_t grants = (npub + nsubs) * sizeof(grant_t);
    auth_t *a = malloc(sizeof(*a) + grants + bytes + sublen + 1);
    if (a == NULL) {
        cJSON_Delete(claims);
        *why = "out of memory";
        return NULL;
    }
    a->pub = (grant_t *)a->data;
    a->subs = a->pub + npub;
    a->npub = npub;
    a->nsubs = nsubs;
    char *strings = a->data + grants;
    strings = copy_grants(acl, "publish", a->pub, strings);
    strings = copy_grants(acl, "subscribe", a->subs, strings);
    memcpy(strings, subject, sublen + 1);
    a->sub = strings;
    a->exp = exp ? (int64_t)ceil(exp->valuedouble) : 0;
    cJSON_Delete(claims);
    return a;
}

void auth_free(auth_t *a)
{
    free(a);
}

bool auth_may_publish(const auth_t *a, const char *topic, size_t len)
{
    for (size_t i = 0; i < a->npub; i++) {
        const grant_t *g = &a->pub[i];
        if (g->wildcard ? topic_match(g->pattern, g->len, topic, len)
                        : g->len == len && memcmp(g->pattern, topic, len) == 0)
            return true;
    }
    return false;
}

bool auth_may_subscribe(const auth_t *a, const char *pattern, size_t len)
{
    for (size_t i = 0; i < a->nsubs; i++)
        if (topic_covers(a->subs[i].pattern, a->subs[i].len, pattern, len))
            return true;
    return false;
}

const char *auth_subject(const auth_t *a)
{
    return a->sub;
}

int64_t auth_expires(const auth_t *a)
{
    return a->exp;
}
