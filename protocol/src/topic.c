/*
 * topic.c - topic and pattern grammar (PROTOCOL.md section 3).
 *
 *   chat.lobby        concrete topic: segments of printable ASCII, '.'-separated
 *   chat.*            matches chat.lobby, not chat, not chat.lobby.x
 *   chat.>            matches chat.lobby and chat.lobby.x, not chat
 *   a*b.>x            no wildcard here: "a*b" and ">x" are ordinary segments
 *
 * topic_match() runs for every subscription a publish is checked against,
 * so it walks both strings once, segment by segment, and never allocates.
 * topic_covers() is the same walk generalised to two patterns; it answers
 * "is every topic of inner also a topic of outer?" for subscribe ACLs.
 */
#include "wsproto/topic.h"

/* True if t[i..) starts a segment that is exactly the one byte w. */
static bool seg_is(const char *t, size_t len, size_t i, char w)
{
    return i < len && t[i] == w && (i + 1 == len || t[i + 1] == '.');
}

int topic_check(const char *t, size_t len, bool pattern)
{
    if (len == 0)
        return TOPIC_E_EMPTY;
    if (len > TOPIC_MAX)
        return TOPIC_E_LONG;

    size_t start = 0; /* first byte of the current segment */
    for (size_t i = 0; i <= len; i++) {
        if (i < len && t[i] != '.') {
            unsigned char c = (unsigned char)t[i];
            if (c < 0x21 || c > 0x7e)
                return TOPIC_E_CHAR;
            continue;
        }
        /* t[start..i) is a complete segment */
        if (i == start)
            return TOPIC_E_SEGMENT;
        if (i - start == 1 && (t[start] == '*' || t[start] == '>')) {
            if (!pattern)
                return TOPIC_E_WILDCARD;
            if (t[start] == '>' && i != len)
                return TOPIC_E_GT_LAST;
        }
        start = i + 1;
    }
    return TOPIC_OK;
}

const char *topic_strerror(int err)
{
    switch (err) {
    case TOPIC_OK:
        return "topic is valid";
    case TOPIC_E_EMPTY:
        return "topic is empty";
    case TOPIC_E_LONG:
        return "topic is longer than 255 bytes";
    case TOPIC_E_CHAR:
        return "topic may only contain printable ASCII characters without spaces";
    case TOPIC_E_SEGMENT:
        return "topic has an empty segment";
    case TOPIC_E_WILDCARD:
        return "publish topic may not contain wildcards";
    case TOPIC_E_GT_LAST:
        return "'>' may only be the last segment of a pattern";
    default:
        return "invalid topic";
    }
}

bool topic_is_pattern(const char *t, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if ((i == 0 || t[i - 1] == '.') && (seg_is(t, len, i, '*') || seg_is(t, len, i, '>')))
            return true;
    }
    return false;
}

bool topic_match(const char *pat, size_t plen, const char *topic, size_t tlen)
{
    size_t i = 0, j = 0; /* both at the start of a segment */
    for (;;) {
        if (seg_is(pat, plen, i, '>'))
            return j < tlen; /* one or more segments left */
        if (i >= plen || j >= tlen)
            return i >= plen && j >= tlen;
        if (seg_is(pat, plen, i, '*')) {
            i++;
            while (j < tlen && topic[j] != '.')
                j++;
        } else {
            while (i < plen && j < tlen && pat[i] != '.' && pat[i] == topic[j]) {
                i++;
                j++;
            }
            /* the segments are equal only if both ended here */
            if ((i < plen && pat[i] != '.') || (j < tlen && topic[j] != '.'))
                return false;
        }
        if (i == plen || j == tlen)
            return i == plen && j == tlen;
        i++; /* both at '.' */
        j++;
    }
}

bool topic_covers(const char *outer, size_t olen, const char *inner, size_t ilen)
{
    size_t i = 0, j = 0; /* i in outer, j in inner, both at a segment start */
    for (;;) {
        if (seg_is(outer, olen, i, '>'))
            return j < ilen; /* inner has at least one segment left */
        if (i >= olen || j >= ilen)
            return i >= olen && j >= ilen;
        if (seg_is(inner, ilen, j, '>'))
            return false; /* unbounded depth under a bounded outer */
        if (seg_is(outer, olen, i, '*')) {
            i++;
            while (j < ilen && inner[j] != '.')
                j++;
        } else {
            if (seg_is(inner, ilen, j, '*'))
                return false; /* any segment under one literal */
            while (i < olen && j < ilen && outer[i] != '.' && outer[i] == inner[j]) {
                i++;
                j++;
            }
            if ((i < olen && outer[i] != '.') || (j < ilen && inner[j] != '.'))
                return false;
        }
        if (i == olen || j == ilen)
            return i == olen && j == ilen;
        i++;
        j++;
    }
}
