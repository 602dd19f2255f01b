/* run_state.h — the state of a running pipeline in this process: the runtime, each stage
 * instance (sf_ctx: its queues, links and statistics) and the options of a run. runtime.c owns and
 * changes it; progress.c only reads it to draw the progress and the summary. */
#ifndef SF_RUN_STATE_H
#define SF_RUN_STATE_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <uv.h>

#include "curve.h"
#include "edge.h"
#include "pipeline.h"
#include "sf_util.h"

typedef struct sf_run_options {
    const char *host;       /* run this host's stages (NULL: the pipeline has no hosts) */
    int credit;             /* messages in flight per link */
    double connect_timeout; /* seconds to wait for every peer at start */
    double peer_timeout;    /* seconds without a heartbeat before a peer counts as lost */
    int progress;           /* -1 auto (live on a terminal, log lines otherwise), 0 off, 1 on */
    int stop_on_stdin_eof;  /* end-of-file on stdin stops the run like SIGTERM (saeflow launch) */
} sf_run_options;


typedef struct sf_out_link { /* producer side: one consumer instance */
    char id[64];             /* the consumer instance's name = its routing id */
    int group;               /* consumer stage it belongs to */
    int hello, eos_sent, eos_acked, remote;
    int64_t in_flight, window; /* messages sent and not yet credited back; window granted by HELLO */
    uint64_t bytes_in_flight;  /* their bytes (small messages may exceed the window: edge.h) */
    uint64_t *sizes;           /* ring [sizes_cap]: each in-flight message's size, oldest at sizes_head */
    int64_t sizes_cap, sizes_head;
    unsigned char *batch;      /* [SF_BATCH_BYTES]: small messages packed for this link, not sent yet */
    size_t batch_len;
    uint32_t batch_n;
    uint64_t seq, bytes;
    double last_seen;
} sf_out_link;

typedef struct sf_in_link { /* consumer side: one producer instance */
    char peer[64];
    int input, remote;
    void *sock;
    uv_poll_t poll;
    uint64_t expect_seq, received, bytes;
    int eos;
    atomic_int credit_return; /* credits the worker freed, to send back */
    int64_t outstanding;      /* messages received whose credit has not been sent back (loop thread) */
    atomic_uint_fast64_t processed; /* messages the stage has taken (for the summary) */
    double last_seen;
} sf_in_link;

typedef struct sf_inbox_item {
    zmq_msg_t msg; /* a DATA payload, or a BATCH payload shared by its messages */
    size_t off, len; /* the message inside msg */
    int link;
} sf_inbox_item;

typedef struct sf_counter {
    char name[48];
    int64_t value;
} sf_counter;

struct sf_ctx {
    sf_stage_decl *decl;
    const char *pipeline_path; /* for sf_param_fail's file:line */
    int located;               /* the last error came from sf_param_fail (it has its file:line) */
    const sf_stage_def *def;
    int replica, local;
    char name[64];
    void *state;
    pthread_t thread;
    int thread_started;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    sf_inbox_item *inbox; /* ring, capacity inbox_cap */
    int inbox_head, inbox_len, inbox_cap;
    int inputs_done;
    struct { void *buf; size_t len; } *outbox; /* ring */
    int out_head, out_len;
    size_t out_bytes; /* bytes in the outbox */

    /* producer side */
    void *router;
    uv_poll_t router_poll;
    sf_out_link *out;
    int n_out;
    int *targets; /* [n_out]: the links the message being sent goes to */
    int *group_broadcast, *group_rr, n_groups;

    sf_in_link *in;
    int n_in;

    atomic_int worker_done; /* 1 = callbacks finished */
    int failed;
    int eos_done; /* EOS sent on every out link */

    /* statistics */
    atomic_uint_fast64_t msgs_in, msgs_out, bytes_out;
    atomic_uint_fast64_t prog_done, prog_total;
    char prog_unit[16];
    char prog_note[96]; /* sf_progress_note(): shown after the progress, under lock */
    sf_counter counters[16];
    int n_counters;
    struct sf_runtime *rt;
};

typedef struct sf_runtime {
    sf_pipeline *p;
    sf_run_options o;
    int host;
    uv_loop_t loop;
    uv_async_t wake;
    uv_signal_t sigint, sigterm, sighup;
    uv_poll_t stdin_poll; /* stop_on_stdin_eof */
    uv_timer_t tick;
    uv_idle_t again;
    void *zctx;
    int curve; /* edges to other hosts use CURVE with keys, checked by zap */
    sf_curve_keys keys;
    sf_zap zap;
    struct sf_ctx **inst; /* this process's instances */
    int n_inst;
    atomic_int stopping, interrupted, aborting;
    int signals;                /* stops asked for here (the second aborts) */
    int hangup;                 /* SIGHUP or stdin closed: the session is gone */
    char interrupt_cause[200];  /* "" for a signal here; else which peer brought the interrupt */
    uint64_t dropped;           /* frames from unknown peers, dropped */
    double dropped_logged;      /* when the last warning about them was printed */
    pthread_mutex_t err_lock;
    char error[1200];
    double start;
    int started; /* every peer said hello */
    /* progress */
    int live;
    double last_report;
} sf_runtime;

#endif
