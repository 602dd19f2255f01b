/* The peer for bench/core_throughput.sh: a bare libzmq PUSH/PULL loop moving `count` messages
 * of `size` bytes, as fast as libzmq can. The sender writes every message (one byte value each,
 * as tensor_gen fill=false does); the receiver prints its MB/s from the first to the last message.
 *   zmq_raw push ENDPOINT SIZE COUNT      zmq_raw pull ENDPOINT SIZE COUNT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: zmq_raw push|pull ENDPOINT SIZE COUNT\n");
        return 2;
    }
    int push = strcmp(argv[1], "push") == 0;
    size_t size = strtoull(argv[3], NULL, 10);
    long count = atol(argv[4]);
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, push ? ZMQ_PUSH : ZMQ_PULL);
    if ((push ? zmq_connect(s, argv[2]) : zmq_bind(s, argv[2])) != 0) {
        perror("zmq");
        return 1;
    }
    double t0 = 0;
    for (long i = 0; i < count; i++) {
        zmq_msg_t m;
        if (push) {
            zmq_msg_init_size(&m, size); /* a fresh buffer per message, as a producer has */
            memset(zmq_msg_data(&m), (int)(i & 0xff), size);
            zmq_msg_send(&m, s, 0);
        } else {
            zmq_msg_init(&m);
            zmq_msg_recv(&m, s, 0);
            if (i == 0) t0 = now();
            zmq_msg_close(&m);
        }
    }
    if (!push) printf("%.1f\n", (double)size * (double)(count - 1) / (now() - t0) / 1e6);
    zmq_close(s);
    zmq_ctx_term(ctx);
    return 0;
}
