/*
 * msg.h - the JSON messages of PROTOCOL.md section 2.
 *
 * Client requests (msg_parse, the broker's hot path) and broker messages
 * (msg_parse_server, the client side) are read by one strict RFC 8259
 * validating pass that records the exact byte spans of the top-level
 * members, so the broker forwards `data` exactly as the publisher sent it
 * (number spellings, escapes and inner whitespace survive) and echoes `id`
 * unchanged; neither allocates. cJSON is the reference both are fuzzed
 * against (tests/fuzz/fuzz_msg.c). When a member appears twice, the first
 * one counts, even if its type makes it unusable.
 *
 * Encoders write into a caller's buffer and never allocate; the *_bound()
 * functions give a size that is always enough.
 */
#ifndef WSPROTO_MSG_H
#define WSPROTO_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "topic.h"

#define MSG_EPOCH_MAX 64 /* longest epoch string accepted in a request */

typedef struct msg_span {
    const char *p;
    size_t len; /* 0: absent */
} msg_span_t;

typedef enum msg_op {
    MSG_OP_SUBSCRIBE = 1,
    MSG_OP_UNSUBSCRIBE,
    MSG_OP_PUBLISH,
    MSG_OP_PING,
} msg_op_t;

typedef enum msg_err {
    MSG_OK = 0,
    MSG_E_BAD_JSON = -1,    /* not JSON, or not an object */
    MSG_E_BAD_REQUEST = -2, /* missing or mistyped member */
    MSG_E_UNKNOWN_OP = -3,  /* "op" is a string naming no op */
} msg_err_t;

/* A parsed client request. Spans point into the buffer given to msg_parse,
 * except topic, which points into topic_buf (the decoded JSON string). */
typedef struct msg_request {
    msg_op_t op;
    msg_span_t id; /* raw JSON text of a string or number id; len 0 if none */
    bool has_topic;
    msg_span_t topic; /* decoded; len TOPIC_MAX + 1 means "longer than allowed" */
    bool has_data;
    msg_span_t data; /* raw JSON text of the value, exactly as sent */
    bool has_last;
    uint64_t last;
    bool has_since;
    uint64_t since;
    bool has_epoch;
    msg_span_t epoch; /* decoded, points into epoch_buf */
    char topic_buf[TOPIC_MAX + 2];
    char epoch_buf[MSG_EPOCH_MAX + 1];
} msg_request_t;

/* Parse one client message buf[0..len) (not NUL-terminated). Returns MSG_OK
 * or a msg_err_t with *why set to a static client-facing message. The id is
 * filled in as soon as it is known, so errors after it can carry it: on
 * MSG_E_BAD_REQUEST and MSG_E_UNKNOWN_OP, req->id is valid (len 0 if the
 * request had none or it was not a string or number). Checks per op:
 * subscribe/unsubscribe need a string topic; publish needs a string topic
 * and data; last must be an integer >= 0, since an integer >= 0, epoch a
 * string of at most MSG_EPOCH_MAX bytes. Unknown members are ignored.
 * Topic grammar is not checked here (see topic.h). */
int msg_parse(const char *buf, size_t len, msg_request_t *req, const char **why);

/* Wire name of an error: "bad_json", "bad_request", "unknown_op". */
const char *msg_err_code(int err);

/* ---- Broker -> client encoders. Each returns the bytes written, or 0 if
 * cap was too small. Strings given here are escaped as JSON strings. ---- */

/* {"op":"message","topic":T,"seq":S,"data":D} with D copied verbatim. */
size_t msg_message_bound(size_t topic_len, size_t data_len);
/* The exact length msg_encode_message writes for these arguments (a
 * retained frame is allocated to fit, not to the bound). */
size_t msg_message_size(const char *topic, size_t topic_len, uint64_t seq, size_t data_len);
size_t msg_encode_message(char *out, size_t cap, const char *topic, size_t topic_len, uint64_t seq,
                          const char *data, size_t data_len);

/* {"op":"hello","client":C,"server":S,"heartbeat":H,"max_message":M};
 * heartbeat printed with up to 3 decimals, without trailing zeros. */
size_t msg_encode_hello(char *out, size_t cap, const char *client, const char *server,
                        double heartbeat, uint64_t max_message);

typedef struct msg_ack {
    msg_span_t id;     /* raw JSON, copied verbatim; required */
    const char *topic; /* NULL: omitted */
    size_t topic_len;
    bool has_seq;
    uint64_t seq;
    const char *epoch; /* NULL: omitted */
    int recovered;     /* -1 omitted, 0 false, 1 true */
} msg_ack_t;

/* {"op":"ack","id":I[,"topic":T][,"seq":S][,"epoch":E][,"recovered":B]}.
 * The bound measures the strings and the seq instead of assuming their
 * worst, so it is the exact size but for one byte of "true". */
size_t msg_ack_bound(const msg_ack_t *ack);
size_t msg_encode_ack(char *out, size_t cap, const msg_ack_t *ack);

/* {"op":"error"[,"id":I],"code":C,"message":M}; id.len 0 omits it. */
size_t msg_error_bound(msg_span_t id, const char *code, const char *message);
size_t msg_encode_error(char *out, size_t cap, msg_span_t id, const char *code,
                        const char *message);

/* {"op":"pong"[,"id":I]} */
size_t msg_encode_pong(char *out, size_t cap, msg_span_t id);

/* ---- Client side: requests and parsing what the broker sends. ---- */

/* {"op":"publish","topic":T,"data":D[,"id":I]} with D and I verbatim. */
size_t msg_publish_bound(size_t topic_len, size_t data_len, msg_span_t id);
size_t msg_encode_publish(char *out, size_t cap, const char *topic, size_t topic_len,
                          const char *data, size_t data_len, msg_span_t id);

/* {"op":"subscribe"|"unsubscribe","topic":P[,"id":I][,"last":N]
 *  [,"since":S][,"epoch":E]}. last/since < 0 and epoch NULL are omitted. */
size_t msg_encode_subscribe(char *out, size_t cap, bool unsubscribe, const char *pattern,
                            size_t pattern_len, msg_span_t id, int64_t last, int64_t since,
                            const char *epoch);

typedef enum msg_sop {
    MSG_S_HELLO = 1,
    MSG_S_ACK,
    MSG_S_ERROR,
    MSG_S_MESSAGE,
    MSG_S_PONG,
} msg_sop_t;

/* A parsed broker message. Raw spans point into the parsed buffer; decoded
 * strings are NUL-terminated copies inside the struct (cut to fit). */
typedef struct msg_server {
    msg_sop_t op;
    msg_span_t id;   /* raw JSON */
    msg_span_t data; /* raw JSON, message only */
    bool has_seq;
    uint64_t seq;
    int recovered; /* -1 absent, 0, 1 */
    double heartbeat;
    uint64_t max_message;
    char topic[TOPIC_MAX + 1];
    char code[32];
    char message[256];
    char epoch[MSG_EPOCH_MAX + 1];
    char client[64];
    char server[64];
} msg_server_t;

/* Parse one broker message buf[0..len) (not NUL-terminated) with the same
 * strict pass as msg_parse. Returns MSG_OK; MSG_E_BAD_JSON if the bytes
 * are not one strict JSON object or it has no string "op"; or
 * MSG_E_UNKNOWN_OP if "op" names none of the five. Members of the wrong
 * type count as absent: id is kept if a string or number; data (any type)
 * for "message" only; seq and max_message if digits-only integers
 * (saturating at UINT64_MAX; max_message 0 otherwise); recovered if a
 * boolean; heartbeat if a number (0 otherwise); the six strings if
 * strings ("" otherwise). Unknown members are ignored. Never allocates. */
int msg_parse_server(const char *buf, size_t len, msg_server_t *m);

/* v in decimal into out, which needs room for 20 digits; no NUL. Returns
 * the number of digits. For ids and counters built on hot paths, where
 * snprintf costs more than the rest of the work. */
size_t msg_u64(char *out, uint64_t v);

/* Escape s as the inside of a JSON string (no quotes) into out. Returns the
 * length, or 0 if cap is too small (and len > 0). At most 6 * len bytes. */
size_t msg_escape(char *out, size_t cap, const char *s, size_t len);
/* The length msg_escape writes for s, exactly. */
size_t msg_escaped_len(const char *s, size_t len);

#endif
