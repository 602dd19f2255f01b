/* A plugin as compiled against a newer header than this saeflow's, in which both definition structs
 * grew a field at the end without a new ABI version (what SF_STAGE_DEF_SIZES allows): it records its
 * larger sizes, and saeflow must read its parameters with that larger stride (their ranges too) and
 * ignore the fields it does not know. */
#include "saeflow.h"

typedef struct next_param_def {
    sf_param_def base; /* today's fields */
    const char *unit;  /* a field a later header might add */
} next_param_def;

typedef struct next_stage_def {
    sf_stage_def base;
    int future_flag;
} next_stage_def;

static const next_param_def params[] = {
    {{"factor", SF_PARAM_INT, "2", "a whole factor", "[1, 10]"}, "times"},
    {{"label", SF_PARAM_STRING, "a", "one of two labels", "a|b"}, "none"},
    {{NULL, 0, NULL, NULL, NULL}, NULL},
};

static int on_message(sf_ctx *ctx, void *state, int input, const sf_msg *m) {
    (void)state, (void)input;
    return sf_emit(ctx, sf_msg_clone(m));
}

static const next_stage_def def = {
    .base = {.name = "future_relay", .summary = "a relay built with larger structs", .params = &params[0].base,
             .min_inputs = 1, .max_inputs = 1, .has_output = 1, .on_message = on_message,
             .def_size = sizeof(next_stage_def), .param_size = sizeof(next_param_def)},
    .future_flag = 1,
};
static const sf_stage_def *const list[] = {&def.base, NULL};
SF_EXPORT const uint32_t saeflow_abi_version = SF_ABI_VERSION;
SF_EXPORT const sf_stage_def *const *saeflow_stages(void) { return list; }
