/*
 * topic.h - topic and pattern grammar (PROTOCOL.md section 3).
 *
 *   chat.lobby     a topic: 1-255 bytes of printable ASCII without spaces,
 *                  segments separated by '.', no segment empty
 *   chat.*         '*' as a whole segment matches exactly one segment
 *   chat.>         '>' as the last whole segment matches one or more
 *
 * '*' or '>' inside a longer segment ("a*b") is an ordinary character.
 * Matching is byte-exact and never allocates.
 */
#ifndef WSPROTO_TOPIC_H
#define WSPROTO_TOPIC_H

#include <stdbool.h>
#include <stddef.h>

#define TOPIC_MAX 255

typedef enum topic_err {
    TOPIC_OK = 0,
    TOPIC_E_EMPTY = -1,    /* zero length */
    TOPIC_E_LONG = -2,     /* over TOPIC_MAX bytes */
    TOPIC_E_CHAR = -3,     /* byte outside 0x21..0x7e */
    TOPIC_E_SEGMENT = -4,  /* empty segment: "a..b", ".a", "a." */
    TOPIC_E_WILDCARD = -5, /* wildcard in a publish topic */
    TOPIC_E_GT_LAST = -6,  /* '>' not the last segment */
} topic_err_t;

/* Validate t[0..len). pattern: wildcard segments allowed (subscribe,
 * unsubscribe); otherwise any wildcard segment is TOPIC_E_WILDCARD. */
int topic_check(const char *t, size_t len, bool pattern);

/* Client-facing message for a topic_err_t, e.g. "publish topic may not
 * contain wildcards". */
const char *topic_strerror(int err);

/* True if the (valid) pattern contains a wildcard segment. */
bool topic_is_pattern(const char *t, size_t len);

/* True if concrete topic matches pattern (both valid). */
bool topic_match(const char *pat, size_t plen, const char *topic, size_t tlen);

/* True if every topic matched by inner is also matched by outer, e.g.
 * "chat.>" covers "chat.*" and "chat.a.b"; "chat.*" does not cover
 * "chat.>". Both valid patterns. Used for subscribe ACLs. Decided on the
 * grammar, where '>' reaches any depth: TOPIC_MAX is not taken into
 * account, so near it the answer errs on "no". */
bool topic_covers(const char *outer, size_t olen, const char *inner, size_t ilen);

#endif
