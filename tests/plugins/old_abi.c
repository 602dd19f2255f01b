/* A plugin built for stage ABI 1, before sf_stage_def had a check hook: it must still load and run,
 * and saeflow must not read the field its struct does not have. Its def here does have one (this
 * file is compiled against today's header), which fails if called: calling it is the bug. */
#include "saeflow.h"

static int produce(sf_ctx *ctx, void *state) { (void)ctx, (void)state; return SF_DONE; }
static int check(sf_ctx *ctx) { (void)ctx; return sf_fail("the check hook of an ABI 1 plugin was called"); }

static const sf_stage_def old_source = {
    .name = "old_abi_source", .summary = "an empty source built for ABI 1",
    .min_inputs = 0, .max_inputs = 0, .has_output = 1, .produce = produce, .check = check,
};
static const sf_stage_def *const list[] = {&old_source, NULL};
SF_EXPORT const uint32_t saeflow_abi_version = 1;
SF_EXPORT const sf_stage_def *const *saeflow_stages(void) { return list; }
