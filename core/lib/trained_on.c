/* trained_on.c — writer and reader of the record of what an SAE was trained on (sf_trained_on.h):
 * the field names live here only. */
#include "sf_trained_on.h"

void sf_trained_on_put(json_t *training, const char *model, const char *checkpoint, const char *hook, int layer) {
    json_object_set_new(training, "hook", json_string(hook ? hook : ""));
    json_object_set_new(training, "layer", json_integer(layer));
    json_object_set_new(training, "model", json_string(model ? model : ""));
    json_object_set_new(training, "checkpoint", json_string(checkpoint ? checkpoint : ""));
}

static const char *nonempty(const json_t *o, const char *key) {
    const char *v = json_string_value(json_object_get(o, key));
    return v && *v ? v : NULL;
}

void sf_trained_on_get(const json_t *root, const char **model, const char **checkpoint, const char **hook,
                       int *layer) {
    const json_t *tr = json_object_get(root, SF_TRAINED_ON_KEY);
    if (model) *model = nonempty(tr, "model");
    if (checkpoint) *checkpoint = nonempty(tr, "checkpoint");
    if (hook) *hook = nonempty(tr, "hook");
    if (layer) {
        const json_t *l = json_object_get(tr, "layer");
        *layer = json_is_integer(l) ? (int)json_integer_value(l) : -1;
    }
}
