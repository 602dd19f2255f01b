/* libFuzzer target: untrusted bytes through the shard manifest reader (sh_manifest_parse, the
 * validation sh_manifest_load applies to DIR/manifest.json). Whatever it accepts must survive a
 * round trip: written back (sh_manifest_dumps, the text sh_manifest_save writes) it is accepted
 * again with the same contents, and writes the same text; anything else aborts, so the fuzzer
 * reports it. Seeds: tests/fuzz/corpus (manifests the writer wrote, and damaged copies). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shards.h"

static void same_or_abort(int cond, const char *what) {
    if (!cond) {
        fprintf(stderr, "manifest round trip: %s differs\n", what);
        abort();
    }
}

static int same_str(const char *a, const char *b) { return (!a && !b) || (a && b && strcmp(a, b) == 0); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sh_manifest m, again;
    if (sh_manifest_parse("fuzz", (const char *)data, size, &m) != SF_OK) return 0;
    for (size_t i = 0; i < m.nlabels; i++)
        same_or_abort(sh_manifest_label_index(&m, m.labels[i], strlen(m.labels[i])) == (int)i, "label index");
    char *text = sh_manifest_dumps(&m);
    same_or_abort(text != NULL, "written back");
    if (sh_manifest_parse("fuzz (written back)", text, strlen(text), &again) != SF_OK) {
        fprintf(stderr, "an accepted manifest is refused once written back: %s\n", sf_last_error());
        abort();
    }
    same_or_abort(same_str(m.run.model, again.run.model) && same_str(m.run.checkpoint, again.run.checkpoint) &&
                      same_str(m.run.hook, again.run.hook) && same_str(m.run.corpus, again.run.corpus) &&
                      m.run.layer == again.run.layer && m.run.d == again.run.d && m.run.dtype == again.run.dtype &&
                      m.complete == again.complete,
                  "run identity");
    same_or_abort(m.nlabels == again.nlabels && m.nshards == again.nshards, "label or shard count");
    for (size_t i = 0; i < m.nlabels; i++) same_or_abort(strcmp(m.labels[i], again.labels[i]) == 0, "a label");
    for (size_t i = 0; i < m.nshards; i++) {
        const sh_shard_info *a = &m.shards[i], *b = &again.shards[i];
        same_or_abort(strcmp(a->file, b->file) == 0 && strcmp(a->split, b->split) == 0 && a->count == b->count &&
                          a->sequences == b->sequences && a->first_seq == b->first_seq && a->last_seq == b->last_seq &&
                          a->bytes == b->bytes && a->crc32 == b->crc32,
                      "a shard entry");
        same_or_abort((a->norm_sum == b->norm_sum || (a->norm_sum != a->norm_sum && b->norm_sum != b->norm_sum)) &&
                          (a->norm_sq_sum == b->norm_sq_sum ||
                           (a->norm_sq_sum != a->norm_sq_sum && b->norm_sq_sum != b->norm_sq_sum)),
                      "a shard's norm sums");
    }
    char *text2 = sh_manifest_dumps(&again);
    same_or_abort(text2 && strcmp(text, text2) == 0, "the written text");
    free(text);
    free(text2);
    sh_manifest_free(&m);
    sh_manifest_free(&again);
    return 0;
}
