/*
 * token.c - `wsbroker token` (see token.h).
 */
#include "token.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <wsproto/topic.h>

#include "config.h"
#include "jwt.h"

static const char usage[] =
    "Usage: wsbroker token [OPTION]...\n"
    "Print an HS256 JWT for a broker started with --auth-secret.\n"
    "\n"
    "  --secret S          the broker's secret (or env WSBROKER_AUTH_SECRET)\n"
    "  --secret-file F     read it from F (or env WSBROKER_AUTH_SECRET_FILE)\n"
    "  --sub NAME          the client's identity, shown in the broker's logs\n"
    "  --publish PATTERN   allow publishing to topics PATTERN matches\n"
    "                      (repeatable; e.g. 'chat.>')\n"
    "  --subscribe PATTERN allow subscribing to patterns PATTERN covers\n"
    "                      (repeatable)\n"
    "  --ttl S             seconds until it expires (default 3600; 0: never)\n"
    "  --not-before S      seconds from now before it becomes valid (default 0)\n"
    "  --help              show this help\n"
    "\n"
    "Example:\n"
    "  wsbroker token --secret s3cret --sub alice --publish 'chat.>' --subscribe 'chat.>'\n";

enum { T_SECRET = 256, T_SECRET_FILE, T_SUB, T_PUBLISH, T_SUBSCRIBE, T_TTL, T_NBF, T_HELP };

static const struct option options[] = {
    {"secret", required_argument, NULL, T_SECRET},
    {"secret-file", required_argument, NULL, T_SECRET_FILE},
    {"sub", required_argument, NULL, T_SUB},
    {"publish", required_argument, NULL, T_PUBLISH},
    {"subscribe", required_argument, NULL, T_SUBSCRIBE},
    {"ttl", required_argument, NULL, T_TTL},
    {"not-before", required_argument, NULL, T_NBF},
    {"help", no_argument, NULL, T_HELP},
    {NULL, 0, NULL, 0},
};

static int bad(const char *what, const char *value)
{
    fprintf(stderr, "wsbroker token: %s: '%s'\nTry 'wsbroker token --help'.\n", what, value);
    return 2;
}

static int seconds(const char *v, long *out)
{
    char *end;
    long n = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || n < 0 || n > 100L * 365 * 86400)
        return -1;
    *out = n;
    return 0;
}

int token_main(int argc, char **argv)
{
    const char *secret = getenv("WSBROKER_AUTH_SECRET");
    const char *secret_file = getenv("WSBROKER_AUTH_SECRET_FILE");
    long ttl = 3600, nbf = 0;
    cJSON *claims = cJSON_CreateObject();
    cJSON *acl = cJSON_CreateObject();
    cJSON *pub = cJSON_CreateArray(), *sub = cJSON_CreateArray();
    if (claims == NULL || acl == NULL || pub == NULL || sub == NULL)
        return 1;
    int rc = 2;
    opterr = 0;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, ":", options, NULL)) != -1) {
        switch (opt) {
        case T_SECRET:
            secret = optarg;
            secret_file = NULL;
            break;
        case T_SECRET_FILE:
            secret_file = optarg;
            secret = NULL;
            break;
        case T_SUB:
            cJSON_DeleteItemFromObject(claims, "sub");
            cJSON_AddStringToObject(claims, "sub", optarg);
            break;
        case T_PUBLISH:
        case T_SUBSCRIBE:
            if (topic_check(optarg, strlen(optarg), true) != TOPIC_OK) {
                rc = bad("not a topic pattern", optarg);
                goto out;
            }
            cJSON_AddItemToArray(opt == T_PUBLISH ? pub : sub, cJSON_CreateString(optarg));
            break;
        case T_TTL:
        case T_NBF:
            if (seconds(optarg, opt == T_TTL ? &ttl : &nbf) != 0) {
                rc = bad("expected a number of seconds", optarg);
                goto out;
            }
            break;
        case T_HELP:
            fputs(usage, stdout);
            rc = 0;
            goto out;
        default:
            rc = bad(opt == ':' ? "missing value for" : "unknown option", argv[optind - 1]);
            goto out;
        }
    }
    if (optind < argc) {
        rc = bad("unexpected argument", argv[optind]);
        goto out;
    }
    if (secret == NULL && secret_file == NULL) {
        fprintf(stderr, "wsbroker token: give the broker's secret with --secret or "
                        "--secret-file\n");
        goto out;
    }
    uint8_t *key;
    size_t keylen;
    const char *err = cfg_read_secret(secret ? secret : secret_file, secret == NULL, &key, &keylen);
    if (err != NULL) {
        fprintf(stderr, "wsbroker token: %s\n", err);
        goto out;
    }
    time_t now = time(NULL);
    cJSON_AddNumberToObject(claims, "iat", (double)now);
    if (nbf > 0)
        cJSON_AddNumberToObject(claims, "nbf", (double)(now + nbf));
    if (ttl > 0)
        cJSON_AddNumberToObject(claims, "exp", (double)(now + nbf + ttl));
    cJSON_AddItemToObject(acl, "publish", pub);
    cJSON_AddItemToObject(acl, "subscribe", sub);
    cJSON_AddItemToObject(claims, "acl", acl);
    pub = sub = acl = NULL;
    char *text = cJSON_PrintUnformatted(claims);
    char out[JWT_MAX];
    int n = text ? jwt_sign(text, key, keylen, out, sizeof(out)) : -1;
    free(text);
    free(key);
    if (n < 0) {
        fprintf(stderr, "wsbroker token: the claims are too large\n");
        rc = 1;
        goto out;
    }
    printf("%s\n", out);
    rc = 0;
out:
    cJSON_Delete(pub);
    cJSON_Delete(sub);
    cJSON_Delete(acl);
    cJSON_Delete(claims);
    return rc;
}
