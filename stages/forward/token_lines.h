/* token_lines.h — token ids read as text, one sequence per line (`saeflow forward`, `saeflow lm
 * grad`): the one reader of that format, with its errors. */
#ifndef FW_TOKEN_LINES_H
#define FW_TOKEN_LINES_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct fw_seq_list {
    int32_t *tok;   /* all sequences, concatenated */
    size_t n_tok, cap_tok;
    size_t *start;  /* sequence i is tok[start[i] .. start[i+1]) */
    size_t n_seq, cap_seq;
} fw_seq_list;

/* One sequence per line, non-negative int32 ids separated by spaces or tabs; blank lines are
 * skipped. SF_OK, or SF_ERR (sf_fail) naming the line of the first id that is not one. */
int fw_read_sequences(FILE *in, fw_seq_list *l);
void fw_seq_list_free(fw_seq_list *l);

#endif
