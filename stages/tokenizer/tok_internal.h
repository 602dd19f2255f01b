/* tok_internal.h — structures shared by the tokenizer library's modules (not installed). */
#ifndef SAEFLOW_TOK_INTERNAL_H
#define SAEFLOW_TOK_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tok.h"

/* Piece types, numbered as SentencePiece numbers them. tokenizer.json special added tokens
 * become TOK_CONTROL, other added tokens TOK_USER; an id no token has (tokenizer.json ids may have
 * gaps, e.g. GPT-4's below its special tokens) is TOK_HOLE, an empty piece never produced. */
enum { TOK_NORMAL = 1, TOK_UNKNOWN = 2, TOK_CONTROL = 3, TOK_USER = 4, TOK_UNUSED = 5, TOK_BYTE = 6, TOK_HOLE = 7 };

/* tokenizer.json kinds come last (tok_core.c tests kind >= TOK_HF_BPE). */
enum tok_kind_e { TOK_SPM_UNIGRAM, TOK_SPM_BPE, TOK_HF_BPE, TOK_HF_UNIGRAM, TOK_HF_WORDPIECE, TOK_HF_WORDLEVEL };

/* ---- u64 -> u64 open-addressing hash map (keys are stored with bit 63 set; 0 = empty) ---- */
typedef struct tok_map_entry {
    uint64_t key, val; /* together: one cache line per probe */
} tok_map_entry;
typedef struct tok_map {
    tok_map_entry *e;
    size_t cap, n;  /* cap is a power of two */
    unsigned shift; /* 64 - log2(cap) */
} tok_map;

int tok_map_put(tok_map *m, uint64_t key, uint64_t val); /* 0, or -1 out of memory */
bool tok_map_get(const tok_map *m, uint64_t key, uint64_t *val);
void tok_map_free(tok_map *m);

/* ---- byte trie over tok_map: node 0 is the root; each node may carry a value ---- */
typedef struct tok_trie {
    tok_map edges;   /* (node << 8 | byte) -> child | (value at child + 1) << 32 */
    int32_t *value;  /* per node, -1 if no key ends here */
    uint32_t n_nodes, cap_nodes;
} tok_trie;

int tok_trie_insert(tok_trie *t, const char *s, size_t len, int32_t value);
int32_t tok_trie_get(const tok_trie *t, const char *s, size_t len);
void tok_trie_free(tok_trie *t);

/* Slot of a key: Fibonacci hashing (one multiply; the high bits are well mixed). */
static inline size_t tok_slot(const tok_map *m, uint64_t key) {
    return (size_t)((key * 0x9E3779B97F4A7C15ULL) >> m->shift);
}

/* The child of node along byte c, or 0 (the root is nobody's child) if there is none; *value
 * gets the value stored at the child (-1 if none). */
static inline uint32_t tok_trie_walk(const tok_trie *t, uint32_t node, uint8_t c, int32_t *value) {
    const tok_map *m = &t->edges;
    if (m->cap == 0) return 0;
    uint64_t key = ((uint64_t)node << 8 | c) | (1ULL << 63);
    size_t mask = m->cap - 1;
    for (size_t i = tok_slot(m, key);; i = (i + 1) & mask) {
        if (m->e[i].key == key) {
            *value = (int32_t)(uint32_t)(m->e[i].val >> 32) - 1;
            return (uint32_t)m->e[i].val;
        }
        if (m->e[i].key == 0) return 0;
    }
}

static inline uint32_t tok_trie_step(const tok_trie *t, uint32_t node, uint8_t c) {
    int32_t unused;
    return tok_trie_walk(t, node, c, &unused);
}

/* ---- UTF-8 ---- */
/* Length of the character starting at s as SentencePiece's OneCharLen reads the lead byte. */
static inline size_t tok_utf8_lead_len(uint8_t c) {
    static const uint8_t len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[c >> 4];
}
/* Decodes one strictly valid character (no overlongs, surrogates or > U+10FFFF): returns its
 * length and sets *cp, or returns 0 for an invalid sequence. */
size_t tok_utf8_decode(const char *s, size_t len, uint32_t *cp);
/* "<0x41>" -> 0x41, or -1 if s[len] is not a byte piece (two upper-case hex digits). */
int tok_byte_piece_value(const char *s, size_t len);
size_t tok_utf8_encode(uint32_t cp, char *out); /* out has room for 4 */

/* ---- growable byte buffer ---- */
typedef struct tok_buf {
    char *p;
    size_t n, cap;
} tok_buf;
int tok_buf_reserve(tok_buf *b, size_t extra);
int tok_buf_add(tok_buf *b, const void *s, size_t len);

/* ---- HF-specific parts (tok_hf.c) ---- */
typedef struct tok_hf tok_hf;

struct tok_tokenizer {
    enum tok_kind_e kind;
    int32_t n_vocab;
    char *blob;            /* every piece's bytes, back to back */
    uint32_t *piece_off;   /* [n_vocab] */
    uint32_t *piece_len;   /* [n_vocab] */
    double *score;         /* [n_vocab]; SentencePiece's are floats, tokenizer.json's doubles */
    double *uni_score;     /* [n_vocab] for the Viterbi: score, +inf for user pieces, NaN if unusable */
    uint8_t *type;         /* [n_vocab], TOK_NORMAL... */
    tok_trie vocab;        /* piece -> id, every piece */
    int32_t unk_id, bos_id, eos_id;
    bool byte_fallback;
    int32_t byte_id[256];  /* <0xNN> pieces, -1 if absent */
    float min_score, max_score; /* over TOK_NORMAL pieces (SentencePiece unknown penalty) */
    double hf_unk_score;   /* tokenizer.json Unigram: lowest score - 10 */
    bool has_user;         /* any TOK_USER piece (SentencePiece prefix matcher) */

    /* SentencePiece normaliser */
    bool add_dummy_prefix, remove_extra_ws, escape_ws, ws_as_suffix;
    uint8_t *charsmap;     /* owned copy of precompiled_charsmap, or NULL */
    const uint32_t *da;    /* double-array units inside charsmap (aligned copy) */
    size_t da_n;
    const char *norm_strs; /* NUL-separated normalised strings */
    size_t norm_len;
    char *unk_surface;     /* what decoding shows for <unk> */

    tok_hf *hf;            /* tokenizer.json pipeline, NULL for .model */
};

/* Per-thread scratch, hidden behind tok_ids. */
struct tok_scratch {
    tok_buf norm;        /* normalised text */
    tok_buf tmp;         /* second text buffer (HF normalisers) */
    void *nodes;         /* Viterbi nodes */
    size_t nodes_cap;
    void *syms;          /* BPE symbols */
    size_t syms_cap;
    void *heap;          /* BPE pair heap */
    size_t heap_cap;
    tok_map rev;         /* SentencePiece BPE: unused piece id -> the pair that formed it */
    void *hf;            /* tokenizer.json pipeline scratch (tok_hf.c) */
};

tok_tokenizer *tok_alloc(void);
/* Allocates the per-piece arrays for n pieces whose bytes total blob_bytes. */
int tok_alloc_pieces(tok_tokenizer *t, int32_t n, size_t blob_bytes);
/* Sets piece i; pieces are added in id order. */
void tok_set_piece(tok_tokenizer *t, int32_t i, const char *s, size_t len, double score, int type);
/* Builds the vocab trie, byte table and score range; fails on duplicate pieces. */
int tok_finish_vocab(tok_tokenizer *t, char *err, size_t errlen);

int tok_spm_load(tok_tokenizer *t, const void *buf, size_t len, char *err, size_t errlen);
int tok_spm_normalize(const tok_tokenizer *t, const char *text, size_t len, tok_buf *out);

int tok_hf_load(tok_tokenizer *t, const char *json, size_t len, char *err, size_t errlen);
int tok_hf_encode(const tok_tokenizer *t, const char *text, size_t len, int flags, tok_ids *out);
int tok_hf_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                  tok_buf *out);
int tok_hf_token_bytes(const tok_tokenizer *t, int32_t id, tok_buf *out);
void tok_hf_free(tok_hf *hf);
void tok_hf_scratch_free(void *hf_scratch);

/* Model algorithms over a normalised span, appending to out (tok_core.c). */
int tok_push(tok_ids *out, int32_t id);
int tok_unigram(const tok_tokenizer *t, const char *s, size_t len, bool fuse_unk, tok_ids *out);
/* SentencePiece BPE of normalized text s (user-defined pieces kept whole, unused pieces re-split). */
int tok_spm_bpe(const tok_tokenizer *t, const char *s, size_t len, tok_ids *out);

/* BPE merge priorities: spm uses the merged piece's score, HF the merge rank (tok_hf.c). */
typedef struct tok_bpe_sym {
    uint32_t start, len; /* bytes in the word */
    int32_t id;          /* -1 while the span is not a vocabulary piece */
    int32_t prev, next;
    bool frozen;         /* user-defined symbol: never merged */
} tok_bpe_sym;
typedef bool (*tok_bpe_pair_fn)(const tok_tokenizer *t, const char *word, const tok_bpe_sym *l,
                                const tok_bpe_sym *r, double *priority, int32_t *merged_id);
/* Runs the merges over syms[0..n) (linked in order); lowest priority first, leftmost on
 * ties. Returns the index of the first live symbol. */
int tok_bpe_merge(const tok_tokenizer *t, tok_scratch *sc, const char *word, tok_bpe_sym *syms,
                  int32_t n, tok_bpe_pair_fn pair);
int tok_bpe_syms_reserve(tok_scratch *sc, size_t n);

void tok_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
