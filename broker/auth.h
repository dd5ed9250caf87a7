/*
 * auth.h - authentication and authorisation of /ws connections
 * (PROTOCOL.md section 6).
 *
 * With --auth-secret, the upgrade must carry an HS256 JWT signed with the
 * secret, as "Authorization: Bearer <jwt>" or the query parameter
 * "token=<jwt>". Its claims become the connection's identity ("sub") and
 * grants ("acl": {"publish": [patterns], "subscribe": [patterns]}): a
 * publish needs a publish pattern matching the topic; a subscribe needs a
 * subscribe pattern covering the whole requested pattern ("chat.>" covers
 * "chat.*", not the reverse). A token without "acl" grants nothing. When
 * "exp" passes, the connection is closed with 1008 "token expired".
 */
#ifndef WSBROKER_AUTH_H
#define WSBROKER_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <wsproto/ws_handshake.h>

typedef struct auth auth_t;

/* Check the handshake's token with key at Unix time now. Returns the
 * connection's grants, or NULL with *why set to a short reason (a missing,
 * malformed, wrongly signed, expired or not yet valid token, or no
 * memory). */
auth_t *auth_check(const uint8_t *key, size_t keylen, const wsh_request_t *req, int64_t now,
                   const char **why);

void auth_free(auth_t *a);

bool auth_may_publish(const auth_t *a, const char *topic, size_t len);
bool auth_may_subscribe(const auth_t *a, const char *pattern, size_t len);

/* The "sub" claim ("" if none), for logs. */
const char *auth_subject(const auth_t *a);

/* The "exp" claim in Unix seconds, or 0 when the token does not expire. */
int64_t auth_expires(const auth_t *a);

#endif
