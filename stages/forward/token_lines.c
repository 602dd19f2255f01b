/* token_lines.c — token_lines.h: token ids as text, one sequence per line. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow.h"
#include "token_lines.h"

static int seq_push_tok(fw_seq_list *l, int32_t v) {
    if (l->n_tok == l->cap_tok) {
        size_t cap = l->cap_tok ? 2 * l->cap_tok : 1024;
        int32_t *t = sf_realloc(l->tok, "the token ids read from stdin", cap, sizeof *l->tok);
        if (!t) return SF_ERR;
        l->tok = t;
        l->cap_tok = cap;
    }
    l->tok[l->n_tok++] = v;
    return SF_OK;
}

/* Records that a sequence starts at token index start; keeps room for the end sentinel. */
static int seq_push_start(fw_seq_list *l, size_t start) {
    if (l->n_seq + 2 > l->cap_seq) {
        size_t cap = l->cap_seq ? 2 * l->cap_seq : 64;
        size_t *t = sf_realloc(l->start, "the sequences read from stdin", cap, sizeof *l->start);
        if (!t) return SF_ERR;
        l->start = t;
        l->cap_seq = cap;
    }
    l->start[l->n_seq++] = start;
    l->start[l->n_seq] = l->n_tok;
    return SF_OK;
}

int fw_read_sequences(FILE *in, fw_seq_list *l) {
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    while (getline(&line, &cap, in) >= 0) {
        lineno++;
        size_t before = l->n_tok;
        for (char *p = line, *end;; p = end) {
            while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
            if (!*p) break;
            errno = 0;
            long long v = strtoll(p, &end, 10);
            if (end == p || errno || v < 0 || v > INT32_MAX || (*end && !strchr(" \t\r\n", *end))) {
                size_t n = strcspn(p, " \t\r\n");
                sf_fail("stdin line %ld: not a token id: \"%.*s\"", lineno, (int)(n < 20 ? n : 20), p);
                free(line);
                return SF_ERR;
            }
            if (seq_push_tok(l, (int32_t)v) != SF_OK) {
                free(line);
                return SF_ERR;
            }
        }
        if (l->n_tok > before && seq_push_start(l, before) != SF_OK) {
            free(line);
            return SF_ERR;
        }
    }
    free(line);
    return SF_OK;
}

void fw_seq_list_free(fw_seq_list *l) {
    free(l->tok);
    free(l->start);
    *l = (fw_seq_list){0};
}
