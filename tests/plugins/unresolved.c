/* A plugin that needs a symbol nothing provides: dlopen fails and the loader says which. */
#include "saeflow.h"
void sf_function_that_does_not_exist(void);
static int produce(sf_ctx *ctx, void *state) {
    (void)ctx, (void)state;
    sf_function_that_does_not_exist();
    return SF_DONE;
}
static const sf_stage_def broken = {.name = "broken", .produce = produce, .has_output = 1};
SF_PLUGIN(&broken)
