/*
 * pubsub.h - the /ws endpoint: PROTOCOL.md section 2 ops on a connection,
 * and the worker-local subscription table they maintain.
 *
 * A worker keeps one lpat_t per distinct pattern any of its connections
 * subscribed to (in w->subs) with the list of those subscriptions; the
 * registry's interest map learns of a pattern when its lpat_t is created
 * and forgets it when the last subscription goes.
 */
#ifndef WSBROKER_PUBSUB_H
#define WSBROKER_PUBSUB_H

#include <stddef.h>
#include <stdint.h>

#include "conn.h"

/* Send hello (the connection just opened) and start the session: its
 * rate limiter and, for a token with "exp", the timer that closes it with
 * 1008 "token expired". */
void pubsub_open(conn_t *c);

/* Handle one complete text message. */
void pubsub_message(conn_t *c, const uint8_t *data, size_t len);

/* End the session: remove every subscription of c, stop its timer, free
 * its grants. Idempotent. */
void pubsub_close(conn_t *c);

/* Queue f on every local subscriber of its topic, once per connection.
 * Takes over the caller's reference to f. */
void pubsub_deliver(wrk_t *w, frame_t *f);

/* pubsub_deliver for n consecutive messages of one topic, in seq order.
 * Connections that would queue each of them as it is get them as one
 * joined frame: one walk of the subscriptions and one queue entry for the
 * run. Takes over the caller's references. */
void pubsub_deliver_run(wrk_t *w, frame_t *const *f, size_t n);

/* Inbox drain number gen is complete: replay filters that waited for it
 * are no longer needed. */
void pubsub_drained(wrk_t *w, uint64_t gen);

/* An inbox item other than a fan-out (f->kind != FK_FANOUT: the cluster
 * link's answers for one connection). Takes over the reference. */
void pubsub_control(wrk_t *w, frame_t *f);

#endif
