/* shards.h — activation shards on disk: the manifest, the writer and the reader.
 *
 * A shard directory holds numbered safetensors files `<split>-<index>.safetensors`, each with the
 * flattened rows of whole sequences (see README.md for the layout), and `manifest.json`, the list
 * of complete shards. A shard exists for readers only once the manifest names it; both are
 * replaced atomically (temp file, fsync, rename, fsync of the directory), so a crash at any
 * moment leaves a manifest naming only complete, checksummed shards.
 *
 * These modules do not depend on the runtime: the plugin (plugin.c), the `saeflow shards`
 * command (inspect.c) and the test driver all call them. */
#ifndef SHARDS_H
#define SHARDS_H

#include <stddef.h>
#include <stdint.h>

#include "saeflow.h"
#include "sf_safetensors.h"

#define SH_FORMAT "saeflow-shards"
#define SH_VERSION 1
#define SH_MAX_LABELS 256 /* labels are stored as uint8 indices into the manifest's list */
#define SH_NAME_MAX 64    /* split and label names */

/* ---- manifest ---------------------------------------------------------------------------- */

typedef struct sh_shard_info {
    char file[96];       /* base name inside the directory */
    char split[SH_NAME_MAX];
    int64_t count;       /* rows (tokens) */
    int64_t sequences;
    int64_t first_seq, last_seq; /* seq (write order) of the first and last sequence */
    int64_t bytes;       /* file size */
    uint32_t crc32;      /* zlib CRC-32 of the whole file */
    double norm_sum, norm_sq_sum; /* sums of the rows' L2 norms and squared norms */
} sh_shard_info;

/* The run identity: a directory holds the activations of one model checkpoint at one hook. */
typedef struct sh_run {
    char *model, *checkpoint, *hook;
    char *corpus;   /* text_source's fingerprint of the corpora; NULL if the input carried none */
    int64_t layer;
    int64_t d;
    sf_dtype dtype; /* as stored: SF_F32, SF_BF16 or SF_F16 */
} sh_run;

typedef struct sh_manifest {
    sh_run run;
    int complete;   /* the writer saw the end of its input */
    char **labels;
    size_t nlabels;
    sh_shard_info *shards;
    size_t nshards, cap;
} sh_manifest;

/* Loads and validates DIR/manifest.json. Returns SF_OK, SF_DONE if there is none (m zeroed), or
 * SF_ERR (sf_last_error() says what is wrong, naming the file). */
int sh_manifest_load(const char *dir, sh_manifest *m);
/* The same from a manifest's bytes (untrusted; path only names them in messages). */
int sh_manifest_parse(const char *path, const char *buf, size_t len, sh_manifest *m);
/* Writes DIR/manifest.json atomically and durably. */
int sh_manifest_save(const char *dir, const sh_manifest *m);
/* The JSON text sh_manifest_save writes, without its final newline (malloc'd); NULL (sf_fail) out of memory. */
char *sh_manifest_dumps(const sh_manifest *m);
void sh_manifest_free(sh_manifest *m);
int sh_manifest_label_index(const sh_manifest *m, const char *label, size_t len);
/* SF_OK if name is a usable split or label name ([A-Za-z0-9_.-], 1..63 bytes). */
int sh_name_ok(const char *s, size_t len);
/* Parses "F32", "BF16", "F16" (any case) into a storable dtype. */
int sh_dtype_parse(const char *s, sf_dtype *out);
/* Tensor bytes per row (activations plus the per-token fields). */
size_t sh_row_bytes(const sh_run *r);

/* Row columns in memory, one entry per row as in a shard. */
typedef struct sh_cols {
    int64_t cap;
    uint8_t *acts;
    int32_t *tokens, *pos;
    int64_t *doc_id, *seq;
    uint8_t *label;
} sh_cols;

/* Grows c to hold at least `rows` rows, keeping its contents. SF_ERR (sf_fail naming the
 * column and its size) when memory runs out; c is then unchanged and still freed by sh_cols_free. */
int sh_cols_reserve(sh_cols *c, int64_t rows, size_t acts_row);
void sh_cols_free(sh_cols *c);

/* ---- sequence keys ----------------------------------------------------------------------- */

/* A set of sequences by (doc_id, pos of the first token), with a value per key for its user:
 * bits 0..30 of val are the user's; the top bit marks a used slot (24 bytes a slot). Keys read
 * from shards also carry what the sequence stored, so that a resumed run can check that a
 * sequence it skips is the same one (same corpus, tokenizer and seq_len), not only the same key. */
#define SH_KEY_USED 0x80000000u
typedef struct sh_key {
    int64_t doc;
    int32_t pos;
    uint32_t val;
    int32_t rows;        /* token rows stored for the sequence; 0: not known (a trainer's list) */
    uint32_t tokens_crc; /* CRC-32 (sf_crc32) of those rows' token ids, when rows > 0 */
} sh_key;

typedef struct sh_keys {
    sh_key *k;
    size_t cap, n; /* capacity a power of two (or 0), keys held */
} sh_keys;

/* The key, or NULL if absent. */
sh_key *sh_keys_find(const sh_keys *s, int64_t doc, int32_t pos);
/* The key, added with user bits 0 if absent. Pointers into the set are valid until the next add.
 * NULL (sf_fail: the key table and its size) when memory runs out; the set is then unchanged. */
sh_key *sh_keys_add(sh_keys *s, int64_t doc, int32_t pos);
void sh_keys_free(sh_keys *s);
/* Adds the key of every sequence stored in the shards m (of DIR) lists, with its rows and token
 * CRC, reading only the doc_id, pos, seq and tokens columns (24 bytes a row). */
int sh_stored_keys(const char *dir, const sh_manifest *m, sh_keys *keys);
/* Whether tokens (n int32, any alignment) are the ones key k stored (true when k does not know them). */
int sh_key_same_tokens(const sh_key *k, const void *tokens, int64_t n);
/* The trained-sequence lists of an SAE checkpoint (sae_trainer writes them): trained_doc I64 [n],
 * trained_pos I32 [n], trained_rows I32 [n] (rows of the sequence trained). Pointers into the
 * file, unaligned: read entry i with sh_trained_at. */
typedef struct sh_trained {
    int64_t n;
    const void *doc, *pos, *rows;
} sh_trained;

/* SF_OK, SF_DONE if the checkpoint has no lists (its stream had no doc_id/pos), SF_ERR if they are
 * malformed (naming path). */
int sh_trained_lists(const sf_st_file *f, const char *path, sh_trained *t);
void sh_trained_at(const sh_trained *t, int64_t i, int64_t *doc, int32_t *pos, int32_t *rows);
/* The writer side of the same lists (sae_trainer's checkpoint): from a set whose val holds the rows
 * trained of each sequence in bits 0..30, the three vectors sorted by (doc, pos), as tensors named
 * as sh_trained_lists reads them, to add to the checkpoint. Free with sh_trained_out_free after
 * the save. SF_OK, or SF_ERR (sf_fail) when memory runs out. */
typedef struct sh_trained_out {
    int64_t n;
    int64_t *doc;       /* [n] */
    int32_t *pos, *rows; /* [n] each */
    sf_st_tensor t[3];  /* trained_doc, trained_pos, trained_rows over the arrays above */
} sh_trained_out;
int sh_trained_build(const sh_keys *set, sh_trained_out *o);
void sh_trained_out_free(sh_trained_out *o);
/* A checkpoint's integer metadata entry (stream_rows, seq_rows); -1 if absent or not a whole integer. */
int64_t sh_meta_int(const sf_st_file *f, const char *key);
/* Adds the key of every sequence that sae_trainer's DIR/checkpoint.safetensors lists as trained
 * whole (trained_rows >= its seq_rows), and sets run's model, checkpoint and hook (malloc'd, NULL
 * where its training metadata has none; the caller frees them). SF_DONE if DIR has no checkpoint. */
int sh_trained_keys(const char *dir, sh_keys *keys, sh_run *run);

/* ---- writer ------------------------------------------------------------------------------ */

/* One batch of sequences as the activations message carries it. Pointers may be unaligned. */
typedef struct sh_batch {
    const char *model, *checkpoint, *hook; /* NUL-terminated */
    const char *corpus;       /* NULL or "" if the input carries no corpus fingerprint */
    int64_t layer;
    const char *split;
    sf_tensor acts;           /* [B, T, d], F32, BF16 or F16 */
    const void *tokens;       /* int32 [B, T] */
    const void *doc_id;       /* int64 [B] */
    const void *pos;          /* int32 [B]: position of each sequence's first token */
    const char *const *label; /* [B] strings of label_len[i] bytes */
    const size_t *label_len;
} sh_batch;

typedef struct sh_writer sh_writer;

/* Opens (creating it if needed) a shard directory for writing `dtype` shards of about
 * shard_bytes each. An existing manifest is resumed: the sequences it already holds (by doc_id
 * and pos) are skipped when they arrive again. resume == 0 refuses a non-empty run.
 * skipped_upstream: a source drops the stored sequences before they are computed (and checks
 * that its input holds them: tokenizer skip_stored), so they need not arrive again. */
sh_writer *sh_writer_open(const char *dir, sf_dtype dtype, size_t shard_bytes, int resume, int skipped_upstream);
int sh_writer_add(sh_writer *w, const sh_batch *b);
/* Writes what is pending as shards. at_end: the input ended; checks that it covered everything
 * already stored and marks the manifest complete. */
int sh_writer_close(sh_writer *w, int at_end);
void sh_writer_free(sh_writer *w);
/* Counters: sequences skipped because already stored, rows written in this run, shards written. */
void sh_writer_stats(const sh_writer *w, int64_t *skipped_seqs, int64_t *rows, int64_t *shards);

/* ---- reader ------------------------------------------------------------------------------ */

typedef struct sh_reader_opts {
    const char *split;    /* read only shards of this split */
    int shuffle;          /* 0: whole sequences in stored order; 1: rows through a shuffle buffer */
    int64_t buffer_rows;  /* shuffle buffer capacity */
    int64_t batch_rows;   /* rows per shuffled batch */
    int64_t batch_seqs;   /* at most this many sequences per in-order batch */
    int64_t epochs;
    uint64_t seed;
    int part, parts;      /* this reader takes the shards i with i % parts == part */
    int verify;           /* check each shard's CRC-32 against the manifest */
} sh_reader_opts;

/* A batch: B sequences of T tokens (shuffled mode: B rows of T = 1). Valid until the next call.
 * Arrays are aligned and owned by the reader. */
typedef struct sh_out {
    int64_t B, T;
    int64_t epoch;
    const void *acts;        /* [B, T, d] in the stored dtype */
    const int32_t *tokens;   /* [B, T] */
    const int64_t *doc_id;   /* [B] */
    const int32_t *pos;      /* [B] */
    const uint8_t *label;    /* [B] indices into the manifest's labels */
    const int64_t *seq;      /* [B] global sequence numbers */
} sh_out;

typedef struct sh_reader sh_reader;

sh_reader *sh_reader_open(const char *dir, const sh_reader_opts *o);
const sh_manifest *sh_reader_manifest(const sh_reader *r);
/* Rows this reader will deliver per epoch. */
int64_t sh_reader_rows_per_epoch(const sh_reader *r);
/* SF_OK with a batch in *out, SF_DONE after the last epoch, SF_ERR (naming the shard). */
int sh_reader_next(sh_reader *r, sh_out *out);
void sh_reader_free(sh_reader *r);

/* One shard mapped and checked against its manifest entry (layout, sizes, optionally CRC). */
typedef struct sh_shard {
    void *file;              /* sf_st_file */
    int64_t n;
    const uint8_t *acts;     /* [n, d] stored dtype (as aligned as the file makes it) */
    const uint8_t *tokens, *doc_id, *pos, *label, *seq; /* may be unaligned: read with memcpy */
} sh_shard;

int sh_shard_open(const char *dir, const sh_manifest *m, const sh_shard_info *si, int verify,
                  sh_shard *s);
void sh_shard_close(sh_shard *s);
/* CRC-32 (unless crc is NULL) and size of a file, reading it sequentially. */
int sh_file_crc(const char *path, uint32_t *crc, int64_t *bytes);
/* SF_OK if crc and bytes are the manifest's for the shard; else an error naming path. */
int sh_shard_check_crc(const char *path, const sh_shard_info *si, uint32_t crc, int64_t bytes);

/* The `saeflow shards` command. */
int sh_command_main(int argc, char **argv);

#endif
