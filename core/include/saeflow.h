/* saeflow.h — the whole public stage ABI of saeflow, in one versioned header.
 *
 * A plugin is a shared object that exports two symbols:
 *
 *     const uint32_t saeflow_abi_version = SF_ABI_VERSION;
 *     const sf_stage_def *const *saeflow_stages(void);   // NULL-terminated list
 *
 * (SF_PLUGIN(...) below writes both.) The loader reads saeflow_abi_version before it touches
 * anything else and refuses a plugin built against another version. Plugins call the functions
 * below directly (resolved when the plugin is loaded, not through a table), so adding a function
 * keeps the version: every plugin of this version still loads; one that uses a newer function
 * fails to load on an older saeflow with the loader's "undefined symbol" error. Changing a
 * struct, a signature or a meaning bumps SF_ABI_VERSION, and the loader keeps accepting plugins of
 * the versions from SF_ABI_OLDEST on: it never reads a field newer than the plugin's version (the
 * struct in an older plugin ends before it).
 *
 * From ABI 3 on the definition structs carry their own size, as Redis modules' sub-structs carry a
 * version: a stage definition starts its ABI 3 part with SF_STAGE_DEF_SIZES, which records
 * sizeof(sf_stage_def) and sizeof(sf_param_def) as the plugin was compiled. A field added at the
 * end of either struct then needs no new version: the loader copies what the plugin's sizes cover
 * into structs of its own and zero-fills the rest, so a compiled plugin keeps loading, and reads
 * its params array with the plugin's own stride.
 *
 * Versions: 1 the first; 2 added sf_stage_def.check; 3 added the sizes, the message kinds a stage
 * takes and emits (sf_stage_def.takes / .emits) and parameter ranges (sf_param_def.range).
 *
 * Threading: each stage instance runs all its callbacks on one worker thread of its own, never on
 * the event loop, so callbacks may compute for as long as they need. sf_emit() blocks while the
 * consumers are behind (backpressure), so a producer never outruns memory.
 *
 * Messages are MessagePack maps with string keys. Tensors inside them are encoded exactly as
 * Python's msgpack-numpy encodes numpy arrays, so Python can read and write any edge.
 */
#ifndef SAEFLOW_H
#define SAEFLOW_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SF_ABI_VERSION 3u
#define SF_ABI_OLDEST 1u /* the oldest version this saeflow still loads */

#if defined(__GNUC__)
#define SF_EXPORT __attribute__((visibility("default")))
#define SF_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define SF_EXPORT
#define SF_PRINTF(a, b)
#endif

/* Return codes of stage callbacks and of most library calls. */
enum { SF_OK = 0, SF_DONE = 1, SF_ERR = -1 };

/* ------------------------------------------------------------------------------------------ */
/* Errors and logging                                                                          */

/* Records an error message for the calling thread and returns SF_ERR, so a callback can
 * `return sf_fail("cannot open %s: %s", path, strerror(errno));`. The runtime prints it,
 * prefixed with the stage name, and stops the pipeline. */
SF_EXPORT int sf_fail(const char *fmt, ...) SF_PRINTF(1, 2);
SF_EXPORT int sf_vfail(const char *fmt, va_list ap);
/* The calling thread's last error ("" if none). */
SF_EXPORT const char *sf_last_error(void);

enum sf_log_level { SF_LOG_DEBUG = 0, SF_LOG_INFO = 1, SF_LOG_WARN = 2, SF_LOG_ERROR = 3 };
/* Logs to stderr, prefixed with time and the calling stage's name. */
SF_EXPORT void sf_log(int level, const char *fmt, ...) SF_PRINTF(2, 3);
SF_EXPORT void sf_log_set_level(int level);

/* ------------------------------------------------------------------------------------------ */
/* Sizes and memory                                                                            */

/* a * b in size_t; 0 when it overflows (*out is then unspecified). Every size product that feeds
 * an allocation or an index goes through this (or sf_alloc below). */
static inline int sf_mul_size(size_t a, size_t b, size_t *out) { return !__builtin_mul_overflow(a, b, out); }
static inline int sf_add_size(size_t a, size_t b, size_t *out) { return !__builtin_add_overflow(a, b, out); }

/* malloc / calloc / realloc of n elements of `size` bytes: NULL when n * size overflows or memory
 * runs out, with sf_last_error() saying "out of memory allocating WHAT (N x SIZE bytes = 32.8 MB)"
 * (what: e.g. "logits (16 x 64 x 8000 floats)"), so a callback can `return SF_ERR` or add a hint:
 * `return sf_fail("%s; lower batch", sf_last_error())`. sf_realloc leaves p untouched on failure. */
SF_EXPORT void *sf_alloc(const char *what, size_t n, size_t size);
SF_EXPORT void *sf_zalloc(const char *what, size_t n, size_t size);
SF_EXPORT void *sf_realloc(void *p, const char *what, size_t n, size_t size);
/* strdup that fails the same way. */
SF_EXPORT char *sf_strdup(const char *what, const char *s);

/* ---------------------------------------------------------------------------------------------- */
/* OpenBLAS on one thread                                                                      */

/* Stages that split their sgemms over their own threads in fixed tiles (so that results do not
 * depend on the thread count: under some kernels, e.g. Haswell, an element's rounding depends on
 * where it falls inside a call, and so on OpenBLAS's own split over its threads) run them between
 * enter and leave. OpenBLAS's thread count is global to the process: these count the users across
 * all stages, set 1 for the first and restore the saved count after the last. The caller passes
 * OpenBLAS's openblas_get_num_threads / openblas_set_num_threads (saeflow itself does not link it). */
SF_EXPORT void sf_blas_single_enter(int (*get_threads)(void), void (*set_threads)(int));
SF_EXPORT void sf_blas_single_leave(void (*set_threads)(int));

/* ------------------------------------------------------------------------------------------ */
/* Tensors                                                                                     */

typedef enum sf_dtype {
    SF_F32, SF_F64, SF_F16, SF_BF16,
    SF_I8, SF_I16, SF_I32, SF_I64,
    SF_U8, SF_U16, SF_U32, SF_U64,
    SF_BOOL,
    SF_DTYPE_COUNT
} sf_dtype;

#define SF_MAX_DIMS 8

typedef struct sf_tensor {
    sf_dtype dtype;
    int ndim;
    int64_t shape[SF_MAX_DIMS];
    const void *data; /* in a received message: points into it, NOT aligned; see sf_tensor_to_f32 */
    size_t nbytes;
} sf_tensor;

SF_EXPORT size_t sf_dtype_size(sf_dtype t);
SF_EXPORT const char *sf_dtype_name(sf_dtype t); /* "F32", "BF16", ... as safetensors spells them */
SF_EXPORT int sf_dtype_parse(const char *name, sf_dtype *out); /* inverse of sf_dtype_name */
SF_EXPORT int64_t sf_tensor_numel(const sf_tensor *t);
/* Bytes of a tensor of this dtype and shape; SF_ERR (sf_last_error naming `what`) when a size is
 * negative or the product overflows. */
SF_EXPORT int sf_tensor_size(const char *what, sf_dtype t, int ndim, const int64_t *shape, size_t *nbytes);
/* Converts n elements of any numeric dtype to float32 (dst must not overlap src). */
SF_EXPORT void sf_convert_to_f32(float *dst, const void *src, sf_dtype t, size_t n);
/* Converts n float32 values to F32, F16 or BF16 (round to nearest even). */
SF_EXPORT void sf_convert_from_f32(void *dst, sf_dtype t, const float *src, size_t n);
SF_EXPORT float sf_bf16_to_f32(uint16_t h);
SF_EXPORT uint16_t sf_f32_to_bf16(float f);
SF_EXPORT float sf_f16_to_f32(uint16_t h);
SF_EXPORT uint16_t sf_f32_to_f16(float f);

/* ------------------------------------------------------------------------------------------ */
/* Messages                                                                                    */

/* A message is either being built (sf_msg_new, the sf_msg_put_* calls) or received (read-only,
 * the sf_msg_get_* calls). Keys are UTF-8 strings; put each key once. */
typedef struct sf_msg sf_msg;

/* The largest message: MessagePack's biggest binary (a tensor's bytes) has a 32-bit length. */
#define SF_MSG_MAX_BYTES ((size_t)UINT32_MAX)

SF_EXPORT sf_msg *sf_msg_new(void);
SF_EXPORT void sf_msg_free(sf_msg *m);

SF_EXPORT void sf_msg_put_int(sf_msg *m, const char *key, int64_t v);
SF_EXPORT void sf_msg_put_float(sf_msg *m, const char *key, double v);
SF_EXPORT void sf_msg_put_bool(sf_msg *m, const char *key, int v);
SF_EXPORT void sf_msg_put_str(sf_msg *m, const char *key, const char *s);
SF_EXPORT void sf_msg_put_strn(sf_msg *m, const char *key, const char *s, size_t len);
/* An array of n strings. */
SF_EXPORT void sf_msg_put_strs(sf_msg *m, const char *key, const char *const *s, size_t n);
/* A tensor, copied into the message once. */
SF_EXPORT void sf_msg_put_tensor(sf_msg *m, const char *key, sf_dtype t, int ndim,
                                 const int64_t *shape, const void *data);
/* A tensor whose bytes the caller writes in place, without a copy: returns where to write
 * them, 16-byte aligned. The pointer is valid until the next sf_msg_put_* call or sf_emit.
 *
 * A put that cannot be done (out of memory, a tensor's size overflowing or above the message
 * limit SF_MSG_MAX_BYTES) records the error in the message: sf_msg_put_tensor_inplace returns
 * NULL with sf_last_error() set, later puts do nothing, and sf_emit refuses the message with the
 * first error (so callbacks need not check every put, only the in-place pointer). */
SF_EXPORT void *sf_msg_put_tensor_inplace(sf_msg *m, const char *key, sf_dtype t, int ndim,
                                          const int64_t *shape);
/* The first error of a message being built (a put that failed), or NULL. */
SF_EXPORT const char *sf_msg_error(const sf_msg *m);
/* A new message (being built) holding every field of src, to extend and emit. */
SF_EXPORT sf_msg *sf_msg_clone(const sf_msg *src);
/* Copies field `key` of a received message into m unchanged; SF_ERR if src has no such key. */
SF_EXPORT int sf_msg_copy_field(sf_msg *m, const sf_msg *src, const char *key);

/* Parses and validates an untrusted buffer (every length and shape checked against it). The
 * message references buf, which must outlive it. NULL with sf_last_error() set on bad input. */
SF_EXPORT sf_msg *sf_msg_parse(const void *buf, size_t len);
/* The encoded bytes of a message being built (or of a parsed one). */
SF_EXPORT const void *sf_msg_bytes(const sf_msg *m, size_t *len);

SF_EXPORT int sf_msg_has(const sf_msg *m, const char *key);
/* Getters return SF_OK, or SF_ERR with sf_last_error() naming the key and what was wrong
 * (missing, or of another type). */
SF_EXPORT int sf_msg_get_int(const sf_msg *m, const char *key, int64_t *out);
SF_EXPORT int sf_msg_get_float(const sf_msg *m, const char *key, double *out); /* ints too */
SF_EXPORT int sf_msg_get_bool(const sf_msg *m, const char *key, int *out);
/* Not NUL-terminated: use *len. */
SF_EXPORT int sf_msg_get_str(const sf_msg *m, const char *key, const char **s, size_t *len);
/* Whether two hook names (the "hook" field, e.g. resid_post.2) name the same hook point: the one
 * place hook names are compared (SAE provenance, shard directories, skip_stored). */
SF_EXPORT int sf_same_hook(const char *a, const char *b);
/* The "checkpoint" name a forward stage gives a model directory by default (its base name,
 * trailing slashes ignored), into out[cap]. */
SF_EXPORT void sf_default_checkpoint(const char *model_dir, char *out, size_t cap);
SF_EXPORT int sf_msg_get_strs_count(const sf_msg *m, const char *key, size_t *n);
SF_EXPORT int sf_msg_get_strs_at(const sf_msg *m, const char *key, size_t i, const char **s,
                                 size_t *len);
SF_EXPORT int sf_msg_get_tensor(const sf_msg *m, const char *key, sf_tensor *out);
/* Reads a tensor of any numeric dtype as float32 into dst (capacity in elements). */
SF_EXPORT int sf_tensor_to_f32(const sf_tensor *t, float *dst, size_t capacity);

/* ------------------------------------------------------------------------------------------ */
/* Stages                                                                                      */

typedef enum sf_param_type { SF_PARAM_INT, SF_PARAM_FLOAT, SF_PARAM_BOOL, SF_PARAM_STRING } sf_param_type;

typedef struct sf_param_def {
    const char *name;
    sf_param_type type;
    const char *default_value; /* as written in a pipeline file; NULL means required */
    const char *doc;
    /* ---- ABI 3 ---- (tables may leave it out: {name, type, default, doc} is a parameter without
     * a range; pkg-config's flags silence -Wextra's missing-field-initializers about that) */
    /* Optional: the values allowed, which `saeflow check` enforces before anything runs and
     * `saeflow stages` prints. Numbers: an interval, "[1, 1048576]", "(0, 1]", "[0, inf)";
     * strings: the allowed words, "chunk|truncate" ("" among them as "|a|b" or "a||b"). */
    const char *range;
} sf_param_def;

/* A command-line subcommand a plugin adds to `saeflow` (e.g. `saeflow tokenize`). argv[0] is the
 * subcommand name. Returns the process exit code. */
typedef struct sf_command {
    const char *name;
    const char *usage;   /* e.g. "TOKENIZER_FILE [--tokens] [--special]" */
    const char *summary; /* one line */
    int (*main)(int argc, char **argv);
} sf_command;

/* The runtime's handle on one running stage instance. */
typedef struct sf_ctx sf_ctx;

typedef struct sf_stage_def {
    const char *name;    /* as used in pipeline files: lowercase, [a-z0-9_] */
    const char *summary; /* one line */
    const char *doc;     /* a paragraph: what it reads, what it emits (message fields) */
    const sf_param_def *params; /* terminated by an entry with name == NULL */
    int min_inputs, max_inputs; /* 0, 0 for a source */
    int has_output;             /* 0 for a sink */

    /* Called once before any message; read parameters with sf_param_*. *state is yours. */
    int (*init)(sf_ctx *ctx, void **state);
    /* Sources: called again and again; emit zero or more messages per call, return SF_OK to be
     * called again, SF_DONE at the end of the stream, SF_ERR on error. Must return soon after
     * sf_stopping() becomes true. */
    int (*produce)(sf_ctx *ctx, void *state);
    /* Everything else: one message from input number `input` (0-based, in the order the
     * pipeline lists them). The message is valid only during the call. */
    int (*on_message)(sf_ctx *ctx, void *state, int input, const sf_msg *msg);
    /* Every input has ended (all upstream replicas sent end-of-stream). May emit. */
    int (*on_eos)(sf_ctx *ctx, void *state);
    /* Always called last, also after an interrupt or an upstream failure (check
     * sf_stopping()): save what must survive (a trainer's checkpoint), flush files. */
    int (*finish)(sf_ctx *ctx, void *state);
    void (*destroy)(void *state);

    const sf_command *commands; /* optional; terminated by an entry with name == NULL */

    /* ---- ABI 2 ---- */
    /* Optional: validates the parameters and opens (reads, never writes) the files they name,
     * without starting anything: `saeflow check` calls it for every stage, `saeflow run` before
     * any stage starts. Only sf_param_*, sf_replica_*, sf_instance_name and the sf_fail family
     * may be called. Report each problem with sf_param_fail (or sf_fail for the stage as a
     * whole) and return SF_ERR; init may still fail for what only a run can find. */
    int (*check)(sf_ctx *ctx);

    /* ---- ABI 3 ---- */
    /* SF_STAGE_DEF_SIZES: this struct's and sf_param_def's sizes as compiled (see the top). */
    uint32_t def_size, param_size;
    /* The message kinds of core/MESSAGES.md ("document", "tokens", "activations", "checkpoint")
     * this stage reads, comma-separated, and the one it emits; NULL: any (not declared). `saeflow
     * check` refuses an input whose declared kind is not among what the reader takes. */
    const char *takes;
    const char *emits;
} sf_stage_def;

/* The first entry of a stage definition's ABI 3 part: .def_size and .param_size. */
#define SF_STAGE_DEF_SIZES .def_size = sizeof(sf_stage_def), .param_size = sizeof(sf_param_def)

/* Parameter values, validated against the declared types before init. */
SF_EXPORT int64_t sf_param_int(sf_ctx *ctx, const char *name);
SF_EXPORT double sf_param_float(sf_ctx *ctx, const char *name);
SF_EXPORT int sf_param_bool(sf_ctx *ctx, const char *name);
SF_EXPORT const char *sf_param_str(sf_ctx *ctx, const char *name);
/* An error about parameter `name`: returns SF_ERR and records "FILE:LINE: stage 'S' parameter
 * 'name': MESSAGE" with the line where the pipeline sets it (the stage's line for a default), so
 * `saeflow check` points at it. Say what is wrong and how to fix it. Also usable in init. */
SF_EXPORT int sf_param_fail(sf_ctx *ctx, const char *name, const char *fmt, ...) SF_PRINTF(3, 4);

/* Sends m to every consumer of this stage's output and takes ownership of it (also on error).
 * Blocks while consumers are behind. SF_ERR when the pipeline is stopping, or when a put into m
 * failed (sf_last_error() then says which: out of memory, a tensor over SF_MSG_MAX_BYTES). */
SF_EXPORT int sf_emit(sf_ctx *ctx, sf_msg *m);
/* True once the pipeline is being stopped (signal, or another stage failed). */
SF_EXPORT int sf_stopping(sf_ctx *ctx);
/* This instance among its replicas (replicas = N in the pipeline): index in [0, count). */
SF_EXPORT int sf_replica_index(sf_ctx *ctx);
SF_EXPORT int sf_replica_count(sf_ctx *ctx);
SF_EXPORT const char *sf_instance_name(sf_ctx *ctx); /* "fwd" or "fwd[1]" */
/* Progress for the live status line: work done so far and the total if known (else 0), in the
 * stage's own unit ("tokens", "steps"...). */
SF_EXPORT void sf_progress(sf_ctx *ctx, uint64_t done, uint64_t total, const char *unit);
/* A short note shown after the progress on the live line (e.g. "loss 0.12 fvu 0.08 L0 32 dead 1%"),
 * printf-style, cut at 95 bytes; replaces the previous note ("" clears it). */
SF_EXPORT void sf_progress_note(sf_ctx *ctx, const char *fmt, ...) SF_PRINTF(2, 3);
/* Free-form counters printed in the run summary (e.g. "skipped_lines"). */
SF_EXPORT void sf_count(sf_ctx *ctx, const char *counter, int64_t delta);

/* ------------------------------------------------------------------------------------------ */
/* Plugin entry points                                                                         */

#define SF_PLUGIN(...)                                                                         \
    SF_EXPORT const uint32_t saeflow_abi_version = SF_ABI_VERSION;                             \
    SF_EXPORT const sf_stage_def *const *saeflow_stages(void) {                               \
        static const sf_stage_def *const list[] = {__VA_ARGS__, NULL};                        \
        return list;                                                                           \
    }

#ifdef __cplusplus
}
#endif
#endif
