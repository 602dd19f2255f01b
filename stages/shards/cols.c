/* Row columns in memory (a shard's tensors, one entry per row): the writer's pending shards,
 * the reader's shuffle buffer and output batches. */
#include <stdlib.h>

#include "shards.h"

void *sh_grow(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p) abort();
    return p;
}

void sh_cols_reserve(sh_cols *c, int64_t rows, size_t acts_row) {
    if (rows <= c->cap) return;
    c->acts = sh_grow(c->acts, (size_t)rows * acts_row);
    c->tokens = sh_grow(c->tokens, (size_t)rows * 4);
    c->pos = sh_grow(c->pos, (size_t)rows * 4);
    c->doc_id = sh_grow(c->doc_id, (size_t)rows * 8);
    c->seq = sh_grow(c->seq, (size_t)rows * 8);
    c->label = sh_grow(c->label, (size_t)rows);
    c->cap = rows;
}

void sh_cols_free(sh_cols *c) {
    free(c->acts);
    free(c->tokens);
    free(c->pos);
    free(c->doc_id);
    free(c->seq);
    free(c->label);
}
