/* ts_reader.h — the text_source stage's document reader, free of the runtime so tests and tools
 * can use it: corpora of plain-text or JSON Lines files (optionally .gz), stable document ids,
 * the hash split, and a seeded shuffled interleaving through a bounded buffer. */
#ifndef SAEFLOW_TS_READER_H
#define SAEFLOW_TS_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ts_format { TS_AUTO, TS_TEXT, TS_JSONL };
enum ts_unit { TS_LINE, TS_PARAGRAPH, TS_FILE }; /* what one document is in a plain-text file */
enum ts_split { TS_TRAIN, TS_VALIDATION, TS_TEST, TS_ALL };

typedef struct ts_config {
    const char *corpora;      /* "LABEL=GLOB,LABEL=GLOB,..." (a bare GLOB has label "") */
    const char *weights;      /* "LABEL=W,..." relative draw weights of the corpora ("" = all 1) */
    enum ts_format format;
    enum ts_unit unit;
    const char *text_field, *id_field, *label_field; /* JSON Lines; "" = not used */
    const char *split_field;  /* JSON Lines: the split from this field ("train", "valid" or
                               * "validation", "test") instead of the hash; "" = the hash */
    double ratio[3];          /* train, validation, test */
    uint64_t split_seed;      /* which documents land in which split */
    enum ts_split split;      /* the split to emit */
    uint64_t seed;            /* order: file order, interleaving and shuffle */
    size_t shuffle_buffer;    /* documents held for shuffling (0: keep the interleaved order) */
    size_t max_doc_bytes;     /* longer documents are skipped (and counted) */
    size_t min_chars;         /* shorter documents (in bytes) are skipped */
    bool fail_on_error;       /* bad input stops the run instead of being skipped */
    int replica, replicas;    /* this reader emits documents r, r+R, r+2R... of the stream */
} ts_config;

typedef struct ts_doc {
    uint64_t doc_id;          /* 63-bit */
    const char *label;
    const char *split;        /* "train", "validation", "test" */
    char *text;
    size_t text_len;
    char *source;             /* "file:line" */
} ts_doc;

/* Why documents were skipped, for the run summary. */
typedef struct ts_counts {
    int64_t docs, bad_json, bad_utf8, missing_field, too_long, too_short, other_split;
} ts_counts;

typedef struct ts_reader ts_reader;

/* NULL with a message in err on a bad configuration or when a glob matches no file. */
ts_reader *ts_open(const ts_config *cfg, char *err, size_t errlen);
enum { TS_SKIPPED = 2 };
/* The next document (owned by the reader, valid until the next call): 1; 0 at the end; -1 on
 * an error (bad input with fail_on_error, an I/O error), message in err; TS_SKIPPED when a bad
 * record was skipped, err saying where (file:line) and why: log it and call again. */
int ts_next(ts_reader *r, ts_doc *doc, char *err, size_t errlen);
const ts_counts *ts_counts_get(const ts_reader *r);
/* A fingerprint of the corpora's files, "v1:CRC:FILES:BYTES": per file its label, size and the
 * CRC-32 of its first and last 64 KiB, combined in an order-independent way (moving or renaming
 * files keeps it; another file, or a changed head, tail or size, changes it). 0, or -1 with a
 * message in err (a file that cannot be read). */
int ts_fingerprint(const ts_reader *r, char *out, size_t cap, char *err, size_t errlen);
void ts_close(ts_reader *r);

/* The split a document id falls in, given the ratios and split seed. */
enum ts_split ts_split_of(uint64_t doc_id, const double ratio[3], uint64_t split_seed);
/* 63-bit FNV-1a of the parts joined with NUL bytes. */
uint64_t ts_doc_hash(const char *label, const char *key, size_t key_len, int64_t index);

#endif
