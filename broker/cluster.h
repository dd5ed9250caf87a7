/*
 * cluster.h - cluster mode (--redis): several brokers joined through one
 * Redis, each node a full broker for its own clients.
 *
 * Every publish goes through Redis in one atomic step, a Lua script that
 * increments the topic's seq, appends the message to the topic's history
 * list (capped by --history) and PUBLISHes it on the topic's channel. Every
 * node, the publisher's included, delivers what it receives from Redis, so
 * seq order, epochs and history are the same on every node. A node
 * subscribes in Redis only to the channels and patterns its clients want
 * (the registry's interest map says when a pattern comes and goes on the
 * node). Replays (since/last) read the shared history, so a client that
 * fails over to another node recovers what it missed. The epoch is the
 * cluster's, kept in Redis, plus a generation per topic that changes if
 * Redis ever loses the topic's state.
 *
 * The link to Redis runs on a thread and loop of its own (two hiredis
 * connections: commands and pub/sub), so a slow or absent Redis never
 * stalls a worker. Workers hand it requests through a queue; its answers
 * (acks, errors, replays, subscriptions becoming live) and the messages it
 * receives go to the workers' inboxes, in the order it produced them.
 * Redis down: publishes and new subscriptions get an `unavailable` error,
 * subscribers stay connected, the link reconnects with backoff and
 * subscribes again, /healthz answers 503 "degraded".
 */
#ifndef WSBROKER_CLUSTER_H
#define WSBROKER_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <wsproto/msg.h>

#include "broker.h"

typedef struct cluster cluster_t;

/* Parse --redis (redis://HOST[:PORT][/DB]) and set up the link. Returns NULL
 * with *err set to a reason for the user. */
cluster_t *cl_new(broker_t *b, const char *url, const char **err);
/* Start the link's thread (connecting in the background). */
int cl_start(cluster_t *cl);
/* Stop the thread after the workers have stopped, and free. */
void cl_free(cluster_t *cl);

/* Connected to Redis, scripts loaded and subscriptions in place. */
bool cl_up(cluster_t *cl);

/* For /metrics: link up (0/1), times it came up, failed publishes and
 * subscriptions, messages received from Redis. */
void cl_stats(cluster_t *cl, uint64_t *up, uint64_t *connects, uint64_t *errors,
              uint64_t *messages);

/* reg_interest_fn: the node gained or lost its last subscription to a
 * pattern. */
void cl_interest(void *cl, const char *pattern, size_t len, bool wildcard, bool on);

/* Publish for connection conn of worker wid; the ack (or an error) comes
 * back through the worker's inbox. */
void cl_publish(cluster_t *cl, int wid, uint64_t conn, msg_span_t id, const char *topic,
                size_t tlen, const char *data, size_t dlen);

typedef struct cl_sub_req {
    const char *pattern;
    size_t plen;
    bool wildcard;
    msg_span_t id;
    uint64_t token; /* 0: the subscription existed already (answer only) */
    bool has_since;
    uint64_t since;
    const char *epoch; /* NULL: none given */
    size_t epoch_len;
    int64_t last; /* -1: none */
} cl_sub_req_t;

/* Subscribe for connection conn of worker wid: the link waits until Redis
 * has the node subscribed, takes the snapshot, and answers with the ack,
 * the replay and FK_SUB_READY (or an error and FK_SUB_FAILED). */
void cl_subscribe(cluster_t *cl, int wid, uint64_t conn, const cl_sub_req_t *r);

#endif
