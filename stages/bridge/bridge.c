/* Bridges between a pipeline and outside programs over plain ZeroMQ: one message = one frame of
 * MessagePack (msgpack-numpy tensors), an empty frame ends the stream. A Python client needs only
 * pyzmq and msgpack_numpy to read (zmq_out) or feed (zmq_in) a pipeline. Each stage's socket
 * lives on its own worker thread, apart from the runtime's sockets. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "saeflow.h"

typedef struct bridge {
    void *zctx, *sock;
    int64_t count, limit;
} bridge;

static const sf_param_def out_params[] = {
    {"endpoint", SF_PARAM_STRING, NULL, "ZeroMQ endpoint, e.g. tcp://127.0.0.1:5600 or ipc:///tmp/tap"},
    {"bind", SF_PARAM_BOOL, "true", "bind the endpoint (true) or connect to it (false)"},
    {NULL, 0, NULL, NULL},
};

static const sf_param_def in_params[] = {
    {"endpoint", SF_PARAM_STRING, NULL, "ZeroMQ endpoint, e.g. tcp://127.0.0.1:5601"},
    {"bind", SF_PARAM_BOOL, "true", "bind the endpoint (true) or connect to it (false)"},
    {"max_messages", SF_PARAM_INT, "-1", "stop after this many messages (-1: at the empty end frame)"},
    {NULL, 0, NULL, NULL},
};

/* The endpoint, for check and init alike: a ZeroMQ transport, and a tcp port that is a port. */
static int bridge_check(sf_ctx *ctx) {
    const char *ep = sf_param_str(ctx, "endpoint");
    if (strncmp(ep, "tcp://", 6) != 0 && strncmp(ep, "ipc://", 6) != 0 && strncmp(ep, "inproc://", 9) != 0)
        return sf_param_fail(ctx, "endpoint", "'%s' is not a ZeroMQ endpoint: tcp://ADDRESS:PORT, ipc://PATH or inproc://NAME", ep);
    if (strncmp(ep, "tcp://", 6) == 0) {
        const char *colon = strrchr(ep + 6, ':');
        char *end;
        long port = colon ? strtol(colon + 1, &end, 10) : 0;
        if (!colon || (strcmp(colon + 1, "*") != 0 && (!colon[1] || *end || port < 1 || port > 65535)))
            return sf_param_fail(ctx, "endpoint", "'%s' needs a port from 1 to 65535 (or * to bind any): tcp://ADDRESS:PORT", ep);
    }
    return SF_OK;
}

static int open_bridge(sf_ctx *ctx, void **state, int type) {
    if (bridge_check(ctx) != SF_OK) return SF_ERR;
    bridge *b = sf_zalloc("a ZeroMQ bridge", 1, sizeof *b);
    if (!b) return SF_ERR;
    *state = b;
    b->zctx = zmq_ctx_new();
    b->sock = zmq_socket(b->zctx, type);
    int timeout = 200, linger = 30000; /* wake up to see sf_stopping(); deliver what is queued */
    zmq_setsockopt(b->sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(b->sock, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(b->sock, ZMQ_LINGER, &linger, sizeof linger);
    const char *ep = sf_param_str(ctx, "endpoint");
    int rc = sf_param_bool(ctx, "bind") ? zmq_bind(b->sock, ep) : zmq_connect(b->sock, ep);
    if (rc != 0) return sf_fail("%s %s: %s", sf_param_bool(ctx, "bind") ? "bind" : "connect", ep, zmq_strerror(errno));
    return SF_OK;
}

static void close_bridge(void *state) {
    bridge *b = state;
    if (!b) return;
    if (b->sock) zmq_close(b->sock);
    if (b->zctx) zmq_ctx_term(b->zctx);
    free(b);
}

/* Sends one frame, retrying while the peer is slow (PUSH blocks, never drops). */
static int send_frame(sf_ctx *ctx, bridge *b, const void *data, size_t len) {
    while (zmq_send(b->sock, data, len, 0) < 0) {
        if (errno != EAGAIN) return sf_fail("send: %s", zmq_strerror(errno));
        if (sf_stopping(ctx)) return sf_fail("stopped while the reader was not reading");
    }
    return SF_OK;
}

static int out_init(sf_ctx *ctx, void **state) { return open_bridge(ctx, state, ZMQ_PUSH); }

static int out_message(sf_ctx *ctx, void *state, int input, const sf_msg *m) {
    (void)input;
    size_t len;
    const void *bytes = sf_msg_bytes(m, &len);
    return send_frame(ctx, state, bytes, len);
}

static int out_eos(sf_ctx *ctx, void *state) { return send_frame(ctx, state, "", 0); }

static int in_init(sf_ctx *ctx, void **state) {
    int rc = open_bridge(ctx, state, ZMQ_PULL);
    if (*state) ((bridge *)*state)->limit = sf_param_int(ctx, "max_messages");
    return rc;
}

static int in_produce(sf_ctx *ctx, void *state) {
    bridge *b = state;
    if (sf_stopping(ctx) || (b->limit >= 0 && b->count >= b->limit)) return SF_DONE;
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    if (zmq_msg_recv(&frame, b->sock, 0) < 0) {
        zmq_msg_close(&frame);
        return errno == EAGAIN || errno == EINTR ? SF_OK : sf_fail("receive: %s", zmq_strerror(errno));
    }
    if (zmq_msg_size(&frame) == 0) {
        zmq_msg_close(&frame);
        return SF_DONE;
    }
    sf_msg *in = sf_msg_parse(zmq_msg_data(&frame), zmq_msg_size(&frame));
    if (!in) {
        zmq_msg_close(&frame);
        return sf_fail("message %lld from %s: %s", (long long)b->count, sf_param_str(ctx, "endpoint"), sf_last_error());
    }
    sf_msg *out = sf_msg_clone(in);
    sf_msg_free(in);
    zmq_msg_close(&frame);
    b->count++;
    sf_progress(ctx, (uint64_t)b->count, 0, "msgs");
    return sf_emit(ctx, out);
}

static const sf_stage_def zmq_out = {
    .name = "zmq_out",
    .summary = "sends every message to an outside program as one ZeroMQ frame (PUSH)",
    .doc = "Each message is one frame of MessagePack with msgpack-numpy tensors; an empty frame follows the last. "
           "Python: sock = zmq.Context().socket(zmq.PULL); sock.connect(ep); msgpack.unpackb(sock.recv(), object_hook=msgpack_numpy.decode).",
    .params = out_params,
    .min_inputs = 1, .max_inputs = 8, .has_output = 0,
    .init = out_init, .on_message = out_message, .on_eos = out_eos, .destroy = close_bridge,
    .check = bridge_check,
    SF_STAGE_DEF_SIZES,
};

static const sf_stage_def zmq_in = {
    .name = "zmq_in",
    .summary = "reads messages an outside program sends as ZeroMQ frames (PULL)",
    .doc = "Each frame must be one MessagePack map (msgpack-numpy tensors); it is validated and emitted unchanged. An empty "
           "frame ends the stream. Python: sock.send(msgpack.packb(msg, default=msgpack_numpy.encode)); sock.send(b'').",
    .params = in_params,
    .min_inputs = 0, .max_inputs = 0, .has_output = 1,
    .init = in_init, .produce = in_produce, .destroy = close_bridge,
    .check = bridge_check,
    SF_STAGE_DEF_SIZES,
};

SF_PLUGIN(&zmq_out, &zmq_in)
