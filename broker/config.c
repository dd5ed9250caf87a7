/*
 * config.c - flags and WSBROKER_* environment variables.
 *
 * Every flag has an environment variable of the same name (--max-backlog is
 * WSBROKER_MAX_BACKLOG); flags win. Byte sizes take k/m/g suffixes (powers of
 * 1024) and durations take fractional seconds, so tests can use short ones.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "log.h"

enum {
    OPT_PORT = 256,
    OPT_TLS_PORT,
    OPT_TLS_CERT,
    OPT_TLS_KEY,
    OPT_TLS_CA,
    OPT_BIND,
    OPT_WORKERS,
    OPT_MAX_MESSAGE,
    OPT_MAX_BACKLOG,
    OPT_SLOW_CONSUMER,
    OPT_PING_INTERVAL,
    OPT_PING_TIMEOUT,
    OPT_CLOSE_TIMEOUT,
    OPT_HANDSHAKE_TIMEOUT,
    OPT_MESSAGE_TIMEOUT,
    OPT_MAX_CONNECTIONS,
    OPT_MAX_SUBSCRIPTIONS,
    OPT_HISTORY,
    OPT_HISTORY_TTL,
    OPT_MAX_TOPICS,
    OPT_AUTH_SECRET,
    OPT_AUTH_SECRET_FILE,
    OPT_RATE_LIMIT,
    OPT_RATE_BURST,
    OPT_MAX_CONNS_PER_IP,
    OPT_DEFLATE,
    OPT_DEFLATE_MIN,
    OPT_REDIS,
    OPT_ALLOWED_ORIGINS,
    OPT_NO_ECHO,
    OPT_WEB_ROOT,
    OPT_NO_WEB,
    OPT_LOG_LEVEL,
    OPT_HELP,
    OPT_VERSION,
};

static const struct option options[] = {
    {"port", required_argument, NULL, OPT_PORT},
    {"tls-port", required_argument, NULL, OPT_TLS_PORT},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
    {"tls-ca", required_argument, NULL, OPT_TLS_CA},
    {"bind", required_argument, NULL, OPT_BIND},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"max-message", required_argument, NULL, OPT_MAX_MESSAGE},
    {"max-backlog", required_argument, NULL, OPT_MAX_BACKLOG},
    {"slow-consumer", required_argument, NULL, OPT_SLOW_CONSUMER},
    {"ping-interval", required_argument, NULL, OPT_PING_INTERVAL},
    {"ping-timeout", required_argument, NULL, OPT_PING_TIMEOUT},
    {"close-timeout", required_argument, NULL, OPT_CLOSE_TIMEOUT},
    {"handshake-timeout", required_argument, NULL, OPT_HANDSHAKE_TIMEOUT},
    {"message-timeout", required_argument, NULL, OPT_MESSAGE_TIMEOUT},
    {"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
    {"max-subscriptions", required_argument, NULL, OPT_MAX_SUBSCRIPTIONS},
    {"history", required_argument, NULL, OPT_HISTORY},
    {"history-ttl", required_argument, NULL, OPT_HISTORY_TTL},
    {"max-topics", required_argument, NULL, OPT_MAX_TOPICS},
    {"auth-secret", required_argument, NULL, OPT_AUTH_SECRET},
    {"auth-secret-file", required_argument, NULL, OPT_AUTH_SECRET_FILE},
    {"rate-limit", required_argument, NULL, OPT_RATE_LIMIT},
    {"rate-burst", required_argument, NULL, OPT_RATE_BURST},
    {"max-connections-per-ip", required_argument, NULL, OPT_MAX_CONNS_PER_IP},
    {"deflate", required_argument, NULL, OPT_DEFLATE},
    {"deflate-min-size", required_argument, NULL, OPT_DEFLATE_MIN},
    {"redis", required_argument, NULL, OPT_REDIS},
    {"allowed-origins", required_argument, NULL, OPT_ALLOWED_ORIGINS},
    {"no-echo", no_argument, NULL, OPT_NO_ECHO},
    {"web-root", required_argument, NULL, OPT_WEB_ROOT},
    {"no-web", no_argument, NULL, OPT_NO_WEB},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static const char usage[] =
    "Usage: wsbroker [OPTION]...\n"
    "       wsbroker token [OPTION]...   (mint a token: wsbroker token --help)\n"
    "WebSocket publish/subscribe broker (RFC 6455; protocol: PROTOCOL.md).\n"
    "\n"
    "Every option can also be set by an environment variable: --max-backlog is\n"
    "WSBROKER_MAX_BACKLOG, --no-echo is WSBROKER_NO_ECHO=1. Options win.\n"
    "Sizes accept k, m, g suffixes (x1024); durations are seconds (0.5 works).\n"
    "\n"
    "  --port N               TCP port for ws:// and http:// (default 8080;\n"
    "                         0: none, with --tls-port)\n"
    "  --tls-port N           TCP port for wss:// and https:// (default: none)\n"
    "  --tls-cert FILE        PEM certificate chain for --tls-port (server\n"
    "                         certificate first); kill -HUP reloads it\n"
    "  --tls-key FILE         PEM private key of that certificate\n"
    "  --tls-ca FILE          require client certificates signed by these CAs\n"
    "  --bind ADDR            listen address, IPv4 or IPv6 (default 127.0.0.1;\n"
    "                         0.0.0.0 for every interface)\n"
    "  --workers N            worker threads, each with its own event loop\n"
    "                         (default: number of CPUs, at most 64)\n"
    "  --max-message SIZE     largest message accepted (default 1m)\n"
    "  --max-backlog SIZE     bytes queued per connection before the slow-consumer\n"
    "                         policy applies (default 8m)\n"
    "  --slow-consumer POLICY close (default): close with 1008; drop: skip\n"
    "                         messages until the backlog halves\n"
    "  --ping-interval S      server Ping period (default 20; 0 disables)\n"
    "  --ping-timeout S       close 1001 if nothing arrives this long after a\n"
    "                         Ping (default 10)\n"
    "  --close-timeout S      wait for the peer's Close, and the shutdown drain\n"
    "                         (default 5)\n"
    "  --handshake-timeout S  time allowed to send the HTTP request (default 10)\n"
    "  --message-timeout S    time allowed to finish a message once its first\n"
    "                         bytes arrived; then close 1008 (default 30)\n"
    "  --max-connections N    TCP connections at once, in any state (handshake,\n"
    "                         WebSocket, HTTP); more get 503 (default 0: as many\n"
    "                         as the file descriptor limit allows)\n"
    "  --max-subscriptions N  subscriptions per connection (default 1000)\n"
    "  --history N            messages retained per topic for 'last'/'since'\n"
    "                         replay (default 0: none)\n"
    "  --history-ttl S        retained messages expire after S seconds\n"
    "                         (default 0: only --history bounds them)\n"
    "  --max-topics N         topics remembered at once; past it the least\n"
    "                         recently used topics nobody subscribes to are\n"
    "                         forgotten, history included (default 1000000;\n"
    "                         0: no limit)\n"
    "  --max-connections-per-ip N\n"
    "                         connections at once from one IPv4 address or\n"
    "                         IPv6 /64; more get 503 (default 0: no limit)\n"
    "  --rate-limit R         publishes per second per connection; more get a\n"
    "                         rate_limited error, and a connection refused for\n"
    "                         5 s in a row is closed with 1008 (default 0: off)\n"
    "  --rate-burst N         publishes allowed at once before --rate-limit\n"
    "                         applies (default: the rate, at least 1)\n"
    "  --redis URL            cluster mode: join the brokers using the Redis at\n"
    "                         redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]; seqs,\n"
    "                         history and epochs are the cluster's\n"
    "  --deflate MODE         permessage-deflate for clients that offer it:\n"
    "                         shared (default): each message is compressed once\n"
    "                         and sent to every such subscriber; dedicated: a\n"
    "                         compression context per connection (better ratio,\n"
    "                         about 300 KiB of memory per connection); off\n"
    "  --deflate-min-size SIZE  messages shorter than this are sent uncompressed\n"
    "                         (default 128)\n"
    "  --auth-secret S        require an HS256 JWT signed with S on /ws (header\n"
    "                         Authorization: Bearer, or ?token=); see PROTOCOL.md\n"
    "                         section 6 and 'wsbroker token --help'\n"
    "  --auth-secret-file F   the same, the secret read from file F (a final\n"
    "                         newline is dropped)\n"
    "  --allowed-origins LIST browser origins allowed to connect besides the\n"
    "                         broker's own (e.g. https://app.example.com),\n"
    "                         comma-separated; '*' allows any. By default only\n"
    "                         pages from the broker's own origin or from this\n"
    "                         machine (localhost, 127.x, [::1]) may connect.\n"
    "                         Clients that send no Origin header (not\n"
    "                         browsers) are not affected\n"
    "  --no-echo              disable the /echo endpoint\n"
    "  --web-root DIR         serve the web client from DIR instead of the copy\n"
    "                         built into the broker (the demo page at /)\n"
    "  --no-web               serve no web client; only /healthz and /metrics\n"
    "  --log-level LEVEL      debug, info (default), warn or error\n"
    "  --help                 show this help and exit\n"
    "  --version              show the version and exit\n";

static int fail(const char *flag, const char *value, const char *why)
{
    fprintf(stderr, "wsbroker: invalid value '%s' for %s: %s\n", value, flag, why);
    return 2;
}

static int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    if (!isdigit((unsigned char)s[0]))
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    if (!isdigit((unsigned char)s[0]))
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0)
        return -1;
    uint64_t mult = 1;
    switch (tolower((unsigned char)*end)) {
    case '\0':
        break;
    case 'k':
        mult = 1024;
        break;
    case 'm':
        mult = 1024 * 1024;
        break;
    case 'g':
        mult = 1024ull * 1024 * 1024;
        break;
    default:
        return -1;
    }
    if (*end != '\0') {
        end++;
        if (strcasecmp(end, "ib") == 0 || strcasecmp(end, "b") == 0)
            end += strlen(end);
        if (*end != '\0')
            return -1;
    }
    if (v > max / mult || v * mult < min || v * mult > max)
        return -1;
    *out = v * mult;
    return 0;
}

static int parse_seconds(const char *s, double min, double max, double *out)
{
    char *end;
    if (!(isdigit((unsigned char)s[0]) || s[0] == '.'))
        return -1;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v) || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    if (!strcmp(s, "1") || !strcasecmp(s, "true") || !strcasecmp(s, "yes") ||
        !strcasecmp(s, "on")) {
        *out = true;
        return 0;
    }
    if (!strcmp(s, "0") || !strcasecmp(s, "false") || !strcasecmp(s, "no") ||
        !strcasecmp(s, "off") || s[0] == '\0') {
        *out = false;
        return 0;
    }
    return -1;
}

static void free_origins(cfg_t *cfg)
{
    for (size_t i = 0; i < cfg->norigins; i++)
        free(cfg->origins[i]);
    free(cfg->origins);
    cfg->origins = NULL;
    cfg->norigins = 0;
    cfg->any_origin = false;
}

static int set_origins(cfg_t *cfg, const char *list)
{
    free_origins(cfg);
    size_t n = 1;
    for (const char *p = list; *p; p++)
        n += *p == ',';
    cfg->origins = calloc(n, sizeof(char *));
    if (cfg->origins == NULL)
        return -1;
    const char *p = list;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        while (len > 0 && (p[0] == ' ' || p[0] == '\t')) {
            p++;
            len--;
        }
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == 1 && p[0] == '*') {
            cfg->any_origin = true;
        } else if (len > 0) {
            cfg->origins[cfg->norigins] = strndup(p, len);
            if (cfg->origins[cfg->norigins] == NULL)
                return -1;
            cfg->norigins++;
        }
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    if (cfg->norigins == 0 && !cfg->any_origin)
        return -1;
    return 0;
}

const char *cfg_read_secret(const char *v, bool file, uint8_t **key, size_t *len)
{
    char *k = NULL;
    size_t n = 0;
    if (file) {
        FILE *f = fopen(v, "rb");
        if (f == NULL)
            return strerror(errno);
        char buf[4096];
        n = fread(buf, 1, sizeof(buf), f);
        bool more = fgetc(f) != EOF;
        fclose(f);
        if (more)
            return "the secret file is larger than 4 KiB";
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
            n--;
        k = malloc(n + 1);
        if (k != NULL)
            memcpy(k, buf, n);
        explicit_bzero(buf, sizeof(buf));
    } else {
        n = strlen(v);
        k = strdup(v);
    }
    if (k == NULL)
        return "out of memory";
    if (n == 0) {
        free(k);
        return "the secret is empty";
    }
    *key = (uint8_t *)k;
    *len = n;
    return NULL;
}

/* The HS256 key, given directly or in a file. */
static int set_secret(cfg_t *cfg, const char *flag, const char *v, bool file)
{
    uint8_t *key;
    size_t len;
    const char *err = cfg_read_secret(v, file, &key, &len);
    if (err != NULL)
        return fail(flag, file ? v : "(hidden)", err);
    if (cfg->auth_key != NULL) {
        explicit_bzero(cfg->auth_key, cfg->auth_key_len);
        free(cfg->auth_key);
    }
    cfg->auth_key = key;
    cfg->auth_key_len = len;
    return 0;
}

/* Apply one option; flag is the name for messages ("--port" or the env var). */
static int apply(cfg_t *cfg, int opt, const char *flag, const char *v)
{
    uint64_t u;
    bool b;
    switch (opt) {
    case OPT_PORT:
    case OPT_TLS_PORT:
        if (parse_uint(v, 0, 65535, &u) != 0)
            return fail(flag, v, "expected a port number from 1 to 65535 (0: none)");
        if (opt == OPT_PORT)
            cfg->port = (int)u;
        else
            cfg->tls_port = (int)u;
        return 0;
    case OPT_TLS_CERT:
    case OPT_TLS_KEY:
    case OPT_TLS_CA: {
        char **dst = opt == OPT_TLS_CERT  ? &cfg->tls_cert
                     : opt == OPT_TLS_KEY ? &cfg->tls_key
                                          : &cfg->tls_ca;
        free(*dst);
        *dst = NULL;
        if (v[0] != '\0' && (*dst = strdup(v)) == NULL)
            return 2;
        return 0;
    }
    case OPT_BIND: {
        struct sockaddr_in6 a6;
        struct sockaddr_in a4;
        if (strlen(v) >= sizeof(cfg->bind) ||
            (uv_ip4_addr(v, 0, &a4) != 0 && uv_ip6_addr(v, 0, &a6) != 0))
            return fail(flag, v, "expected an IPv4 or IPv6 address such as 127.0.0.1 or ::");
        snprintf(cfg->bind, sizeof(cfg->bind), "%s", v);
        return 0;
    }
    case OPT_WORKERS:
        if (parse_uint(v, 1, CFG_MAX_WORKERS, &u) != 0)
            return fail(flag, v, "expected a number of threads from 1 to 64");
        cfg->workers = (int)u;
        return 0;
    case OPT_MAX_MESSAGE:
        if (parse_size(v, 125, 256ull << 20, &cfg->max_message) != 0)
            return fail(flag, v, "expected a size from 125 bytes to 256m");
        return 0;
    case OPT_MAX_BACKLOG:
        if (parse_size(v, 1024, 1ull << 32, &cfg->max_backlog) != 0)
            return fail(flag, v, "expected a size from 1k to 4g");
        return 0;
    case OPT_SLOW_CONSUMER:
        if (strcmp(v, "close") == 0)
            cfg->slow_consumer = SLOW_CLOSE;
        else if (strcmp(v, "drop") == 0)
            cfg->slow_consumer = SLOW_DROP;
        else
            return fail(flag, v, "expected 'close' or 'drop'");
        return 0;
    case OPT_PING_INTERVAL:
        if (parse_seconds(v, 0, 86400, &cfg->ping_interval) != 0)
            return fail(flag, v, "expected seconds from 0 (off) to 86400");
        return 0;
    case OPT_PING_TIMEOUT:
        if (parse_seconds(v, 0.01, 86400, &cfg->ping_timeout) != 0)
            return fail(flag, v, "expected seconds from 0.01 to 86400");
        return 0;
    case OPT_CLOSE_TIMEOUT:
        if (parse_seconds(v, 0.01, 3600, &cfg->close_timeout) != 0)
            return fail(flag, v, "expected seconds from 0.01 to 3600");
        return 0;
    case OPT_HANDSHAKE_TIMEOUT:
        if (parse_seconds(v, 0.01, 3600, &cfg->handshake_timeout) != 0)
            return fail(flag, v, "expected seconds from 0.01 to 3600");
        return 0;
    case OPT_MESSAGE_TIMEOUT:
        if (parse_seconds(v, 0.01, 86400, &cfg->message_timeout) != 0)
            return fail(flag, v, "expected seconds from 0.01 to 86400");
        return 0;
    case OPT_MAX_CONNECTIONS:
        if (parse_uint(v, 0, 100000000, &u) != 0)
            return fail(flag, v, "expected a count (0 for no limit)");
        cfg->max_connections = (uint32_t)u;
        return 0;
    case OPT_MAX_SUBSCRIPTIONS:
        if (parse_uint(v, 1, 1000000, &u) != 0)
            return fail(flag, v, "expected a count from 1 to 1000000");
        cfg->max_subscriptions = (uint32_t)u;
        return 0;
    case OPT_HISTORY:
        if (parse_uint(v, 0, 1000000, &u) != 0)
            return fail(flag, v, "expected a count from 0 to 1000000");
        cfg->history = (uint32_t)u;
        return 0;
    case OPT_HISTORY_TTL:
        if (parse_seconds(v, 0, 365 * 86400.0, &cfg->history_ttl) != 0)
            return fail(flag, v, "expected seconds from 0 (no expiry) to 31536000");
        return 0;
    case OPT_MAX_TOPICS:
        if (parse_uint(v, 0, 1000000000, &cfg->max_topics) != 0)
            return fail(flag, v, "expected a count (0 for no limit)");
        return 0;
    case OPT_AUTH_SECRET:
    case OPT_AUTH_SECRET_FILE:
        return set_secret(cfg, flag, v, opt == OPT_AUTH_SECRET_FILE);
    case OPT_RATE_LIMIT:
        if (parse_seconds(v, 0, 1e9, &cfg->rate_limit) != 0)
            return fail(flag, v, "expected publishes per second (0 for no limit)");
        return 0;
    case OPT_RATE_BURST:
        if (parse_seconds(v, 1, 1e9, &cfg->rate_burst) != 0)
            return fail(flag, v, "expected a number of publishes, at least 1");
        return 0;
    case OPT_REDIS:
        free(cfg->redis);
        cfg->redis = NULL;
        if (v[0] != '\0' && (cfg->redis = strdup(v)) == NULL)
            return 2;
        return 0;
    case OPT_DEFLATE:
        if (strcmp(v, "off") == 0)
            cfg->deflate = DEFLATE_OFF;
        else if (strcmp(v, "shared") == 0)
            cfg->deflate = DEFLATE_SHARED;
        else if (strcmp(v, "dedicated") == 0)
            cfg->deflate = DEFLATE_DEDICATED;
        else
            return fail(flag, v, "expected off, shared or dedicated");
        return 0;
    case OPT_DEFLATE_MIN:
        if (parse_size(v, 0, 1ull << 30, &cfg->deflate_min) != 0)
            return fail(flag, v, "expected a size from 0 to 1g");
        return 0;
    case OPT_MAX_CONNS_PER_IP:
        if (parse_uint(v, 0, 100000000, &u) != 0)
            return fail(flag, v, "expected a count (0 for no limit)");
        cfg->max_conns_per_ip = (uint32_t)u;
        return 0;
    case OPT_ALLOWED_ORIGINS:
        if (set_origins(cfg, v) != 0)
            return fail(flag, v, "expected a comma-separated list of origins");
        return 0;
    case OPT_NO_ECHO:
    case OPT_NO_WEB:
        b = true;
        if (v != NULL && parse_bool(v, &b) != 0)
            return fail(flag, v, "expected 1/0, true/false, yes/no or on/off");
        if (opt == OPT_NO_ECHO)
            cfg->echo = !b;
        else
            cfg->web = !b;
        return 0;
    case OPT_WEB_ROOT:
        free(cfg->web_root);
        cfg->web_root = NULL;
        if (v[0] != '\0' && (cfg->web_root = strdup(v)) == NULL)
            return 2;
        return 0;
    case OPT_LOG_LEVEL: {
        int l = log_parse_level(v);
        if (l < 0)
            return fail(flag, v, "expected debug, info, warn or error");
        cfg->log_level = l;
        return 0;
    }
    }
    return 2;
}

static void env_name(const char *opt, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "WSBROKER_");
    for (; *opt && n + 1 < cap; opt++)
        out[n++] = *opt == '-' ? '_' : (char)toupper((unsigned char)*opt);
    out[n] = '\0';
}

int cfg_load(cfg_t *cfg, int argc, char **argv)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->bind, sizeof(cfg->bind), "127.0.0.1");
    cfg->port = 8080;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->workers = ncpu < 1 ? 1 : ncpu > CFG_MAX_WORKERS ? CFG_MAX_WORKERS : (int)ncpu;
    cfg->max_message = 1 << 20;
    cfg->max_backlog = 8 << 20;
    cfg->slow_consumer = SLOW_CLOSE;
    cfg->ping_interval = 20;
    cfg->ping_timeout = 10;
    cfg->close_timeout = 5;
    cfg->handshake_timeout = 10;
    cfg->message_timeout = 30;
    cfg->max_subscriptions = 1000;
    cfg->max_topics = 1000000;
    cfg->deflate = DEFLATE_SHARED;
    cfg->deflate_min = 128;
    cfg->echo = true;
    cfg->web = true;
    cfg->log_level = LOG_INFO;

    for (const struct option *o = options; o->name != NULL; o++) {
        if (o->val == OPT_HELP || o->val == OPT_VERSION)
            continue;
        char name[64];
        env_name(o->name, name, sizeof(name));
        const char *v = getenv(name);
        if (v != NULL && apply(cfg, o->val, name, v) != 0)
            return 2;
    }

    opterr = 0;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, ":", options, NULL)) != -1) {
        if (opt == OPT_HELP) {
            fputs(usage, stdout);
            return 1;
        }
        if (opt == OPT_VERSION) {
            printf("wsbroker %s\n", WSBROKER_VERSION);
            return 1;
        }
        if (opt == '?' || opt == ':') {
            const char *arg = argv[optind - 1];
            fprintf(stderr, "wsbroker: %s option '%s'\nTry 'wsbroker --help'.\n",
                    opt == ':' ? "missing value for" : "unknown", arg);
            return 2;
        }
        char flag[64];
        snprintf(flag, sizeof(flag), "--%s", options[opt - OPT_PORT].name);
        if (apply(cfg, opt, flag, (opt == OPT_NO_ECHO || opt == OPT_NO_WEB) ? NULL : optarg) != 0)
            return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "wsbroker: unexpected argument '%s'\nTry 'wsbroker --help'.\n",
                argv[optind]);
        return 2;
    }
    if (cfg->rate_limit > 0 && cfg->rate_burst == 0)
        cfg->rate_burst = cfg->rate_limit < 1 ? 1 : cfg->rate_limit;
    const char *why = NULL;
    if (cfg->port == 0 && cfg->tls_port == 0)
        why = "--port 0 needs --tls-port: the broker would listen nowhere";
    else if (cfg->tls_port != 0 && (cfg->tls_cert == NULL || cfg->tls_key == NULL))
        why = "--tls-port needs --tls-cert and --tls-key";
    else if (cfg->tls_port == 0 && (cfg->tls_cert || cfg->tls_key || cfg->tls_ca))
        why = "--tls-cert, --tls-key and --tls-ca need --tls-port";
    else if (cfg->tls_port != 0 && cfg->tls_port == cfg->port)
        why = "--tls-port must differ from --port";
    if (why != NULL) {
        fprintf(stderr, "wsbroker: %s\nTry 'wsbroker --help'.\n", why);
        return 2;
    }
    return 0;
}

void cfg_free(cfg_t *cfg)
{
    free(cfg->redis);
    cfg->redis = NULL;
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->tls_ca);
    cfg->tls_cert = cfg->tls_key = cfg->tls_ca = NULL;
    if (cfg->auth_key != NULL) {
        explicit_bzero(cfg->auth_key, cfg->auth_key_len);
        free(cfg->auth_key);
        cfg->auth_key = NULL;
    }
    free(cfg->web_root);
    cfg->web_root = NULL;
    free_origins(cfg);
}

static bool span_ieq(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && strncasecmp(a, b, alen) == 0;
}

/* Split "host[:port]" (IPv6 in brackets) and fill in default_port when
 * there is none. Returns false if the port is not a number. */
static bool split_authority(const char *p, size_t len, const char **host, size_t *hlen,
                            unsigned *port, unsigned default_port)
{
    size_t colon = len;
    for (size_t i = len; i > 0; i--) {
        if (p[i - 1] == ':') {
            colon = i - 1;
            break;
        }
        if (p[i - 1] == ']')
            break;
    }
    *host = p;
    *hlen = colon;
    *port = default_port;
    if (colon == len)
        return true;
    if (colon + 1 == len || len - colon > 6)
        return false;
    unsigned v = 0;
    for (size_t i = colon + 1; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    *port = v;
    return true;
}

/* An Origin "scheme://host[:port]" (http or https, no path): its host and
 * port, the scheme's default port when none is given. */
static bool parse_origin(const wsh_str_t *origin, const char **host, size_t *hlen, unsigned *port,
                         unsigned *default_port)
{
    const char *o = origin->p;
    size_t olen = origin->len, skip;
    if (olen > 7 && strncasecmp(o, "http://", 7) == 0) {
        *default_port = 80;
        skip = 7;
    } else if (olen > 8 && strncasecmp(o, "https://", 8) == 0) {
        *default_port = 443;
        skip = 8;
    } else {
        return false;
    }
    return memchr(o + skip, '/', olen - skip) == NULL &&
           split_authority(o + skip, olen - skip, host, hlen, port, *default_port) && *hlen > 0;
}

/* A host name that can only be this machine. */
static bool loopback_host(const char *h, size_t len)
{
    if (span_ieq(h, len, "localhost", 9) || span_ieq(h, len, "[::1]", 5))
        return true;
    if (len < 4 || memcmp(h, "127.", 4) != 0)
        return false;
    for (size_t i = 4; i < len; i++)
        if (!(h[i] == '.' || (h[i] >= '0' && h[i] <= '9')))
            return false;
    return true;
}

bool cfg_origin_allowed(const cfg_t *cfg, const wsh_str_t *origin, const wsh_str_t *host)
{
    if (cfg->any_origin)
        return true;
    for (size_t i = 0; i < cfg->norigins; i++)
        if (span_ieq(cfg->origins[i], strlen(cfg->origins[i]), origin->p, origin->len))
            return true;
    const char *oh, *hh;
    size_t ohlen, hhlen;
    unsigned oport, hport, default_port;
    if (!parse_origin(origin, &oh, &ohlen, &oport, &default_port))
        return false; /* "null", empty, another scheme, a path */
    /* Pages served by this machine (a local development server on another
     * port, say) are not the cross-site attacker this check is about. */
    if (loopback_host(oh, ohlen))
        return true;
    /* The same origin as the Host the browser connected to (the Host has no
     * scheme: the Origin's gives the default port). */
    return host != NULL && host->len > 0 &&
           split_authority(host->p, host->len, &hh, &hhlen, &hport, default_port) &&
           oport == hport && span_ieq(oh, ohlen, hh, hhlen);
}
