/*
 * jwt.c - HS256 JSON Web Tokens (see jwt.h).
 */
#include "jwt.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t jwt_b64url_encode(const uint8_t *in, size_t len, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
        out[o++] = b64url[(v >> 6) & 63];
        out[o++] = b64url[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
        out[o++] = b64url[(v >> 6) & 63];
    }
    out[o] = '\0';
    return o;
}

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

long jwt_b64url_decode(const char *in, size_t len, uint8_t *out)
{
    if (len % 4 == 1)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64val(in[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        return -1; /* leftover bits must be zero: one token, one spelling */
    return (long)o;
}

const char *jwt_strerror(int err)
{
    switch (err) {
    case JWT_OK:
        return "ok";
    case JWT_E_FORMAT:
        return "malformed token";
    case JWT_E_ALG:
        return "token algorithm must be HS256";
    case JWT_E_SIGNATURE:
        return "bad token signature";
    case JWT_E_EXPIRED:
        return "token expired";
    case JWT_E_NOT_YET:
        return "token not yet valid";
    case JWT_E_CLAIMS:
        return "bad token claims";
    case JWT_E_NOMEM:
        return "out of memory";
    }
    return "bad token";
}

/* Decode one part into a JSON object. */
static int decode_json(const char *p, size_t len, cJSON **out)
{
    uint8_t *buf = malloc(len + 1);
    if (buf == NULL)
        return JWT_E_NOMEM;
    long n = jwt_b64url_decode(p, len, buf);
    if (n < 0) {
        free(buf);
        return JWT_E_FORMAT;
    }
    const char *end = NULL;
    *out = cJSON_ParseWithLengthOpts((const char *)buf, (size_t)n, &end, 0);
    bool whole = *out != NULL && end == (const char *)buf + n;
    free(buf);
    if (!whole || !cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        return JWT_E_FORMAT;
    }
    return JWT_OK;
}

static bool hs256(const uint8_t *key, size_t keylen, const char *data, size_t len, uint8_t mac[32])
{
    unsigned int n = 0;
    return HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)data, len, mac, &n) !=
               NULL &&
           n == 32;
}

/* A time claim: absent is fine, present must be a finite number. */
static int time_claim(const cJSON *claims, const char *name, bool *present, double *value)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(claims, name);
    *present = v != NULL;
    if (v == NULL)
        return JWT_OK;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return JWT_E_CLAIMS;
    *value = v->valuedouble;
    return JWT_OK;
}

int jwt_verify(const char *token, size_t len, const uint8_t *key, size_t keylen, int64_t now,
               cJSON **claims)
{
    *claims = NULL;
    if (len == 0 || len > JWT_MAX)
        return JWT_E_FORMAT;
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL)
        return JWT_E_FORMAT;
    size_t hlen = (size_t)(dot1 - token), plen = (size_t)(dot2 - dot1 - 1);
    size_t slen = len - (size_t)(dot2 + 1 - token);
    if (hlen == 0 || plen == 0)
        return JWT_E_FORMAT;

    /* The algorithm first: nothing else of a token for another algorithm
     * (or none) is trusted. */
    cJSON *header;
    int rc = decode_json(token, hlen, &header);
    if (rc != JWT_OK)
        return rc;
    const cJSON *alg = cJSON_GetObjectItemCaseSensitive(header, "alg");
    bool hs = cJSON_IsString(alg) && strcmp(alg->valuestring, "HS256") == 0;
    cJSON_Delete(header);
    if (!hs)
        return JWT_E_ALG;

    uint8_t sig[48], mac[32];
    if (slen != 43 || jwt_b64url_decode(dot2 + 1, slen, sig) != 32)
        return JWT_E_SIGNATURE;
    if (!hs256(key, keylen, token, (size_t)(dot2 - token), mac))
        return JWT_E_NOMEM;
    if (CRYPTO_memcmp(sig, mac, 32) != 0)
        return JWT_E_SIGNATURE;

    rc = decode_json(dot1 + 1, plen, claims);
    if (rc != JWT_OK)
        return rc;
    bool has_exp, has_nbf;
    double exp = 0, nbf = 0;
    rc = time_claim(*claims, "exp", &has_exp, &exp);
    if (rc == JWT_OK)
        rc = time_claim(*claims, "nbf", &has_nbf, &nbf);
    if (rc == JWT_OK && has_exp && (double)now >= exp)
        rc = JWT_E_EXPIRED;
    if (rc == JWT_OK && has_nbf && (double)now < nbf)
        rc = JWT_E_NOT_YET;
    if (rc != JWT_OK) {
        cJSON_Delete(*claims);
        *claims = NULL;
    }
    return rc;
}

int jwt_sign(const char *claims, const uint8_t *key, size_t keylen, char *out, size_t cap)
{
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    size_t clen = strlen(claims);
    size_t need = 4 * ((sizeof(header) - 1 + 2) / 3) + 1 + 4 * ((clen + 2) / 3) + 1 + 44;
    if (cap < need)
        return -1;
    size_t n = jwt_b64url_encode((const uint8_t *)header, sizeof(header) - 1, out);
    out[n++] = '.';
    n += jwt_b64url_encode((const uint8_t *)claims, clen, out + n);
    uint8_t mac[32];
    if (!hs256(key, keylen, out, n, mac))
        return -1;
    out[n++] = '.';
    n += jwt_b64url_encode(mac, 32, out + n);
    return (int)n;
}
