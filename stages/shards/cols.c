/* Row columns in memory (a shard's tensors, one entry per row): the writer's pending shards,
 * the reader's shuffle buffer and output batches. */
#include <stdlib.h>

#include "shards.h"

int sh_cols_reserve(sh_cols *c, int64_t rows, size_t acts_row) {
    if (rows <= c->cap) return SF_OK;
    size_t n = (size_t)rows;
    void *p; /* each column grows in turn; one that fails keeps its block and c->cap its old value */
    if (!(p = sf_realloc(c->acts, "the activation rows of a shard", n, acts_row))) return SF_ERR;
    c->acts = p;
    if (!(p = sf_realloc(c->tokens, "a shard's token column", n, sizeof *c->tokens))) return SF_ERR;
    c->tokens = p;
    if (!(p = sf_realloc(c->pos, "a shard's pos column", n, sizeof *c->pos))) return SF_ERR;
    c->pos = p;
    if (!(p = sf_realloc(c->doc_id, "a shard's doc_id column", n, sizeof *c->doc_id))) return SF_ERR;
    c->doc_id = p;
    if (!(p = sf_realloc(c->seq, "a shard's seq column", n, sizeof *c->seq))) return SF_ERR;
    c->seq = p;
    if (!(p = sf_realloc(c->label, "a shard's label column", n, sizeof *c->label))) return SF_ERR;
    c->label = p;
    c->cap = rows;
    return SF_OK;
}

void sh_cols_free(sh_cols *c) {
    free(c->acts);
    free(c->tokens);
    free(c->pos);
    free(c->doc_id);
    free(c->seq);
    free(c->label);
}
