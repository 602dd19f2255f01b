/* lm_cli.c — `saeflow lm`: command-line access to the trainable model of lm_model.h.
 *
 *   saeflow lm grad MODEL_DIR --out FILE.safetensors [--threads N] [--force] < ids.txt
 *
 * reads token ids on stdin, one sequence per line, prints the mean next-token cross-entropy over
 * every position of every sequence (a sequence of n tokens has n - 1 positions) and writes the
 * gradient of that mean for every parameter, under its Hugging Face name, as F32 safetensors.
 * Sequences may differ in length: they are grouped by length (stable order) and each group runs
 * in batches of at most LM_CLI_BATCH_TOKENS tokens; batch k's gradient enters with weight
 * (its positions / all positions), so the sum is the gradient of the overall mean. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lm_cli.h"
#include "lm_model.h"
#include "sf_safetensors.h"
#include "token_lines.h"

#define LM_CLI_BATCH_TOKENS 4096 /* inputs per lm_loss_grad call (at least one sequence) */

static int grad_usage(FILE *out, int rc) {
    fprintf(out, "usage: saeflow lm grad MODEL_DIR --out FILE.safetensors [--threads N] [--force]\n"
                 "  reads token ids on stdin, one sequence per line (at least 2 tokens each, at most\n"
                 "  max_position_embeddings + 1); prints the mean next-token cross-entropy over every position\n"
                 "  of every sequence and writes its gradient for every parameter (Hugging Face names, F32).\n"
                 "  --threads: the sequences of a batch split over N threads (default: one per core); the result\n"
                 "  is the same for the same N. An existing --out is kept unless --force. Trains:\n"
                 "  LlamaForCausalLM without biases or dynamic rope_scaling.\n");
    return rc;
}

static int lm_usage(FILE *out, int rc) {
    fprintf(out, "usage: saeflow lm grad MODEL_DIR --out FILE.safetensors [--threads N] [--force]\n"
                 "  language-model training tools; `saeflow lm grad --help` for details\n");
    return rc;
}

/* Order of sequence indices by length, then by index (a stable grouping); ctx is the fw_seq_list. */
static int by_length(const void *a, const void *b, void *ctx) {
    const fw_seq_list *s = ctx;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    size_t li = s->start[i + 1] - s->start[i], lj = s->start[j + 1] - s->start[j];
    return li != lj ? (li < lj ? -1 : 1) : (i < j ? -1 : i > j);
}

/* Every sequence is 2..max_pos + 1 tokens of ids within the vocabulary. */
static int check_seqs(const fw_seq_list *s, const fw_config *c, const char *dir) {
    if (s->n_seq == 0) return sf_fail("no token ids on stdin; give one sequence per line");
    for (size_t i = 0; i < s->n_seq; i++) {
        size_t n = s->start[i + 1] - s->start[i];
        if (n < 2)
            return sf_fail("stdin sequence %zu has 1 token; a next-token loss needs at least 2", i + 1);
        if (n - 1 > (size_t)c->max_pos)
            return sf_fail("stdin sequence %zu has %zu tokens; %s allows at most %d "
                           "(max_position_embeddings + 1)", i + 1, n, dir, c->max_pos + 1);
        for (size_t t = 0; t < n; t++)
            if (s->tok[s->start[i] + t] >= c->vocab)
                return sf_fail("stdin sequence %zu, token %zu: id %d is outside the vocabulary of %s "
                               "(vocab_size %d)", i + 1, t + 1, s->tok[s->start[i] + t], dir, c->vocab);
    }
    return SF_OK;
}

static int grad_main(int argc, char **argv) {
    const char *dir = NULL, *out = NULL;
    int threads = 0, force = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return grad_usage(stdout, 0);
        if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 64) {
                fprintf(stderr, "saeflow lm grad: --threads must be 1..64, got \"%s\"\n", argv[i]);
                return 2;
            }
            threads = (int)v;
        } else if (!strcmp(argv[i], "--force")) force = 1;
        else if (argv[i][0] != '-' && !dir) dir = argv[i];
        else {
            fprintf(stderr, "saeflow lm grad: unexpected argument \"%s\"\n", argv[i]);
            return grad_usage(stderr, 2);
        }
    }
    if (!dir || !out) return grad_usage(stderr, 2);
    if (!force && access(out, F_OK) == 0) {
        fprintf(stderr, "saeflow lm grad: %s exists; remove it or pass --force to replace it\n", out);
        return 1;
    }

    int rc = 1;
    lm_model *m = NULL;
    lm_work *w = NULL;
    fw_seq_list s = {0};
    size_t *order = NULL;
    int32_t *batch = NULL;
    sf_st_writer *wr = NULL;
    if (lm_model_load(dir, &m) != SF_OK || fw_read_sequences(stdin, &s) != SF_OK ||
        check_seqs(&s, lm_model_config(m), dir) != SF_OK)
        goto done;

    size_t positions = s.n_tok - s.n_seq, longest = 0;
    if (!(order = sf_alloc("the sequence order", s.n_seq, sizeof *order))) goto done;
    for (size_t i = 0; i < s.n_seq; i++) {
        order[i] = i;
        size_t n = s.start[i + 1] - s.start[i];
        longest = n > longest ? n : longest;
    }
    qsort_r(order, s.n_seq, sizeof *order, by_length, &s);
    /* One set of work buffers, for Bmax sequences of the longest length: every batch fits. */
    int Tmax = (int)longest - 1, Bmax = LM_CLI_BATCH_TOKENS / Tmax < 1 ? 1 : LM_CLI_BATCH_TOKENS / Tmax;
    if ((size_t)Bmax > s.n_seq) Bmax = (int)s.n_seq;
    if (lm_work_new_threads(m, Bmax, Tmax, threads, &w) != SF_OK ||
        !(batch = sf_alloc("a batch of token ids", (size_t)Bmax * longest, sizeof *batch)))
        goto done;

    double total = 0;
    for (size_t i = 0; i < s.n_seq;) {
        size_t n = s.start[order[i] + 1] - s.start[order[i]];
        int B = 0;
        while (i < s.n_seq && B < Bmax && s.start[order[i] + 1] - s.start[order[i]] == n) {
            memcpy(batch + (size_t)B * n, s.tok + s.start[order[i]], n * sizeof *batch);
            B++;
            i++;
        }
        int T = (int)n - 1;
        double loss;
        float share = (float)((double)B * T / (double)positions);
        if (lm_loss_grad(m, w, batch, B, T, share, &loss) != SF_OK) goto done;
        total += loss * B * T;
    }

    lm_tensor *ts;
    size_t nt = lm_model_tensors(m, &ts);
    if (!(wr = sf_st_writer_new())) {
        sf_fail("out of memory creating the safetensors writer");
        goto done;
    }
    for (size_t i = 0; i < nt; i++) sf_st_writer_add(wr, ts[i].name, SF_F32, ts[i].ndim, ts[i].shape, ts[i].g);
    char meta[64];
    snprintf(meta, sizeof meta, "%.17g", total / (double)positions);
    sf_st_writer_meta(wr, "loss", meta);
    snprintf(meta, sizeof meta, "%zu", positions);
    sf_st_writer_meta(wr, "positions", meta);
    if (sf_st_writer_save(wr, out, NULL) != SF_OK) goto done;
    printf("%.9f\n", total / (double)positions);
    fprintf(stderr, "lm grad: mean loss over %zu positions of %zu sequences; %zu gradients written to %s\n",
            positions, s.n_seq, nt, out);
    rc = 0;
done:
    if (rc) fprintf(stderr, "saeflow lm grad: %s\n", sf_last_error());
    sf_st_writer_free(wr);
    free(batch);
    free(order);
    fw_seq_list_free(&s);
    lm_work_free(w);
    lm_model_free(m);
    return rc;
}

static int lm_main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) return lm_usage(argc < 2 ? stderr : stdout, argc < 2 ? 2 : 0);
    if (!strcmp(argv[1], "grad")) return grad_main(argc, argv);
    fprintf(stderr, "saeflow lm: unknown subcommand \"%s\"\n", argv[1]);
    return lm_usage(stderr, 2);
}

const sf_command lm_commands[] = {
    {"lm", "grad MODEL_DIR --out FILE.safetensors [--threads N] [--force]",
     "loss and gradient of every parameter of a Llama checkpoint on token ids from stdin", lm_main},
    {NULL, NULL, NULL, NULL},
};
