/* Framing for edges; see edge.h for the protocol. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "edge.h"

static void put_header(unsigned char *b, uint32_t type, uint32_t n, uint64_t seq) {
    for (int i = 0; i < 4; i++) b[i] = (unsigned char)(type >> (8 * i));
    for (int i = 0; i < 4; i++) b[4 + i] = (unsigned char)(n >> (8 * i));
    for (int i = 0; i < 8; i++) b[8 + i] = (unsigned char)(seq >> (8 * i));
}

int sf_frame_send(void *sock, const char *id, uint32_t type, uint32_t n, uint64_t seq, zmq_msg_t *payload) {
    unsigned char h[16];
    put_header(h, type, n, seq);
    if (id && zmq_send(sock, id, strlen(id), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return -1;
    if (zmq_send(sock, h, 16, (payload ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0) return -1;
    if (payload && zmq_msg_send(payload, sock, ZMQ_DONTWAIT) < 0) return -1;
    return 0;
}

int sf_frame_send_text(void *sock, const char *id, uint32_t type, const char *text) {
    zmq_msg_t m;
    size_t n = strlen(text);
    zmq_msg_init_size(&m, n);
    memcpy(zmq_msg_data(&m), text, n);
    int rc = sf_frame_send(sock, id, type, 0, 0, &m);
    zmq_msg_close(&m);
    return rc;
}

void sf_batch_append(unsigned char *batch, size_t *len, const void *msg, size_t n) {
    for (int i = 0; i < 4; i++) batch[*len + i] = (unsigned char)((uint32_t)n >> (8 * i));
    memcpy(batch + *len + 4, msg, n);
    *len += 4 + n;
}

int sf_batch_next(const unsigned char *batch, size_t size, size_t *off, size_t *msg_off, size_t *msg_len) {
    if (*off > size || size - *off < 4) return 0;
    uint32_t n = 0;
    for (int i = 3; i >= 0; i--) n = (n << 8) | batch[*off + i];
    if (size - *off - 4 < n) return 0;
    *msg_off = *off + 4;
    *msg_len = n;
    *off += 4 + (size_t)n;
    return 1;
}

/* Reads and discards the rest of a multipart message. */
static void drain_more(void *sock) {
    int more;
    size_t sz = sizeof more;
    while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        zmq_msg_recv(&m, sock, 0);
        zmq_msg_close(&m);
    }
}

static int more(void *sock) {
    int m = 0;
    size_t sz = sizeof m;
    zmq_getsockopt(sock, ZMQ_RCVMORE, &m, &sz);
    return m;
}

int sf_frame_recv(void *sock, int is_router, sf_frame *f, char *err, size_t errlen) {
    zmq_msg_t part;
    zmq_msg_init(&part);
    f->has_payload = 0;
    f->id[0] = f->addr[0] = 0;
    if (zmq_msg_recv(&part, sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&part);
        return 0;
    }
    const char *addr = zmq_msg_gets(&part, "Peer-Address");
    if (addr) snprintf(f->addr, sizeof f->addr, "%s", addr);
    if (is_router) { /* first part: the sender's routing id */
        size_t n = zmq_msg_size(&part);
        if (n >= sizeof f->id || !more(sock)) {
            snprintf(err, errlen, "frame with a bad routing id");
            zmq_msg_close(&part);
            drain_more(sock);
            return -1;
        }
        if (!memchr(zmq_msg_data(&part), 0, n)) { /* ids with a NUL (libzmq's anonymous ones) match no stage */
            memcpy(f->id, zmq_msg_data(&part), n);
            f->id[n] = 0;
        }
        zmq_msg_close(&part);
        zmq_msg_init(&part);
        zmq_msg_recv(&part, sock, 0); /* parts of a message arrive together */
        addr = f->addr[0] ? NULL : zmq_msg_gets(&part, "Peer-Address"); /* not always on the id part */
        if (addr) snprintf(f->addr, sizeof f->addr, "%s", addr);
    }
    if (zmq_msg_size(&part) != 16) {
        snprintf(err, errlen, "frame header of %zu bytes, expected 16", zmq_msg_size(&part));
        zmq_msg_close(&part);
        drain_more(sock);
        return -1;
    }
    const unsigned char *b = zmq_msg_data(&part);
    f->h.type = f->h.n = 0;
    f->h.seq = 0;
    for (int i = 3; i >= 0; i--) f->h.type = (f->h.type << 8) | b[i];
    for (int i = 3; i >= 0; i--) f->h.n = (f->h.n << 8) | b[4 + i];
    for (int i = 7; i >= 0; i--) f->h.seq = (f->h.seq << 8) | b[8 + i];
    zmq_msg_close(&part);
    int want_payload = f->h.type == SF_FRAME_DATA || f->h.type == SF_FRAME_BATCH || f->h.type == SF_FRAME_ABORT;
    if (f->h.type < SF_FRAME_HELLO || f->h.type > SF_FRAME_BATCH) {
        snprintf(err, errlen, "unknown frame type 0x%08x", f->h.type);
        drain_more(sock);
        return -1;
    }
    if (want_payload != more(sock)) {
        snprintf(err, errlen, "frame type 0x%08x with%s payload", f->h.type, want_payload ? "out a" : " an unexpected");
        drain_more(sock);
        return -1;
    }
    if (want_payload) {
        zmq_msg_init(&f->payload);
        zmq_msg_recv(&f->payload, sock, 0);
        f->has_payload = 1;
        if (more(sock)) {
            snprintf(err, errlen, "frame with extra parts");
            zmq_msg_close(&f->payload);
            f->has_payload = 0;
            drain_more(sock);
            return -1;
        }
    }
    return 1;
}
