/* tk_mix.h — the paper's order of SAE training data for a stream of token sequences, in bounded
 * memory: balanced by label and shuffled across documents.
 *
 * The paper (llm-jp/llm-jp-sae, its data preparation) takes the same number of 64-token sequences
 * from Japanese and from English Wikipedia, the first ones of each, and permutes all of them at
 * random before training. Here, sequences arrive one document after another:
 *
 * - Balance (the stage's `balance` list, e.g. en,ja): each label has a FIFO pool; whenever every pool holds a
 *   sequence, one of each (the oldest) moves on. So the output holds the first N sequences of
 *   every label, N the smallest label's count, as the paper's; the rest is dropped. A pool holds at
 *   most `pool` sequences: when the input runs long on one label (e.g. a corpus sorted by
 *   language), its later sequences are dropped as they come (counted apart: dropped_full).
 * - Shuffle (`buffer` sequences): the classic bounded shuffle buffer. Once full, each new sequence
 *   takes the place of one drawn uniformly at random, which goes out; at the end the rest goes
 *   out in a random order. With a buffer as large as the stream this is a uniform random
 *   permutation (the paper's randperm); with a smaller one a sequence moves up to about `buffer`
 *   places, and batches mix sequences of about `buffer` consecutive input sequences.
 *
 * Deterministic for a seed and an input order. Memory: (pool x labels + buffer) x (T x 4 + 16)
 * bytes. */
#ifndef TK_MIX_H
#define TK_MIX_H

#include <stddef.h>
#include <stdint.h>

#define TK_MIX_MAX_LABELS 64

/* Receives each sequence that goes out: row[T] (BOS, ids, padding), its document, position and
 * label (the caller's index, as given to tk_mix_add). SF_OK or SF_ERR. */
typedef int (*tk_mix_out)(void *ctx, const int32_t *row, int64_t doc_id, int32_t pos, int label);

typedef struct tk_mix tk_mix;

/* Labels are the caller's indices in [0, TK_MIX_MAX_LABELS). n_balance: balance labels
 * 0..n_balance-1 (0: no balance; else at least 2, and every label added must be below it); pool:
 * per-label pool size (>= 1 when balancing); buffer: shuffle buffer size (0: no shuffle). NULL
 * with sf_fail() on bad arguments or no memory. */
tk_mix *tk_mix_new(int64_t T, int n_balance, int64_t pool, int64_t buffer, uint64_t seed, tk_mix_out out,
                   void *ctx);
int tk_mix_add(tk_mix *m, const int32_t *row, int64_t doc_id, int32_t pos, int label);
/* The end of the input: the balance pools' leftovers are dropped, the buffer goes out. */
int tk_mix_finish(tk_mix *m);
/* Per label: sequences in, out, dropped as surplus at the end, dropped because the pool was full. */
typedef struct tk_mix_counts {
    int64_t in, out, dropped_surplus, dropped_full;
} tk_mix_counts;
tk_mix_counts tk_mix_label_counts(const tk_mix *m, int label);
void tk_mix_free(tk_mix *m);

#endif
