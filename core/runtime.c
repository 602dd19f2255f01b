/* The runtime. One libuv loop per process owns every ZeroMQ socket (edges are ROUTER/DEALER
 * pairs speaking the credit protocol of edge.h); each stage instance runs its callbacks on a
 * worker thread. Workers and the loop meet at two small queues per instance:
 *   inbox:  loop -> worker, received messages (bounded by the credit granted upstream);
 *   outbox: worker -> loop, messages to send (sf_emit blocks while it is full).
 * Backpressure therefore runs end to end: a slow stage returns credit slowly, its producers'
 * outboxes fill, and their sf_emit calls wait. Nothing is dropped and memory stays bounded.
 *
 * ZMQ_FD is edge-triggered and only says "something changed", so every wake-up drains every
 * socket until EAGAIN and re-checks ZMQ_EVENTS afterwards (an idle handle re-runs the pump
 * while any socket still shows input). */
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "progress.h"
#include "runtime.h"
#include "sf_internal.h"

/* The outbox always takes OUTBOX_MIN messages and more while they total at most OUTBOX_BYTES (up
 * to OUTBOX_CAP): large tensors wait as before, small messages queue up so that the loop can send
 * them in batches. */
#define OUTBOX_CAP 256
#define OUTBOX_MIN 4
#define OUTBOX_BYTES (1 << 20)
#define PUMP_BATCH 256

volatile sig_atomic_t sf_signal_before_run;

static void fail_run(sf_runtime *rt, const char *fmt, ...) SF_PRINTF(2, 3);

static void wake_workers(sf_runtime *rt) {
    for (int i = 0; i < rt->n_inst; i++) {
        pthread_mutex_lock(&rt->inst[i]->lock);
        pthread_cond_broadcast(&rt->inst[i]->cond);
        pthread_mutex_unlock(&rt->inst[i]->lock);
    }
}

/* Records the first error, tells remote peers, and makes every worker stop. Loop thread or
 * worker thread. */
static void fail_run(sf_runtime *rt, const char *fmt, ...) {
    char first[sizeof rt->error] = "";
    pthread_mutex_lock(&rt->err_lock);
    if (!rt->error[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(rt->error, sizeof rt->error, fmt, ap);
        va_end(ap);
        memcpy(first, rt->error, sizeof first);
    }
    pthread_mutex_unlock(&rt->err_lock);
    /* Logged now, so the cause comes before what the other stages say while they stop (a trainer
     * that got no activations...); the summary ends with it again. */
    if (first[0]) sf_log(SF_LOG_ERROR, "%s", first);
    atomic_store(&rt->aborting, 1);
    atomic_store(&rt->stopping, 1);
    wake_workers(rt);
    uv_async_send(&rt->wake);
}

/* Stops the sources and lets the pipeline drain, as SIGINT does, and asks the remote producers to
 * stop too; the EOS frames this process sends then say the streams ended early. The stages'
 * finish callbacks see sf_stopping(), so nothing is marked complete. cause says why (a signal
 * here, or which peer brought the interrupt). Loop thread. */
static void interrupt_run(sf_runtime *rt, const char *cause) {
    if (atomic_exchange(&rt->interrupted, 1)) return;
    snprintf(rt->interrupt_cause, sizeof rt->interrupt_cause, "%s", cause);
    sf_log(SF_LOG_WARN, "%s: stopping the sources and draining the pipeline%s", cause, rt->signals ? " (again to abort at once)" : "");
    atomic_store(&rt->stopping, 1);
    for (int i = 0; i < rt->n_inst; i++)
        for (int j = 0; j < rt->inst[i]->n_in; j++) {
            sf_in_link *l = &rt->inst[i]->in[j];
            if (l->remote && !l->eos) sf_frame_send(l->sock, NULL, SF_FRAME_STOP, 0, 0, NULL);
        }
    uv_async_send(&rt->wake);
}

/* ------------------------------------------------------------------------------------------ */
/* Stage API (called on worker threads)                                                        */

static const char *param(sf_ctx *ctx, const char *name) {
    const char *v = sf_pipeline_param(ctx->decl, name);
    if (!v) sf_log(SF_LOG_ERROR, "stage asked for parameter '%s', which it does not declare", name);
    return v;
}

int64_t sf_param_int(sf_ctx *ctx, const char *name) {
    const char *v = param(ctx, name);
    return v ? strtoll(v, NULL, 0) : 0;
}
double sf_param_float(sf_ctx *ctx, const char *name) {
    const char *v = param(ctx, name);
    return v ? strtod(v, NULL) : 0;
}
int sf_param_bool(sf_ctx *ctx, const char *name) {
    const char *v = param(ctx, name);
    return v && (!strcmp(v, "true") || !strcmp(v, "1"));
}
const char *sf_param_str(sf_ctx *ctx, const char *name) {
    const char *v = param(ctx, name);
    return v ? v : "";
}

int sf_param_fail(sf_ctx *ctx, const char *name, const char *fmt, ...) {
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const sf_stage_decl *st = ctx->decl;
    int line = st->line;
    for (int i = 0; i < st->n_params; i++)
        if (strcmp(st->params[i].key, name) == 0) line = st->params[i].line;
    ctx->located = 1;
    return sf_fail("%s:%d: stage '%s' (%s) parameter '%s': %s", ctx->pipeline_path, line, st->name, st->type, name, msg);
}

int sf_stopping(sf_ctx *ctx) { return ctx->rt && atomic_load(&ctx->rt->stopping); }
int sf_replica_index(sf_ctx *ctx) { return ctx->replica; }
int sf_replica_count(sf_ctx *ctx) { return ctx->decl->replicas; }
const char *sf_instance_name(sf_ctx *ctx) { return ctx->name; }

void sf_progress(sf_ctx *ctx, uint64_t done, uint64_t total, const char *unit) {
    atomic_store(&ctx->prog_done, done);
    atomic_store(&ctx->prog_total, total);
    if (unit && strcmp(ctx->prog_unit, unit) != 0) {
        pthread_mutex_lock(&ctx->lock);
        snprintf(ctx->prog_unit, sizeof ctx->prog_unit, "%s", unit);
        pthread_mutex_unlock(&ctx->lock);
    }
}

void sf_count(sf_ctx *ctx, const char *counter, int64_t delta) {
    pthread_mutex_lock(&ctx->lock);
    int i = 0;
    while (i < ctx->n_counters && strcmp(ctx->counters[i].name, counter) != 0) i++;
    if (i == ctx->n_counters && i < 16) snprintf(ctx->counters[ctx->n_counters++].name, 48, "%s", counter);
    if (i < 16) ctx->counters[i].value += delta;
    pthread_mutex_unlock(&ctx->lock);
}

int sf_emit(sf_ctx *ctx, sf_msg *m) {
    if (!ctx->rt) { /* from a check hook */
        sf_msg_free(m);
        return sf_fail("sf_emit called outside a run (from a check hook)");
    }
    size_t len;
    void *buf = sf_msg_release(m, &len);
    if (!buf) return SF_ERR; /* a put failed: sf_last_error() says which */
    pthread_mutex_lock(&ctx->lock);
    while ((ctx->out_len == OUTBOX_CAP || (ctx->out_len >= OUTBOX_MIN && ctx->out_bytes + len > OUTBOX_BYTES)) &&
           !atomic_load(&ctx->rt->aborting))
        pthread_cond_wait(&ctx->cond, &ctx->lock);
    if (atomic_load(&ctx->rt->aborting)) {
        pthread_mutex_unlock(&ctx->lock);
        free(buf);
        return sf_fail("the pipeline is stopping");
    }
    int slot = (ctx->out_head + ctx->out_len++) % OUTBOX_CAP;
    ctx->outbox[slot].buf = buf;
    ctx->outbox[slot].len = len;
    ctx->out_bytes += len;
    pthread_mutex_unlock(&ctx->lock);
    uv_async_send(&ctx->rt->wake);
    return SF_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Worker threads                                                                              */

static int worker_loop(sf_ctx *ctx) {
    const sf_stage_def *d = ctx->def;
    sf_runtime *rt = ctx->rt;
    if (d->max_inputs == 0) {
        while (!atomic_load(&rt->aborting)) {
            int rc = d->produce(ctx, ctx->state);
            if (rc == SF_DONE) return SF_OK;
            if (rc != SF_OK) return SF_ERR;
        }
        return SF_OK;
    }
    for (;;) {
        pthread_mutex_lock(&ctx->lock);
        while (ctx->inbox_len == 0 && !ctx->inputs_done && !atomic_load(&rt->aborting))
            pthread_cond_wait(&ctx->cond, &ctx->lock);
        if (atomic_load(&rt->aborting) || (ctx->inbox_len == 0 && ctx->inputs_done)) {
            pthread_mutex_unlock(&ctx->lock);
            break;
        }
        sf_inbox_item item = ctx->inbox[ctx->inbox_head];
        ctx->inbox_head = (ctx->inbox_head + 1) % ctx->inbox_cap;
        ctx->inbox_len--;
        pthread_mutex_unlock(&ctx->lock);

        sf_in_link *link = &ctx->in[item.link];
        sf_msg *m = sf_msg_parse((const char *)zmq_msg_data(&item.msg) + item.off, item.len);
        int rc;
        if (!m) rc = sf_fail("bad message from %s: %s", link->peer, sf_last_error());
        else rc = d->on_message(ctx, ctx->state, link->input, m);
        sf_msg_free(m);
        zmq_msg_close(&item.msg);
        atomic_fetch_add(&ctx->msgs_in, 1);
        atomic_fetch_add(&link->credit_return, 1);
        atomic_fetch_add(&link->processed, 1);
        uv_async_send(&rt->wake);
        if (rc != SF_OK) return SF_ERR;
    }
    if (atomic_load(&rt->aborting)) return SF_OK;
    return d->on_eos ? d->on_eos(ctx, ctx->state) : SF_OK;
}

static void *worker_main(void *arg) {
    sf_ctx *ctx = arg;
    sf_runtime *rt = ctx->rt;
    sf_log_set_thread_name(ctx->name);
    int ok = 1;
    if (ctx->def->init && ctx->def->init(ctx, &ctx->state) != SF_OK) {
        fail_run(rt, "%s: %s", ctx->name, sf_last_error());
        ok = 0;
    }
    if (ok && worker_loop(ctx) != SF_OK && !atomic_load(&rt->aborting)) {
        fail_run(rt, "%s: %s", ctx->name, sf_last_error());
        ok = 0;
    }
    /* finish runs in every case, so a trainer can save after an interrupt or a failure */
    if (ctx->def->finish && (ok || ctx->state) && ctx->def->finish(ctx, ctx->state) != SF_OK)
        fail_run(rt, "%s: %s", ctx->name, sf_last_error());
    if (ctx->def->destroy && ctx->state) ctx->def->destroy(ctx->state);
    ctx->state = NULL;
    atomic_store(&ctx->worker_done, 1);
    uv_async_send(&rt->wake);
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Endpoints                                                                                   */

/* Instances of the pipeline in a fixed order: stage order, then replica. */
static int global_index(const sf_pipeline *p, int stage, int replica) {
    int k = 0;
    for (int i = 0; i < stage; i++) k += p->stages[i].replicas;
    return k + replica;
}

static void instance_name(const sf_stage_decl *s, int r, char *out, size_t n) {
    if (s->replicas == 1) snprintf(out, n, "%s", s->name);
    else snprintf(out, n, "%s[%d]", s->name, r);
}

/* Where producer instance (stage, r) listens for consumers on other hosts. */
static void remote_endpoint(const sf_pipeline *p, int stage, int r, int bind, char *out, size_t n) {
    const sf_host *h = &p->hosts[sf_replica_host(&p->stages[stage], r)];
    if (strncmp(h->endpoint, "ipc://", 6) == 0) {
        snprintf(out, n, "%s/%s.%d", h->endpoint, p->stages[stage].name, r);
        return;
    }
    const char *colon = strrchr(h->endpoint + 6, ':');
    int port = atoi(colon + 1) + global_index(p, stage, r);
    if (bind) snprintf(out, n, "tcp://%.*s:%d", (int)(colon - h->endpoint - 6), h->endpoint + 6, port);
    else snprintf(out, n, "%.*s:%d", (int)(colon - h->endpoint), h->endpoint, port);
}

static void local_endpoint(const sf_pipeline *p, int stage, int r, char *out, size_t n) {
    snprintf(out, n, "inproc://sf/%s/%d", p->stages[stage].name, r);
}

/* ------------------------------------------------------------------------------------------ */
/* The loop: receiving                                                                         */

static int is_local(sf_runtime *rt, int stage, int replica) {
    return rt->host < 0 || sf_replica_host(&rt->p->stages[stage], replica) == rt->host;
}

static sf_out_link *find_out_link(sf_ctx *ctx, const char *id) {
    for (int i = 0; i < ctx->n_out; i++)
        if (strcmp(ctx->out[i].id, id) == 0) return &ctx->out[i];
    return NULL;
}

/* A frame on a producer's listening socket from a peer that is none of its consumers (a port
 * scanner, a stray client): dropped, with a warning at most every 10 s. */
static void drop_unknown(sf_ctx *ctx, const sf_frame *f, const char *what) {
    sf_runtime *rt = ctx->rt;
    double now = sf_now();
    if (rt->dropped++ && now - rt->dropped_logged < 10) return;
    rt->dropped_logged = now;
    sf_log(SF_LOG_WARN, "%s: dropped %s from unknown peer %s%s%s (%llu so far; not one of its consumers)", ctx->name, what,
           f->id[0] ? f->id : "(no id)", f->addr[0] ? " at " : "", f->addr, (unsigned long long)rt->dropped);
}

static void handle_router_frame(sf_ctx *ctx, sf_frame *f) {
    sf_runtime *rt = ctx->rt;
    sf_out_link *l = find_out_link(ctx, f->id);
    if (!l) {
        drop_unknown(ctx, f, "a frame");
        return;
    }
    l->last_seen = sf_now();
    switch (f->h.type) {
    case SF_FRAME_HELLO:
        if (!l->hello) {
            l->window = f->h.n;
            l->sizes_cap = l->window > SF_SMALL_WINDOW_MSGS ? l->window : SF_SMALL_WINDOW_MSGS;
            l->sizes = sf_alloc("a link's table of in-flight message sizes", (size_t)l->sizes_cap, sizeof *l->sizes);
            if (!l->sizes) {
                fail_run(rt, "%s: %s", ctx->name, sf_last_error());
                return;
            }
            l->hello = 1;
        }
        break;
    case SF_FRAME_CREDIT:
        if (f->h.n > l->in_flight) {
            fail_run(rt, "%s: protocol error: consumer %s returned %u credits with %lld messages in flight", ctx->name, l->id, f->h.n,
                     (long long)l->in_flight);
            return;
        }
        for (uint32_t k = 0; k < f->h.n; k++) { /* credits come back in the order the messages went */
            l->bytes_in_flight -= l->sizes[l->sizes_head];
            l->sizes_head = (l->sizes_head + 1) % l->sizes_cap;
        }
        l->in_flight -= f->h.n;
        break;
    case SF_FRAME_EOS_ACK:
        if (!l->eos_sent || f->h.seq != l->seq) {
            fail_run(rt, "%s: consumer %s acknowledged %llu messages, %llu were sent%s", ctx->name, l->id,
                     (unsigned long long)f->h.seq, (unsigned long long)l->seq, l->eos_sent ? "" : " and the stream goes on");
            return;
        }
        l->eos_acked = 1;
        break;
    case SF_FRAME_ABORT: {
        size_t n = zmq_msg_size(&f->payload);
        fail_run(rt, "%s (downstream) failed: %.*s", l->id, (int)(n > 600 ? 600 : n), (const char *)zmq_msg_data(&f->payload));
        break;
    }
    case SF_FRAME_STOP: {
        char cause[160];
        snprintf(cause, sizeof cause, "interrupted downstream: consumer %s was interrupted", l->id);
        interrupt_run(rt, cause);
        break;
    }
    case SF_FRAME_HEARTBEAT: break;
    default: fail_run(rt, "%s: protocol error: unexpected frame 0x%x from consumer %s", ctx->name, f->h.type, l->id);
    }
}

/* Messages a consumer accepts in flight on one link: its window, or more while they are small
 * (edge.h). The inbox holds this many per link, so a producer within its credit always finds room. */
static int64_t link_limit(const sf_runtime *rt) {
    return rt->o.credit > SF_SMALL_WINDOW_MSGS ? rt->o.credit : SF_SMALL_WINDOW_MSGS;
}

/* Checks that n messages starting at seq are the next ones of link l and within its credit. */
static int accept_messages(sf_ctx *ctx, sf_in_link *l, uint64_t seq, uint32_t n) {
    if (l->eos || seq != l->expect_seq) {
        fail_run(ctx->rt, "%s: message %llu from %s arrived where %llu was expected: a message was lost or duplicated", ctx->name,
                 (unsigned long long)seq, l->peer, (unsigned long long)l->expect_seq);
        return 0;
    }
    if (l->outstanding + n > link_limit(ctx->rt)) {
        fail_run(ctx->rt, "%s: %s sent more messages than the credit it was given", ctx->name, l->peer);
        return 0;
    }
    l->expect_seq += n;
    l->received += n;
    l->outstanding += n;
    return 1;
}

/* Queues message [off, off + len) of payload for the worker (a reference: no byte is copied).
 * Under ctx->lock; accept_messages made room. */
static void enqueue(sf_ctx *ctx, int li, zmq_msg_t *payload, size_t off, size_t len) {
    sf_inbox_item *it = &ctx->inbox[(ctx->inbox_head + ctx->inbox_len++) % ctx->inbox_cap];
    zmq_msg_init(&it->msg);
    zmq_msg_copy(&it->msg, payload);
    it->off = off;
    it->len = len;
    it->link = li;
}

static void handle_in_frame(sf_ctx *ctx, int li, sf_frame *f) {
    sf_runtime *rt = ctx->rt;
    sf_in_link *l = &ctx->in[li];
    l->last_seen = sf_now();
    switch (f->h.type) {
    case SF_FRAME_DATA:
        if (!accept_messages(ctx, l, f->h.seq, 1)) return;
        l->bytes += zmq_msg_size(&f->payload);
        pthread_mutex_lock(&ctx->lock);
        enqueue(ctx, li, &f->payload, 0, zmq_msg_size(&f->payload));
        pthread_cond_signal(&ctx->cond);
        pthread_mutex_unlock(&ctx->lock);
        break;
    case SF_FRAME_BATCH: {
        const unsigned char *b = zmq_msg_data(&f->payload);
        size_t size = zmq_msg_size(&f->payload), off = 0, mo, ml;
        uint32_t k = 0;
        while (k < f->h.n && sf_batch_next(b, size, &off, &mo, &ml)) k++;
        if (f->h.n == 0 || k != f->h.n || off != size) {
            fail_run(rt, "%s: malformed batch from %s: %u messages announced, %u found in %zu bytes", ctx->name, l->peer, f->h.n, k, size);
            return;
        }
        if (!accept_messages(ctx, l, f->h.seq, f->h.n)) return;
        l->bytes += size - 4 * (size_t)f->h.n;
        off = 0;
        pthread_mutex_lock(&ctx->lock);
        while (sf_batch_next(b, size, &off, &mo, &ml)) enqueue(ctx, li, &f->payload, mo, ml);
        pthread_cond_signal(&ctx->cond);
        pthread_mutex_unlock(&ctx->lock);
        break;
    }
    case SF_FRAME_EOS: {
        if (f->h.seq != l->received) {
            fail_run(rt, "%s: %s ended its stream after %llu messages but %llu arrived: messages were lost",
                     ctx->name, l->peer, (unsigned long long)f->h.seq, (unsigned long long)l->received);
            return;
        }
        l->eos = 1;
        if (f->h.n & SF_EOS_INTERRUPTED) {
            char cause[160];
            snprintf(cause, sizeof cause, "interrupted upstream: %s ended its stream early", l->peer);
            interrupt_run(rt, cause);
        }
        if (l->remote && sf_frame_send(l->sock, NULL, SF_FRAME_EOS_ACK, 0, l->received, NULL) != 0) {
            fail_run(rt, "%s: acknowledging end-of-stream to %s: %s", ctx->name, l->peer, zmq_strerror(errno));
            return;
        }
        int all = 1;
        for (int i = 0; i < ctx->n_in; i++) all &= ctx->in[i].eos;
        if (all) {
            pthread_mutex_lock(&ctx->lock);
            ctx->inputs_done = 1;
            pthread_cond_signal(&ctx->cond);
            pthread_mutex_unlock(&ctx->lock);
        }
        break;
    }
    case SF_FRAME_ABORT: {
        size_t n = zmq_msg_size(&f->payload);
        fail_run(rt, "%s (upstream) failed: %.*s", l->peer, (int)(n > 600 ? 600 : n), (const char *)zmq_msg_data(&f->payload));
        break;
    }
    case SF_FRAME_HEARTBEAT: break;
    default: fail_run(rt, "%s: protocol error: unexpected frame 0x%x from producer %s", ctx->name, f->h.type, l->peer);
    }
}

/* Reads up to PUMP_BATCH frames from a socket; returns how many. */
static int drain(sf_ctx *ctx, void *sock, int in_link) {
    int n = 0;
    char err[200];
    sf_frame f;
    while (n < PUMP_BATCH) {
        int rc = sf_frame_recv(sock, in_link < 0, &f, err, sizeof err);
        if (rc == 0) break;
        n++;
        if (rc < 0) {
            if (in_link < 0 && !find_out_link(ctx, f.id)) drop_unknown(ctx, &f, "a malformed frame");
            else fail_run(ctx->rt, "%s: bad frame from %s: %s", ctx->name, in_link < 0 ? f.id : ctx->in[in_link].peer, err);
            continue;
        }
        if (in_link < 0) handle_router_frame(ctx, &f);
        else handle_in_frame(ctx, in_link, &f);
        if (f.has_payload) zmq_msg_close(&f.payload);
    }
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* The loop: sending                                                                           */

static void free_buffer(void *data, void *hint) {
    (void)hint;
    free(data); /* runs on a ZeroMQ I/O thread; free() is thread-safe */
}

/* Whether link l may take one more message of len bytes: within its window, or beyond it while
 * the message is small and the link's small-message budget (edge.h) has room. */
static int can_send(const sf_out_link *l, size_t len) {
    if (!l->hello) return 0;
    if (l->in_flight < l->window) return 1;
    return l->in_flight < l->sizes_cap && len <= SF_BATCH_MAX_MSG && l->bytes_in_flight + len <= SF_SMALL_WINDOW_BYTES;
}

/* Picks the links a message of len bytes goes to: per consumer stage, one replica with credit
 * (share) or every replica (broadcast). 0 if some consumer stage has no credit yet. */
static int pick_targets(sf_ctx *ctx, size_t len, int *targets, int *n_targets) {
    *n_targets = 0;
    for (int g = 0; g < ctx->n_groups; g++) {
        if (ctx->group_broadcast[g]) {
            for (int i = 0; i < ctx->n_out; i++)
                if (ctx->out[i].group == g && !can_send(&ctx->out[i], len)) return 0;
            for (int i = 0; i < ctx->n_out; i++)
                if (ctx->out[i].group == g) targets[(*n_targets)++] = i;
            continue;
        }
        int best = -1, start = ctx->group_rr[g];
        for (int k = 0; k < ctx->n_out && best < 0; k++) {
            int i = (start + k) % ctx->n_out;
            if (ctx->out[i].group == g && can_send(&ctx->out[i], len)) best = i;
        }
        if (best < 0) return 0;
        ctx->group_rr[g] = best + 1;
        targets[(*n_targets)++] = best;
    }
    return 1;
}

static int all_hello(sf_ctx *ctx) {
    for (int i = 0; i < ctx->n_out; i++)
        if (!ctx->out[i].hello) return 0;
    return 1;
}

static void send_failed(sf_ctx *ctx, const sf_out_link *l) {
    if (errno == EHOSTUNREACH)
        fail_run(ctx->rt, "%s: lost contact with consumer %s: its connection closed (did its process die?)", ctx->name, l->id);
    else fail_run(ctx->rt, "%s: sending to %s: %s", ctx->name, l->id, zmq_strerror(errno));
}

/* Sends the small messages packed for link l as one BATCH frame; they are its last batch_n
 * sequence numbers (a large message on the link sends the batch before it). */
static int send_batch(sf_ctx *ctx, sf_out_link *l) {
    if (!l->batch_n) return 0;
    zmq_msg_t m;
    zmq_msg_init_data(&m, l->batch, l->batch_len, free_buffer, NULL); /* ZeroMQ frees it once sent */
    int rc = sf_frame_send(ctx->router, l->id, SF_FRAME_BATCH, l->batch_n, l->seq - l->batch_n, &m);
    if (rc != 0) send_failed(ctx, l);
    zmq_msg_close(&m);
    l->batch = NULL;
    l->batch_len = 0;
    l->batch_n = 0;
    return rc;
}

/* Moves message buf (len bytes) to link l: packed into the link's batch when small, else sent
 * alone without a copy (whole owns buf). Counts it in flight. */
static int send_to_link(sf_ctx *ctx, sf_out_link *l, const void *buf, size_t len, zmq_msg_t *whole) {
    if (len > SF_BATCH_MAX_MSG) {
        if (send_batch(ctx, l) != 0) return -1;
        zmq_msg_t copy; /* reference-counted: no byte is copied */
        zmq_msg_init(&copy);
        zmq_msg_copy(&copy, whole);
        int rc = sf_frame_send(ctx->router, l->id, SF_FRAME_DATA, 0, l->seq, &copy);
        zmq_msg_close(&copy);
        if (rc != 0) {
            send_failed(ctx, l);
            return -1;
        }
    } else {
        if (l->batch_len + 4 + len > SF_BATCH_BYTES && send_batch(ctx, l) != 0) return -1;
        if (!l->batch && !(l->batch = sf_alloc("a batch of small messages", 1, SF_BATCH_BYTES))) {
            fail_run(ctx->rt, "%s: %s", ctx->name, sf_last_error());
            return -1;
        }
        sf_batch_append(l->batch, &l->batch_len, buf, len);
        l->batch_n++;
    }
    l->sizes[(l->sizes_head + l->in_flight) % l->sizes_cap] = len;
    l->in_flight++;
    l->bytes_in_flight += len;
    l->seq++;
    l->bytes += len;
    return 0;
}

/* Sends what the outbox holds while the consumers have credit. Small messages are packed per link
 * and every batch goes out before returning: nothing waits for more messages to come. */
static int flush_outbox(sf_ctx *ctx) {
    sf_runtime *rt = ctx->rt;
    int sent = 0;
    int *targets = ctx->targets, n_targets; /* at most one per link: n_out entries */
    for (;;) {
        pthread_mutex_lock(&ctx->lock);
        int have = ctx->out_len;
        pthread_mutex_unlock(&ctx->lock);
        if (!have || atomic_load(&rt->aborting) || !all_hello(ctx)) break;
        void *buf = ctx->outbox[ctx->out_head].buf;
        size_t len = ctx->outbox[ctx->out_head].len;
        if (!pick_targets(ctx, len, targets, &n_targets)) break;
        zmq_msg_t whole;
        zmq_msg_init_data(&whole, buf, len, free_buffer, NULL);
        for (int t = 0; t < n_targets; t++)
            if (send_to_link(ctx, &ctx->out[targets[t]], buf, len, &whole) != 0) break;
        zmq_msg_close(&whole);
        atomic_fetch_add(&ctx->msgs_out, 1);
        atomic_fetch_add(&ctx->bytes_out, len);
        pthread_mutex_lock(&ctx->lock);
        ctx->out_head = (ctx->out_head + 1) % OUTBOX_CAP;
        ctx->out_len--;
        ctx->out_bytes -= len;
        pthread_cond_signal(&ctx->cond);
        pthread_mutex_unlock(&ctx->lock);
        sent++;
    }
    for (int i = 0; i < ctx->n_out; i++)
        if (ctx->out[i].batch_n && !atomic_load(&rt->aborting)) send_batch(ctx, &ctx->out[i]);
    /* With no consumer at all, messages are counted and dropped. */
    if (ctx->n_out == 0) {
        pthread_mutex_lock(&ctx->lock);
        while (ctx->out_len) {
            atomic_fetch_add(&ctx->msgs_out, 1);
            atomic_fetch_add(&ctx->bytes_out, ctx->outbox[ctx->out_head].len);
            free(ctx->outbox[ctx->out_head].buf);
            ctx->out_head = (ctx->out_head + 1) % OUTBOX_CAP;
            ctx->out_len--;
        }
        ctx->out_bytes = 0;
        pthread_cond_signal(&ctx->cond);
        pthread_mutex_unlock(&ctx->lock);
    }
    return sent;
}

static void send_credits(sf_ctx *ctx) {
    for (int i = 0; i < ctx->n_in; i++) {
        sf_in_link *l = &ctx->in[i];
        int n = atomic_exchange(&l->credit_return, 0);
        if (n <= 0 || l->eos) continue;
        if (sf_frame_send(l->sock, NULL, SF_FRAME_CREDIT, (uint32_t)n, 0, NULL) != 0)
            atomic_fetch_add(&l->credit_return, n); /* retried on the next pump */
        else l->outstanding -= n;
    }
}

static void send_eos(sf_ctx *ctx) {
    if (ctx->eos_done || !atomic_load(&ctx->worker_done) || atomic_load(&ctx->rt->aborting)) return;
    pthread_mutex_lock(&ctx->lock);
    int pending = ctx->out_len;
    pthread_mutex_unlock(&ctx->lock);
    if (pending || !all_hello(ctx)) return;
    for (int i = 0; i < ctx->n_out; i++) {
        sf_out_link *l = &ctx->out[i];
        uint32_t flags = atomic_load(&ctx->rt->interrupted) ? SF_EOS_INTERRUPTED : 0;
        if (sf_frame_send(ctx->router, l->id, SF_FRAME_EOS, flags, l->seq, NULL) != 0) {
            fail_run(ctx->rt, "%s: sending end-of-stream to %s: %s", ctx->name, l->id, zmq_strerror(errno));
            return;
        }
        l->eos_sent = 1;
    }
    ctx->eos_done = 1;
}

/* Every remote consumer has acknowledged the end-of-stream, so this process may exit. */
static int eos_acked(const sf_ctx *ctx) {
    for (int i = 0; i < ctx->n_out; i++)
        if (ctx->out[i].remote && !ctx->out[i].eos_acked) return 0;
    return 1;
}

static int has_input(void *sock) {
    int ev = 0;
    size_t sz = sizeof ev;
    zmq_getsockopt(sock, ZMQ_EVENTS, &ev, &sz);
    return ev & ZMQ_POLLIN;
}

static void shutdown_loop(sf_runtime *rt);
static void on_again(uv_idle_t *h);

/* One pass over everything; repeated while it makes progress. */
static void pump(sf_runtime *rt) {
    for (int round = 0; round < 64; round++) {
        int work = 0;
        for (int i = 0; i < rt->n_inst; i++) {
            sf_ctx *c = rt->inst[i];
            if (c->router) work += drain(c, c->router, -1);
            for (int j = 0; j < c->n_in; j++) work += drain(c, c->in[j].sock, j);
            send_credits(c);
            work += flush_outbox(c);
            send_eos(c);
        }
        if (!work) break;
    }
    int more = 0, done = 1;
    for (int i = 0; i < rt->n_inst; i++) {
        sf_ctx *c = rt->inst[i];
        if (c->router) more |= has_input(c->router);
        for (int j = 0; j < c->n_in; j++) more |= has_input(c->in[j].sock);
        done &= atomic_load(&c->worker_done) && ((c->eos_done && eos_acked(c)) || atomic_load(&rt->aborting));
    }
    if (done) shutdown_loop(rt);
    else if (more) uv_idle_start(&rt->again, on_again);
}

static void on_again(uv_idle_t *h) {
    uv_idle_stop(h);
    pump(h->data);
}

static void on_wake(uv_async_t *h) { pump(h->data); }

static void on_poll(uv_poll_t *h, int status, int events) {
    (void)status, (void)events;
    pump(h->data);
}

static void close_handle(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Stops the loop; handles are closed after the workers are joined, since a finishing worker
 * may still be signalling the async handle. */
static void shutdown_loop(sf_runtime *rt) { uv_stop(&rt->loop); }

/* ------------------------------------------------------------------------------------------ */
/* Signals, heartbeats, time-outs                                                              */

/* A stop asked for here (a signal, stdin closed): the first drains, the second aborts at once. */
static void stop_here(sf_runtime *rt, const char *cause) {
    if (rt->signals++) {
        fprintf(stderr, "\nsaeflow: %s again: aborting now\n", cause);
        _exit(130);
    }
    interrupt_run(rt, cause);
}

/* A lost session (terminal or ssh) shows as SIGHUP, as end-of-file on stdin, or both (a pty):
 * one stop, not a second one that would abort. */
static void session_lost(sf_runtime *rt, const char *cause) {
    if (!rt->hangup++) stop_here(rt, cause);
}

/* SIGINT, SIGTERM and SIGHUP stop the run cleanly. */
static void on_signal(uv_signal_t *h, int signum) {
    if (signum == SIGHUP) session_lost(h->data, "hung up (SIGHUP)");
    else stop_here(h->data, signum == SIGINT ? "interrupted (SIGINT)" : "terminated (SIGTERM)");
}

/* stop_on_stdin_eof: saeflow launch stops a part by closing its stdin, which ssh forwards (and
 * sshd closes it too when the session is lost). Input itself is ignored. */
static void on_stdin(uv_poll_t *h, int status, int events) {
    (void)events;
    char buf[256];
    ssize_t n = status < 0 ? 0 : read(STDIN_FILENO, buf, sizeof buf);
    if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR))) return;
    uv_poll_stop(h);
    session_lost(h->data, "standard input closed (--stop-on-stdin-eof)");
}

static void check_peers(sf_runtime *rt) {
    double now = sf_now();
    for (int i = 0; i < rt->n_inst; i++) {
        sf_ctx *c = rt->inst[i];
        for (int j = 0; j < c->n_out; j++) {
            sf_out_link *l = &c->out[j];
            if (!l->hello && now - rt->start > rt->o.connect_timeout) {
                fail_run(rt, "%s: consumer %s has not connected after %.0f s: is its host running this pipeline?", c->name, l->id,
                         rt->o.connect_timeout);
                return;
            }
            if (l->remote && l->hello) {
                if (!l->eos_sent) sf_frame_send(c->router, l->id, SF_FRAME_HEARTBEAT, 0, 0, NULL);
                if (!l->eos_acked && now - l->last_seen > rt->o.peer_timeout) {
                    fail_run(rt, "%s: lost contact with consumer %s (no heartbeat for %.0f s): its host or process died", c->name, l->id,
                             rt->o.peer_timeout);
                    return;
                }
            }
        }
        for (int j = 0; j < c->n_in; j++) {
            sf_in_link *l = &c->in[j];
            if (!l->remote || l->eos) continue;
            sf_frame_send(l->sock, NULL, SF_FRAME_HEARTBEAT, 0, 0, NULL);
            double limit = l->last_seen > 0 ? rt->o.peer_timeout : rt->o.connect_timeout;
            double since = now - (l->last_seen > 0 ? l->last_seen : rt->start);
            if (since > limit) {
                fail_run(rt, "%s: %s producer %s (no heartbeat for %.0f s): its host or process died or never started", c->name,
                         l->last_seen > 0 ? "lost contact with" : "never heard from", l->peer, since);
                return;
            }
        }
    }
}

static void on_tick(uv_timer_t *h) {
    sf_runtime *rt = h->data;
    check_peers(rt);
    sf_progress_tick(rt, 0);
    pump(rt);
}

static void tell_peers_abort(sf_runtime *rt) {
    for (int i = 0; i < rt->n_inst; i++) {
        sf_ctx *c = rt->inst[i];
        for (int j = 0; j < c->n_out; j++)
            if (c->out[j].remote && c->out[j].hello) sf_frame_send_text(c->router, c->out[j].id, SF_FRAME_ABORT, rt->error);
        for (int j = 0; j < c->n_in; j++)
            if (c->in[j].remote && !c->in[j].eos) sf_frame_send_text(c->in[j].sock, NULL, SF_FRAME_ABORT, rt->error);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Checking                                                                                    */

int sf_check_stages(sf_pipeline *p, const char *host) {
    int findings = 0, host_idx = -1;
    for (int h = 0; host && h < p->n_hosts; h++)
        if (strcmp(p->hosts[h].name, host) == 0) host_idx = h;
    for (int s = 0; s < p->n_stages; s++) {
        sf_stage_decl *st = &p->stages[s];
        int (*check)(sf_ctx *) = sf_stage_check_fn(st->entry);
        if (!check) continue;
        /* parameters are the same for every replica: the first one placed here checks them */
        int r = 0;
        while (host_idx >= 0 && r < st->replicas && sf_replica_host(st, r) != host_idx) r++;
        if (r == st->replicas) continue;
        sf_ctx ctx = {.decl = st, .def = st->entry->def, .pipeline_path = p->path, .replica = r};
        instance_name(st, r, ctx.name, sizeof ctx.name);
        pthread_mutex_init(&ctx.lock, NULL);
        sf_fail("%s", ""); /* a hook that returns SF_ERR without saying why still gets a message */
        if (check(&ctx) != SF_OK) {
            findings++;
            const char *e = sf_last_error()[0] ? sf_last_error() : "its check failed without saying why";
            if (ctx.located) fprintf(stderr, "%s\n", e);
            else fprintf(stderr, "%s:%d: stage '%s' (%s): %s\n", p->path, st->line, st->name, st->type, e);
        }
        pthread_mutex_destroy(&ctx.lock);
    }
    return findings;
}

/* ------------------------------------------------------------------------------------------ */
/* Setting up                                                                                  */

static void *open_socket(sf_runtime *rt, int type) {
    void *s = zmq_socket(rt->zctx, type);
    int zero = 0, linger = 10000, one = 1;
    zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof zero); /* credit bounds what is queued */
    zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    if (type == ZMQ_ROUTER) zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    return s;
}

static int setup_instance(sf_runtime *rt, sf_ctx *c, int stage_idx) {
    sf_pipeline *p = rt->p;
    /* consumers of this stage: one group per consumer stage, a link per replica */
    for (int s = 0; s < p->n_stages; s++)
        for (int i = 0; i < p->stages[s].n_inputs; i++)
            if (p->stages[s].input_idx[i] == stage_idx) {
                int g = c->n_groups++;
                int *gb = sf_realloc(c->group_broadcast, "an instance's consumer groups", (size_t)c->n_groups, sizeof(int));
                if (gb) c->group_broadcast = gb;
                int *rr = gb ? sf_realloc(c->group_rr, "an instance's consumer groups", (size_t)c->n_groups, sizeof(int)) : NULL;
                if (!rr) return SF_ERR;
                c->group_rr = rr;
                c->group_broadcast[g] = p->stages[s].broadcast;
                c->group_rr[g] = 0;
                for (int r = 0; r < p->stages[s].replicas; r++) {
                    sf_out_link *out = sf_realloc(c->out, "an instance's output links", (size_t)c->n_out + 1, sizeof *c->out);
                    if (!out) return SF_ERR;
                    c->out = out;
                    sf_out_link *l = &c->out[c->n_out++];
                    memset(l, 0, sizeof *l);
                    instance_name(&p->stages[s], r, l->id, sizeof l->id);
                    l->group = g;
                    l->remote = !is_local(rt, s, r);
                }
            }
    if (c->n_out) {
        char ep[600];
        int remote = 0;
        for (int i = 0; i < c->n_out; i++) remote |= c->out[i].remote;
        c->router = open_socket(rt, ZMQ_ROUTER);
        if (remote && rt->curve && sf_curve_server(c->router, &rt->keys) != SF_OK) return SF_ERR;
        local_endpoint(p, stage_idx, c->replica, ep, sizeof ep);
        if (zmq_bind(c->router, ep) != 0) return sf_fail("%s: cannot bind %s: %s", c->name, ep, zmq_strerror(errno));
        if (remote) {
            remote_endpoint(p, stage_idx, c->replica, 1, ep, sizeof ep);
            if (zmq_bind(c->router, ep) != 0)
                return sf_fail("%s: cannot listen on %s: %s (is the host address right and the port free?)", c->name, ep, zmq_strerror(errno));
            sf_log(SF_LOG_DEBUG, "%s listens on %s", c->name, ep);
        }
    }
    /* producers this stage reads: a link per replica of each input stage */
    sf_stage_decl *st = &p->stages[stage_idx];
    for (int i = 0; i < st->n_inputs; i++) {
        int u = st->input_idx[i];
        for (int r = 0; r < p->stages[u].replicas; r++) {
            sf_in_link *in = sf_realloc(c->in, "an instance's input links", (size_t)c->n_in + 1, sizeof *c->in);
            if (!in) return SF_ERR;
            c->in = in;
            sf_in_link *l = &c->in[c->n_in++];
            memset(l, 0, sizeof *l);
            instance_name(&p->stages[u], r, l->peer, sizeof l->peer);
            l->input = i;
            l->remote = !is_local(rt, u, r);
            char ep[600];
            if (l->remote) remote_endpoint(p, u, r, 0, ep, sizeof ep);
            else local_endpoint(p, u, r, ep, sizeof ep);
            l->sock = open_socket(rt, ZMQ_DEALER);
            zmq_setsockopt(l->sock, ZMQ_ROUTING_ID, c->name, strlen(c->name));
            if (l->remote && rt->curve && sf_curve_client(l->sock, &rt->keys) != SF_OK) return SF_ERR;
            if (zmq_connect(l->sock, ep) != 0) return sf_fail("%s: cannot connect to %s: %s", c->name, ep, zmq_strerror(errno));
        }
    }
    if (c->n_out) { /* a message goes to at most every link: flush_outbox's target list */
        c->targets = sf_alloc("an instance's per-message target list", (size_t)c->n_out, sizeof *c->targets);
        if (!c->targets) return SF_ERR;
    }
    c->inbox_cap = (int)link_limit(rt) * (c->n_in ? c->n_in : 1);
    c->inbox = sf_zalloc("an instance's inbox", (size_t)c->inbox_cap, sizeof *c->inbox);
    c->outbox = sf_zalloc("an instance's outbox", OUTBOX_CAP, sizeof *c->outbox);
    return c->inbox && c->outbox ? SF_OK : SF_ERR;
}

static void start_polls(sf_runtime *rt) {
    for (int i = 0; i < rt->n_inst; i++) {
        sf_ctx *c = rt->inst[i];
        int fd;
        size_t sz = sizeof fd;
        if (c->router) {
            zmq_getsockopt(c->router, ZMQ_FD, &fd, &sz);
            uv_poll_init(&rt->loop, &c->router_poll, fd);
            c->router_poll.data = rt;
            uv_poll_start(&c->router_poll, UV_READABLE, on_poll);
        }
        for (int j = 0; j < c->n_in; j++) {
            sf_in_link *l = &c->in[j];
            zmq_getsockopt(l->sock, ZMQ_FD, &fd, &sz);
            uv_poll_init(&rt->loop, &l->poll, fd);
            l->poll.data = rt;
            uv_poll_start(&l->poll, UV_READABLE, on_poll);
            if (sf_frame_send(l->sock, NULL, SF_FRAME_HELLO, (uint32_t)rt->o.credit, 0, NULL) != 0)
                fail_run(rt, "%s: greeting %s: %s", c->name, l->peer, zmq_strerror(errno));
        }
    }
}

static void free_runtime(sf_runtime *rt) {
    for (int i = 0; i < rt->n_inst; i++) {
        sf_ctx *c = rt->inst[i];
        int zero = 0;
        if (c->router) {
            if (atomic_load(&rt->aborting)) zmq_setsockopt(c->router, ZMQ_LINGER, &zero, sizeof zero);
            zmq_close(c->router);
        }
        for (int j = 0; j < c->n_in; j++) { /* wait a little for an EOS_ACK to leave, never for the rest */
            int linger = c->in[j].eos && !atomic_load(&rt->aborting) ? 2000 : 0;
            zmq_setsockopt(c->in[j].sock, ZMQ_LINGER, &linger, sizeof linger);
            zmq_close(c->in[j].sock);
        }
        for (int j = 0; j < c->inbox_len; j++) zmq_msg_close(&c->inbox[(c->inbox_head + j) % c->inbox_cap].msg);
        for (int j = 0; j < c->out_len; j++) free(c->outbox[(c->out_head + j) % OUTBOX_CAP].buf);
        pthread_mutex_destroy(&c->lock);
        pthread_cond_destroy(&c->cond);
        for (int j = 0; j < c->n_out; j++) free(c->out[j].sizes), free(c->out[j].batch);
        free(c->inbox), free(c->outbox), free(c->out), free(c->targets), free(c->in), free(c->group_broadcast), free(c->group_rr);
        free(c);
    }
    free(rt->inst);
    sf_zap_stop(&rt->zap);
    zmq_ctx_term(rt->zctx);
}

/* ZeroMQ allows 1023 sockets per context by default and each takes a file descriptor: room for
 * every socket this process opens (a ROUTER per producer instance, a DEALER per input link, the
 * ZAP handler's), so any pipeline within SF_MAX_INSTANCES starts. */
static int reserve_sockets(sf_runtime *rt) {
    const sf_pipeline *p = rt->p;
    long sockets = 16;
    for (int s = 0; s < p->n_stages; s++)
        for (int r = 0; r < p->stages[s].replicas; r++) {
            if (!is_local(rt, s, r)) continue;
            sockets++; /* its router (a sink has none: counted anyway) */
            for (int i = 0; i < p->stages[s].n_inputs; i++) sockets += p->stages[p->stages[s].input_idx[i]].replicas;
        }
    struct rlimit nofile;
    rlim_t want = (rlim_t)sockets * 2 + 256; /* a descriptor per socket's mailbox, one per tcp peer, and the rest */
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < want) {
        nofile.rlim_cur = nofile.rlim_max == RLIM_INFINITY || nofile.rlim_max > want ? want : nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
        if (nofile.rlim_cur < want)
            return sf_fail("this pipeline opens %ld sockets here, and the open-file limit (ulimit -n %llu) allows about %llu: raise it or run fewer stage instances",
                           sockets, (unsigned long long)nofile.rlim_cur, (unsigned long long)(nofile.rlim_cur - 256) / 2);
    }
    if (sockets > 1023 && zmq_ctx_set(rt->zctx, ZMQ_MAX_SOCKETS, (int)sockets) != 0)
        return sf_fail("cannot allow %ld ZeroMQ sockets: %s", sockets, zmq_strerror(errno));
    return SF_OK;
}

int sf_run(sf_pipeline *p, const sf_run_options *o) {
    sf_runtime *rt = calloc(1, sizeof *rt);
    rt->p = p;
    rt->o = *o;
    rt->host = -1;
    pthread_mutex_init(&rt->err_lock, NULL);
    if (p->n_hosts) {
        if (!o->host) {
            fprintf(stderr, "saeflow: %s places stages on hosts: say which one this is with --host NAME\n", p->path);
            free(rt);
            return 2;
        }
        for (int h = 0; h < p->n_hosts; h++)
            if (strcmp(p->hosts[h].name, o->host) == 0) rt->host = h;
        if (rt->host < 0) {
            fprintf(stderr, "saeflow: --host %s: %s declares no such host\n", o->host, p->path);
            free(rt);
            return 2;
        }
    }
    rt->zctx = zmq_ctx_new();
    if (reserve_sockets(rt) != SF_OK) {
        fprintf(stderr, "saeflow: %s\n", sf_last_error());
        zmq_ctx_term(rt->zctx);
        free(rt);
        return 1;
    }
    uv_loop_init(&rt->loop);
    rt->start = sf_now();
    int rc = SF_OK;
    if (rt->host >= 0 && p->curve_dir) {
        rt->curve = 1;
        rc = sf_curve_load(p->curve_dir, &rt->keys);
        if (rc == SF_OK) rc = sf_zap_start(&rt->zap, rt->zctx, &rt->keys);
    } else if (rt->host >= 0) {
        sf_log(SF_LOG_INFO, "edges between hosts are neither encrypted nor authenticated (add a 'curve' line: see core/HOSTS.md)");
    }
    for (int s = 0; s < p->n_stages && rc == SF_OK; s++) {
        for (int r = 0; r < p->stages[s].replicas && rc == SF_OK; r++) {
            if (!is_local(rt, s, r)) continue;
            sf_ctx *c = sf_zalloc("a stage instance", 1, sizeof *c);
            if (!c) {
                rc = SF_ERR;
                break;
            }
            c->decl = &p->stages[s];
            c->def = c->decl->entry->def;
            c->replica = r;
            c->rt = rt;
            c->pipeline_path = p->path;
            instance_name(c->decl, r, c->name, sizeof c->name);
            pthread_mutex_init(&c->lock, NULL);
            pthread_cond_init(&c->cond, NULL);
            sf_ctx **inst = sf_realloc(rt->inst, "the instances", (size_t)rt->n_inst + 1, sizeof *rt->inst);
            if (!inst) {
                pthread_mutex_destroy(&c->lock), pthread_cond_destroy(&c->cond), free(c);
                rc = SF_ERR;
                break;
            }
            rt->inst = inst;
            rt->inst[rt->n_inst++] = c;
            rc = setup_instance(rt, c, s);
        }
    }
    if (rc != SF_OK) {
        fprintf(stderr, "saeflow: %s\n", sf_last_error());
        uv_loop_close(&rt->loop);
        free_runtime(rt);
        free(rt);
        return 1;
    }
    if (rt->n_inst == 0) sf_log(SF_LOG_WARN, "no stage of %s is placed on host %s", p->path, o->host ? o->host : "?");

    uv_async_init(&rt->loop, &rt->wake, on_wake);
    rt->wake.data = rt;
    uv_idle_init(&rt->loop, &rt->again);
    rt->again.data = rt;
    uv_signal_init(&rt->loop, &rt->sigint);
    rt->sigint.data = rt;
    uv_signal_start(&rt->sigint, on_signal, SIGINT);
    uv_signal_init(&rt->loop, &rt->sigterm);
    rt->sigterm.data = rt;
    uv_signal_start(&rt->sigterm, on_signal, SIGTERM);
    uv_signal_init(&rt->loop, &rt->sighup);
    rt->sighup.data = rt;
    uv_signal_start(&rt->sighup, on_signal, SIGHUP);
    if (sf_signal_before_run) { /* arrived during the checks */
        on_signal(&rt->sigint, sf_signal_before_run);
        sf_signal_before_run = 0;
    }
    signal(SIGPIPE, SIG_IGN); /* a closed log pipe (a lost ssh session) is EPIPE, not death */
    if (o->stop_on_stdin_eof) {
        rt->stdin_poll.data = rt;
        int e = uv_poll_init(&rt->loop, &rt->stdin_poll, STDIN_FILENO);
        if (e == 0) uv_poll_start(&rt->stdin_poll, UV_READABLE | UV_DISCONNECT, on_stdin);
        else fail_run(rt, "--stop-on-stdin-eof: cannot watch standard input: %s (it must be a pipe, socket or terminal)", uv_strerror(e));
    }
    uv_timer_init(&rt->loop, &rt->tick);
    rt->tick.data = rt;
    uv_timer_start(&rt->tick, on_tick, 1000, 1000);
    rt->live = o->progress < 0 ? isatty(STDERR_FILENO) : o->progress;
    start_polls(rt);

    for (int i = 0; i < rt->n_inst; i++) {
        if (pthread_create(&rt->inst[i]->thread, NULL, worker_main, rt->inst[i]) != 0) {
            fail_run(rt, "cannot start a thread for %s", rt->inst[i]->name);
            break;
        }
        rt->inst[i]->thread_started = 1;
    }
    pump(rt);
    uv_run(&rt->loop, UV_RUN_DEFAULT);

    for (int i = 0; i < rt->n_inst; i++)
        if (rt->inst[i]->thread_started) pthread_join(rt->inst[i]->thread, NULL);
    if (atomic_load(&rt->aborting)) tell_peers_abort(rt);
    uv_walk(&rt->loop, close_handle, NULL);
    uv_run(&rt->loop, UV_RUN_DEFAULT);
    sf_progress_tick(rt, 1);
    sf_progress_summary(rt);
    if (atomic_load(&rt->zap.refused))
        sf_log(SF_LOG_WARN, "refused %d connection attempts without this pipeline's CURVE key", atomic_load(&rt->zap.refused));
    int code = 0;
    if (rt->error[0]) {
        fprintf(stderr, "saeflow: error: %s\n", rt->error);
        code = 1;
    } else if (atomic_load(&rt->interrupted)) {
        fprintf(stderr, "saeflow: %s; the stages finished cleanly after draining\n", rt->interrupt_cause);
        code = 130;
    }
    uv_loop_close(&rt->loop);
    free_runtime(rt);
    pthread_mutex_destroy(&rt->err_lock);
    free(rt);
    return code;
}
