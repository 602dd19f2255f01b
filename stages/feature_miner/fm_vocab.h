/* fm_vocab.h — the display strings of token ids, which the miner's outputs, its report and its
 * logit effects show: from a tokenizer file, or from an spm_export_vocab listing. */
#ifndef FM_VOCAB_H
#define FM_VOCAB_H

#include <stddef.h>
#include <stdint.h>

/* Display strings of token ids ("▁" already a space). */
typedef struct fm_vocab {
    int n;
    char **s;
    int32_t bos; /* BOS id, -1 if unknown */
} fm_vocab;

/* Loads the display strings: a tokenizer file through tok.h when built with it, or a
 * spm_export_vocab listing (piece<TAB>score per line, id = line number; a file ending in .vocab
 * or .txt). SF_OK / SF_ERR. */
int fm_vocab_load(fm_vocab *v, const char *path);
void fm_vocab_free(fm_vocab *v);
/* The display string of id ("<id N>" for ids outside the vocabulary; buf is used then). */
const char *fm_vocab_str(const fm_vocab *v, int32_t id, char *buf, size_t cap);

#endif
