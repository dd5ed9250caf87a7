/*
 * fuzz_jwt.c - libFuzzer target for the broker's HS256 JSON Web Tokens
 * (broker/jwt.c, compiled into this target).
 *
 * Input: byte 0 is the key length K (0..63) and picks the time, the next K
 * bytes are the key, the rest is a token. Every buffer handed over is a
 * fresh exact-size heap copy, so ASan sees a read past its end. Properties
 * checked (a violation aborts):
 *
 *   - jwt_verify() on the arbitrary token returns one of the jwt_err_t
 *     codes, fills claims with an object exactly on JWT_OK, and agrees
 *     with itself when the same token is verified again;
 *   - base64url: decoding what jwt_b64url_encode() wrote gives the bytes
 *     back, and a decoded part re-encodes to the same text (one spelling);
 *   - a token jwt_sign() makes with the key over claims built from the
 *     input verifies and gives those claims back; the same token checked
 *     with another key does not verify; and a single-byte change of it
 *     (a byte from the input xor'd in at about 24 positions, which the
 *     input picks, the first and last among them) does not verify.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fuzz_dict.h"
#include "jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond);            \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define NOW 1700000000LL

static uint8_t *copy(const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    CHECK(c != NULL);
    if (n)
        memcpy(c, p, n);
    return c;
}

static bool known(int rc)
{
    return rc == JWT_OK || rc == JWT_E_FORMAT || rc == JWT_E_ALG || rc == JWT_E_SIGNATURE ||
           rc == JWT_E_EXPIRED || rc == JWT_E_NOT_YET || rc == JWT_E_CLAIMS;
}

static int verify(const char *tok, size_t len, const uint8_t *key, size_t klen, int64_t now)
{
    char *t = (char *)copy((const uint8_t *)tok, len);
    cJSON *claims = (cJSON *)1;
    int rc = jwt_verify(t, len, key, klen, now, &claims);
    CHECK(known(rc));
    CHECK(rc == JWT_OK ? cJSON_IsObject(claims) : claims == NULL);
    cJSON_Delete(claims);
    free(t);
    return rc;
}

static void b64_round_trip(const uint8_t *in, size_t len)
{
    char *enc = malloc(4 * ((len + 2) / 3) + 1);
    uint8_t *dec = malloc(len + 1);
    CHECK(enc != NULL && dec != NULL);
    size_t n = jwt_b64url_encode(in, len, enc);
    CHECK(n == (len * 4 + 2) / 3 && enc[n] == '\0');
    char *exact = (char *)copy((const uint8_t *)enc, n);
    CHECK(jwt_b64url_decode(exact, n, dec) == (long)len);
    CHECK(len == 0 || memcmp(dec, in, len) == 0);
    free(exact);
    free(enc);
    free(dec);

    /* the input read as base64url: canonical, so it re-encodes the same */
    char *text = (char *)copy(in, len);
    uint8_t *raw = malloc(len + 1);
    CHECK(raw != NULL);
    long m = jwt_b64url_decode(text, len, raw);
    if (m >= 0) {
        CHECK((size_t)m <= len);
        char *again = malloc(4 * (((size_t)m + 2) / 3) + 1);
        CHECK(again != NULL);
        CHECK(jwt_b64url_encode(raw, (size_t)m, again) == len);
        CHECK(memcmp(again, text, len) == 0);
        free(again);
    }
    free(raw);
    free(text);
}

static void sign_and_tamper(const uint8_t *key, size_t klen, const uint8_t *in, size_t len,
                            uint8_t salt)
{
    /* claims: the input as a string claim, and an expiry in the future */
    cJSON *obj = cJSON_CreateObject();
    CHECK(obj != NULL);
    char *s = malloc(len + 1);
    CHECK(s != NULL);
    for (size_t i = 0; i < len; i++)
        s[i] = in[i] ? (char)in[i] : ' ';
    s[len] = '\0';
    CHECK(cJSON_AddStringToObject(obj, "sub", s) != NULL);
    CHECK(cJSON_AddNumberToObject(obj, "exp", (double)(NOW + 60)) != NULL);
    char *claims = cJSON_PrintUnformatted(obj);
    CHECK(claims != NULL);

    size_t cap = 64 + 2 * strlen(claims) + 64;
    char *tok = malloc(cap);
    CHECK(tok != NULL);
    int n = jwt_sign(claims, key, klen, tok, cap);
    if (n < 0 || (size_t)n > JWT_MAX) {
        CHECK(n >= 0); /* the room given is always enough */
        goto out;      /* longer than any token jwt_verify accepts */
    }
    CHECK(jwt_sign(claims, key, klen, tok, (size_t)n) == -1); /* too small: refused */
    n = jwt_sign(claims, key, klen, tok, cap);

    char *t = (char *)copy((const uint8_t *)tok, (size_t)n);
    cJSON *got = NULL;
    CHECK(jwt_verify(t, (size_t)n, key, klen, NOW, &got) == JWT_OK);
    const cJSON *sub = cJSON_GetObjectItemCaseSensitive(got, "sub");
    CHECK(cJSON_IsString(sub) && strcmp(sub->valuestring, s) == 0);
    cJSON_Delete(got);
    CHECK(verify(tok, (size_t)n, key, klen, NOW + 60) == JWT_E_EXPIRED);

    /* another key */
    uint8_t *other = malloc(klen + 1);
    CHECK(other != NULL);
    if (klen)
        memcpy(other, key, klen);
    other[klen] = salt | 1; /* HMAC pads short keys with zeros: "k" and "k\0" sign alike */
    CHECK(verify(tok, (size_t)n, other, klen + 1, NOW) == JWT_E_SIGNATURE);
    free(other);

    /* single-byte changes: about 24 positions per input (which ones
     * depends on the input, so the runs cover every position), always the
     * first and the last byte */
    uint8_t x = salt ? salt : 0x20;
    int step = n / 24 + 1;
    for (int i = 0; i < n; i++) {
        if (i != 0 && i != n - 1 && (i + salt) % step != 0)
            continue;
        t[i] = (char)(tok[i] ^ x);
        CHECK(verify(t, (size_t)n, key, klen, NOW) != JWT_OK);
        t[i] = tok[i];
    }
    /* one byte cut off or added */
    CHECK(verify(t, (size_t)n - 1, key, klen, NOW) != JWT_OK);
    free(t);
    t = (char *)copy((const uint8_t *)tok, (size_t)n + 1);
    t[n] = 'A';
    CHECK(verify(t, (size_t)n + 1, key, klen, NOW) != JWT_OK);
    free(t);
out:
    free(tok);
    cJSON_free(claims);
    free(s);
    cJSON_Delete(obj);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t klen = data[0] & 0x3f;
    if (klen > size - 1)
        klen = size - 1;
    uint8_t *key = copy(data + 1, klen);
    const char *tok = (const char *)data + 1 + klen;
    size_t tlen = size - 1 - klen;
    int64_t now = (data[0] & 0x40) ? NOW : (data[0] & 0x80) ? 0 : INT64_MAX / 2;

    int rc = verify(tok, tlen, key, klen, now);
    CHECK(verify(tok, tlen, key, klen, now) == rc);
    b64_round_trip((const uint8_t *)tok, tlen);
    sign_and_tamper(key, klen, (const uint8_t *)tok, tlen > 96 ? 96 : tlen,
                    tlen ? (uint8_t)tok[0] : 0x55);
    free(key);
    return 0;
}
