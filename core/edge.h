/* edge.h — the wire protocol of an edge between a producer instance and a consumer instance.
 *
 * The producer binds a ROUTER; each consumer instance connects a DEALER whose routing id is its
 * instance name. Flow control is by credit (zguide ch. 7): a consumer grants a window of
 * messages with HELLO and returns one credit per message its stage has processed; a producer
 * sends only where it holds credit, so nothing is ever dropped at a high-water mark and memory
 * stays bounded by the window. Every DATA frame carries the link's sequence number and EOS
 * carries the link's total, so the consumer proves it received each message exactly once.
 * An interrupt crosses processes both ways: EOS carries SF_EOS_INTERRUPTED when the producer's
 * run was interrupted (its stream ended early, so consumers must not treat it as complete), and
 * STOP asks an upstream process to stop its sources as a local SIGINT would.
 * Across processes a producer exits only after every consumer acknowledged its EOS (EOS_ACK): a
 * successful send only means "queued", and a process that exits with unread frames (credits) in
 * its tcp receive buffer makes the kernel reset the connection, which discards what the consumer
 * had not read yet.
 *
 * Small messages travel in batches (BATCH frames), still sequence-numbered and credited one by one:
 * a link may hold more than its window of messages in flight while they are small (up to
 * SF_SMALL_WINDOW_MSGS messages and SF_SMALL_WINDOW_BYTES bytes), and the producer's loop packs the
 * small messages it has for a link into one frame. It never waits for a batch to fill: whatever the
 * producer emitted by the time the loop runs goes out at once, so a lone message is not delayed.
 *
 * Frames: [header 16 bytes][payload]. Header: u32 type, u32 n, u64 seq, little-endian. */
#ifndef SF_EDGE_H
#define SF_EDGE_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

enum sf_frame_type {
    SF_FRAME_HELLO = 0x53460001,     /* consumer -> producer: n = credit window */
    SF_FRAME_CREDIT = 0x53460002,    /* consumer -> producer: n = credits returned */
    SF_FRAME_DATA = 0x53460003,      /* producer -> consumer: seq; payload = message */
    SF_FRAME_EOS = 0x53460004,       /* producer -> consumer: seq = messages sent on the link, n = flags */
    SF_FRAME_ABORT = 0x53460005,     /* either way: payload = reason; the run is failing */
    SF_FRAME_HEARTBEAT = 0x53460006, /* either way, across processes */
    SF_FRAME_STOP = 0x53460007,      /* consumer -> producer: this run was interrupted; stop too */
    SF_FRAME_EOS_ACK = 0x53460008,   /* consumer -> producer: EOS and every message before it arrived */
    SF_FRAME_BATCH = 0x53460009,     /* producer -> consumer: seq of the first message, n messages;
                                        payload = n x [u32 length, little-endian][message] */
};

enum {
    SF_BATCH_MAX_MSG = 64 << 10,      /* messages up to this size are batched; larger ones go alone */
    SF_BATCH_BYTES = 256 << 10,       /* a batch's payload stays within this (or holds one message) */
    SF_SMALL_WINDOW_MSGS = 256,       /* beyond the window, small messages in flight per link, at most */
    SF_SMALL_WINDOW_BYTES = 64 << 10, /* ... while the link's bytes in flight stay within this: a bound on work too (1 MiB of token batches kept a drain busy for minutes under the sanitizers) */
};

enum { SF_EOS_INTERRUPTED = 1 }; /* EOS flag: the stream ended early because of an interrupt */

typedef struct sf_frame_header {
    uint32_t type, n;
    uint64_t seq;
} sf_frame_header;

/* Sends [routing id (if id)][header][payload (if any)]. payload, when not NULL, is a zmq_msg_t
 * whose content is sent without a copy (the caller's msg is emptied). Non-blocking; returns
 * 0 or -1 with errno. */
int sf_frame_send(void *sock, const char *id, uint32_t type, uint32_t n, uint64_t seq, zmq_msg_t *payload);
/* Sends a frame whose payload is a short string (ABORT reasons). */
int sf_frame_send_text(void *sock, const char *id, uint32_t type, const char *text);

/* Appends one message to a batch payload buffer of capacity SF_BATCH_BYTES (the caller checked
 * it fits: *len + 4 + n <= SF_BATCH_BYTES). */
void sf_batch_append(unsigned char *batch, size_t *len, const void *msg, size_t n);
/* The next message of a received batch payload at *off: sets *msg_off and *msg_len and advances
 * *off; 0 if what is left is too short for the length it states (wire input is untrusted). */
int sf_batch_next(const unsigned char *batch, size_t size, size_t *off, size_t *msg_off, size_t *msg_len);

/* One received frame. Wire input is untrusted: sf_frame_recv checks the part count and sizes. */
typedef struct sf_frame {
    char id[128];      /* routing id on a ROUTER, "" on a DEALER */
    char addr[64];     /* the sender's address (tcp peers), "" when unknown */
    sf_frame_header h;
    zmq_msg_t payload; /* empty unless DATA, BATCH or ABORT */
    int has_payload;
} sf_frame;

/* 1 = got a frame, 0 = nothing to read (EAGAIN), -1 = malformed frame (consumed; err says why;
 * id and addr are filled when the frame got that far). */
int sf_frame_recv(void *sock, int is_router, sf_frame *f, char *err, size_t errlen);

#endif
