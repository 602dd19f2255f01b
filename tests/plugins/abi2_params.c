/* A plugin as compiled against the ABI 2 header, before parameters had a range and stage
 * definitions had sizes: its structs are declared here with that older layout (4-field parameter
 * entries, the definition ending at `check`). saeflow must read its parameters with the old stride
 * and call its check hook, and never read fields past the struct's end. */
#include "saeflow.h"

typedef struct v2_param_def {
    const char *name;
    sf_param_type type;
    const char *default_value;
    const char *doc;
} v2_param_def;

typedef struct v2_stage_def {
    const char *name, *summary, *doc;
    const v2_param_def *params;
    int min_inputs, max_inputs;
    int has_output;
    int (*init)(sf_ctx *ctx, void **state);
    int (*produce)(sf_ctx *ctx, void *state);
    int (*on_message)(sf_ctx *ctx, void *state, int input, const sf_msg *msg);
    int (*on_eos)(sf_ctx *ctx, void *state);
    int (*finish)(sf_ctx *ctx, void *state);
    void (*destroy)(void *state);
    const sf_command *commands;
    int (*check)(sf_ctx *ctx);
} v2_stage_def;

static const v2_param_def params[] = {
    {"first", SF_PARAM_STRING, "a", "a parameter before the one that matters"},
    {"scale", SF_PARAM_FLOAT, "2.0", "must be above 0 (this plugin's check says so)"},
    {NULL, 0, NULL, NULL},
};

static int check(sf_ctx *ctx) {
    if (!(sf_param_float(ctx, "scale") > 0)) return sf_param_fail(ctx, "scale", "the ABI 2 check hook says: must be above 0");
    return SF_OK;
}
static int on_message(sf_ctx *ctx, void *state, int input, const sf_msg *m) {
    (void)state, (void)input;
    return sf_emit(ctx, sf_msg_clone(m));
}

static const v2_stage_def def = {
    .name = "abi2_relay", .summary = "a relay built for ABI 2, with parameters", .params = params,
    .min_inputs = 1, .max_inputs = 1, .has_output = 1, .on_message = on_message, .check = check,
};
static const v2_stage_def *const list[] = {&def, NULL};
SF_EXPORT const uint32_t saeflow_abi_version = 2;
SF_EXPORT const v2_stage_def *const *saeflow_stages(void) { return list; }
