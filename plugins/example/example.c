/* An out-of-tree saeflow stage, built the way a user builds one: against the installed saeflow.h
 * (pkg-config saeflow), in a meson project of its own, loaded by path from a pipeline file.
 *
 * row_norms: adds each tensor row's L2 norm to the message as `norms` and passes it on; at the end
 * logs the mean norm. */
#include <math.h>
#include <stdlib.h>

#include <saeflow.h>

typedef struct norms {
    double sum;
    long long rows;
} norms;

static const sf_param_def params[] = {
    {"field", SF_PARAM_STRING, "tensor", "the tensor field to measure ([rows, cols], any float dtype)"},
    {NULL, 0, NULL, NULL},
};

static int init(sf_ctx *ctx, void **state) {
    (void)ctx;
    *state = calloc(1, sizeof(norms));
    return SF_OK;
}

static int on_message(sf_ctx *ctx, void *state, int input, const sf_msg *m) {
    (void)input;
    norms *s = state;
    sf_tensor t;
    if (sf_msg_get_tensor(m, sf_param_str(ctx, "field"), &t) != SF_OK) return SF_ERR;
    if (t.ndim != 2) return sf_fail("field '%s' has rank %d, expected 2", sf_param_str(ctx, "field"), t.ndim);
    int64_t rows = t.shape[0], cols = t.shape[1];
    float *x = malloc((size_t)(rows * cols) * sizeof *x);
    sf_tensor_to_f32(&t, x, (size_t)(rows * cols));
    sf_msg *out = sf_msg_clone(m);
    float *n = sf_msg_put_tensor_inplace(out, "norms", SF_F32, 1, &rows);
    for (int64_t r = 0; r < rows; r++) {
        double ss = 0;
        for (int64_t c = 0; c < cols; c++) ss += (double)x[r * cols + c] * x[r * cols + c];
        n[r] = (float)sqrt(ss);
        s->sum += n[r];
    }
    s->rows += rows;
    free(x);
    return sf_emit(ctx, out);
}

static int on_eos(sf_ctx *ctx, void *state) {
    (void)ctx;
    norms *s = state;
    sf_log(SF_LOG_INFO, "mean row norm %.4f over %lld rows", s->rows ? s->sum / (double)s->rows : 0.0, s->rows);
    return SF_OK;
}

static const sf_stage_def row_norms = {
    .name = "row_norms",
    .summary = "adds each tensor row's L2 norm (an example out-of-tree plugin)",
    .doc = "Reads a [rows, cols] tensor field, emits the message with `norms` f32 [rows] added.",
    .params = params,
    .min_inputs = 1, .max_inputs = 1, .has_output = 1,
    .init = init, .on_message = on_message, .on_eos = on_eos, .destroy = free,
    SF_STAGE_DEF_SIZES, /* ABI 3: the structs' sizes, so later headers can add fields */
    /* reads and emits any message with a [rows, cols] tensor: no message kind is declared */
};

SF_PLUGIN(&row_norms)
