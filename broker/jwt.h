/*
 * jwt.h - JSON Web Tokens (RFC 7519) in the JWS compact form (RFC 7515),
 * signed with HMAC-SHA256 ("HS256") and nothing else: verification and
 * signing, on OpenSSL's HMAC.
 *
 * Verification is strict: the header must name "HS256" (so "none", RS256
 * and every other algorithm are refused before anything else is looked
 * at), the three parts must be canonical unpadded base64url, the signature
 * is compared in constant time, and "exp" and "nbf", when present, must be
 * numbers and hold at the given time.
 */
#ifndef WSBROKER_JWT_H
#define WSBROKER_JWT_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

typedef enum jwt_err {
    JWT_OK = 0,
    JWT_E_FORMAT = -1,    /* not three base64url parts of JSON objects */
    JWT_E_ALG = -2,       /* alg is not HS256 ("none" included) */
    JWT_E_SIGNATURE = -3, /* signed with another key, or altered */
    JWT_E_EXPIRED = -4,   /* now >= exp */
    JWT_E_NOT_YET = -5,   /* now < nbf */
    JWT_E_CLAIMS = -6,    /* exp or nbf present but not a number */
    JWT_E_NOMEM = -7,
} jwt_err_t;

#define JWT_MAX 8192 /* longest token accepted */

/* Verify token[0..len) against key at Unix time now. On JWT_OK, *claims is
 * the payload object (the caller frees it with cJSON_Delete). */
int jwt_verify(const char *token, size_t len, const uint8_t *key, size_t keylen, int64_t now,
               cJSON **claims);

/* Short client-facing text for an error ("token expired", ...). */
const char *jwt_strerror(int err);

/* Sign the JSON object text claims into out as a compact HS256 token
 * (NUL-terminated). Returns its length, or -1 if cap is too small or
 * memory ran out. */
int jwt_sign(const char *claims, const uint8_t *key, size_t keylen, char *out, size_t cap);

/* base64url without padding (RFC 4648 section 5). encode returns the
 * length written (out needs 4 * ceil(len / 3) + 1 bytes); decode returns
 * the decoded length, or -1 for a character outside the alphabet, a length
 * no encoding has, or non-zero unused bits (non-canonical). */
size_t jwt_b64url_encode(const uint8_t *in, size_t len, char *out);
long jwt_b64url_decode(const char *in, size_t len, uint8_t *out);

#endif
