/*
 * assets.h - the web client's files (clients/web), compiled into the
 * broker by broker/embed.cmake, so the demo page is served at / without a
 * --web-root.
 */
#ifndef WSBROKER_ASSETS_H
#define WSBROKER_ASSETS_H

#include <stddef.h>

typedef struct asset {
    const char *path; /* "/index.html" */
    const unsigned char *data;
    size_t len;
} asset_t;

/* Terminated by an entry with path NULL. */
extern const asset_t assets[];

#endif
