/* sf_trained_on.h — the one owner of the record of what an SAE was trained on: sae_trainer writes
 * it into its config.json and checkpoint metadata ("training") as
 * {"saeflow_training": {"model", "checkpoint", "hook", "layer", ...}}; the SAE loader (which checks
 * that an SAE fits its activations) and the tokenizer's skip_stored (which checks that a trainer
 * out_dir is of the same run) read it back. */
#ifndef SF_TRAINED_ON_H
#define SF_TRAINED_ON_H

#include <jansson.h>

#include "saeflow.h"

/* The object the record lives in: root["saeflow_training"]. */
#define SF_TRAINED_ON_KEY "saeflow_training"

/* Writes model, checkpoint, hook and layer into training (the "saeflow_training" object). */
SF_EXPORT void sf_trained_on_put(json_t *training, const char *model, const char *checkpoint, const char *hook,
                                 int layer);
/* Reads them from root (the object holding "saeflow_training"): pointers into root, valid while it
 * lives; NULL where the record or the field is absent, not a string, or empty. *layer = -1 if absent. */
SF_EXPORT void sf_trained_on_get(const json_t *root, const char **model, const char **checkpoint, const char **hook,
                                 int *layer);

#endif
