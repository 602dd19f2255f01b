/* A plugin that claims another stage ABI version: the loader must refuse it. */
#include "saeflow.h"
SF_EXPORT const uint32_t saeflow_abi_version = SF_ABI_VERSION + 41;
SF_EXPORT const sf_stage_def *const *saeflow_stages(void) { return NULL; }
