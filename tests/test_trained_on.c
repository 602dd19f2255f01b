/* The record of what an SAE was trained on (sf_trained_on.h): what sf_trained_on_put writes,
 * dumped as a file holds it, has the field names the readers and the Python tools expect, and
 * sf_trained_on_get reads it back; absent, empty or non-string fields read as NULL. */
#include <stdlib.h>
#include <string.h>

#include "sf_check.h"
#include "sf_trained_on.h"

static int same(const char *a, const char *b) { return a && b && !strcmp(a, b); }

int main(void) {
    json_t *tr = json_pack("{s:I}", "steps", (json_int_t)7);
    sf_trained_on_put(tr, "models/llm-jp-3-1.8b", "iter_0988240", "model.layers.12", 12);
    json_t *root = json_pack("{s:o}", SF_TRAINED_ON_KEY, tr);
    char *text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    CHECK(text && !strcmp(text, "{\"saeflow_training\":{\"checkpoint\":\"iter_0988240\",\"hook\":\"model.layers.12\","
                                "\"layer\":12,\"model\":\"models/llm-jp-3-1.8b\",\"steps\":7}}"),
          "written as %s", text ? text : "(null)");

    root = json_loads(text, 0, NULL);
    const char *model, *checkpoint, *hook;
    int layer;
    sf_trained_on_get(root, &model, &checkpoint, &hook, &layer);
    CHECK(same(model, "models/llm-jp-3-1.8b") && same(checkpoint, "iter_0988240") && same(hook, "model.layers.12") &&
              layer == 12,
          "read back %s %s %s %d", model, checkpoint, hook, layer);
    json_decref(root);
    free(text);

    root = json_loads("{\"saeflow_training\":{\"model\":\"\",\"hook\":3}}", 0, NULL);
    sf_trained_on_get(root, &model, &checkpoint, &hook, &layer);
    CHECK(!model && !checkpoint && !hook && layer == -1, "empty, absent, non-string fields are NULL");
    json_decref(root);
    sf_trained_on_get(NULL, &model, &checkpoint, &hook, &layer);
    CHECK(!model && !checkpoint && !hook && layer == -1, "no record at all");
    return failures != 0;
}
