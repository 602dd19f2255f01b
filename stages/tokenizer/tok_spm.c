/* tok_spm.c — SentencePiece .model files: the protobuf (via protobuf-c and spm_model.proto)
 * and the normaliser (precompiled character map + whitespace rules), as sentencepiece does. */
#include <stdlib.h>
#include <string.h>

#include "spm_model.pb-c.h"
#include "tok_internal.h"

int tok_spm_load(tok_tokenizer *t, const void *buf, size_t len, char *err, size_t errlen) {
    Spm__ModelProto *m = spm__model_proto__unpack(NULL, len, buf);
    if (!m) {
        tok_errf(err, errlen, "not a SentencePiece model (protobuf does not parse)");
        return -1;
    }
    int rc = -1;
    if (m->n_pieces == 0 || m->n_pieces > INT32_MAX / 2) {
        tok_errf(err, errlen, "SentencePiece model has %zu pieces", m->n_pieces);
        goto done;
    }
    const Spm__TrainerSpec *ts = m->trainer_spec;
    int model_type = ts ? ts->model_type : SPM__TRAINER_SPEC__MODEL_TYPE__UNIGRAM;
    if (model_type != SPM__TRAINER_SPEC__MODEL_TYPE__UNIGRAM &&
        model_type != SPM__TRAINER_SPEC__MODEL_TYPE__BPE) {
        tok_errf(err, errlen, "SentencePiece model type %d (WORD/CHAR) is not supported", model_type);
        goto done;
    }
    t->kind = model_type == SPM__TRAINER_SPEC__MODEL_TYPE__BPE ? TOK_SPM_BPE : TOK_SPM_UNIGRAM;
    t->byte_fallback = ts && ts->byte_fallback;
    t->ws_as_suffix = ts && ts->treat_whitespace_as_suffix;

    size_t blob = 0;
    for (size_t i = 0; i < m->n_pieces; i++) {
        if (!m->pieces[i]->piece) {
            tok_errf(err, errlen, "piece %zu has no text", i);
            goto done;
        }
        blob += strlen(m->pieces[i]->piece);
        if (blob > UINT32_MAX) {
            tok_errf(err, errlen, "pieces too large");
            goto done;
        }
    }
    if (tok_alloc_pieces(t, (int32_t)m->n_pieces, blob) != 0) {
        tok_errf(err, errlen, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < m->n_pieces; i++) {
        const Spm__ModelProto__SentencePiece *p = m->pieces[i];
        int type = p->has_type ? (int)p->type : TOK_NORMAL;
        if (type < TOK_NORMAL || type > TOK_BYTE) {
            tok_errf(err, errlen, "piece %zu has unknown type %d", i, type);
            goto done;
        }
        tok_set_piece(t, (int32_t)i, p->piece, strlen(p->piece), p->score, type);
        if (type == TOK_UNKNOWN) {
            if (t->unk_id >= 0) {
                tok_errf(err, errlen, "two unknown pieces (%d and %zu)", t->unk_id, i);
                goto done;
            }
            t->unk_id = (int32_t)i;
        }
        if (type == TOK_BYTE && !t->byte_fallback) {
            tok_errf(err, errlen, "byte piece %s but byte_fallback is off", p->piece);
            goto done;
        }
    }
    if (t->unk_id < 0) {
        tok_errf(err, errlen, "the model has no unknown piece");
        goto done;
    }
    if (tok_finish_vocab(t, err, errlen) != 0) goto done;
    /* bos/eos ids from the trainer spec, if they name control pieces of this model. */
    int32_t bos = ts ? ts->bos_id : 1, eos = ts ? ts->eos_id : 2;
    t->bos_id = bos >= 0 && bos < t->n_vocab && t->type[bos] == TOK_CONTROL ? bos : -1;
    t->eos_id = eos >= 0 && eos < t->n_vocab && t->type[eos] == TOK_CONTROL ? eos : -1;
    t->unk_surface = strdup(ts && ts->unk_surface ? ts->unk_surface : " \xE2\x81\x87 ");
    if (!t->unk_surface) goto done;

    const Spm__NormalizerSpec *ns = m->normalizer_spec;
    t->add_dummy_prefix = ns ? ns->add_dummy_prefix : true;
    t->remove_extra_ws = ns ? ns->remove_extra_whitespaces : true;
    t->escape_ws = ns ? ns->escape_whitespaces : true;
    if (ns && ns->has_precompiled_charsmap && ns->precompiled_charsmap.len > 0) {
        const uint8_t *cm = ns->precompiled_charsmap.data;
        size_t cm_len = ns->precompiled_charsmap.len;
        uint32_t trie_bytes = cm_len > 4 ? (uint32_t)cm[0] | (uint32_t)cm[1] << 8 |
                                               (uint32_t)cm[2] << 16 | (uint32_t)cm[3] << 24
                                         : 0;
        if (cm_len <= 4 || trie_bytes >= cm_len - 4 || trie_bytes % 4 != 0 || trie_bytes == 0) {
            tok_errf(err, errlen, "precompiled_charsmap is broken");
            goto done;
        }
        uint32_t *da = malloc(trie_bytes);
        t->charsmap = malloc(cm_len - 4 - trie_bytes + 1);
        if (!da || !t->charsmap) {
            free(da);
            tok_errf(err, errlen, "out of memory");
            goto done;
        }
        for (size_t i = 0; i < trie_bytes / 4; i++) { /* little-endian on disk */
            const uint8_t *u = cm + 4 + 4 * i;
            da[i] = (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
        }
        t->da = da;
        t->da_n = trie_bytes / 4;
        t->norm_len = cm_len - 4 - trie_bytes;
        memcpy(t->charsmap, cm + 4 + trie_bytes, t->norm_len);
        t->charsmap[t->norm_len] = 0; /* every normalised string ends in NUL, even the last */
        t->norm_strs = (const char *)t->charsmap;
    }
    rc = 0;
done:
    spm__model_proto__free_unpacked(m, NULL);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Normaliser                                                                                  */

/* Darts-clone double-array units. */
static inline uint32_t da_offset(uint32_t u) { return (u >> 10) << ((u & (1U << 9)) >> 6); }
static inline uint32_t da_label(uint32_t u) { return u & ((1U << 31) | 0xFF); }
static inline bool da_has_leaf(uint32_t u) { return (u >> 8) & 1; }
static inline uint32_t da_value(uint32_t u) { return u & ((1U << 31) - 1); }

/* Longest rule of the character map matching a prefix of s (among the first 32 matches, as
 * sentencepiece keeps): its length, and *value (offset into norm_strs). 0 if none. */
static size_t tok_charsmap_match(const tok_tokenizer *t, const uint8_t *s, size_t len,
                                 uint32_t *value) {
    const uint32_t *da = t->da;
    size_t best = 0, found = 0, pos = da_offset(da[0]);
    for (size_t i = 0; i < len; i++) {
        pos ^= s[i];
        if (pos >= t->da_n) break;
        uint32_t unit = da[pos];
        if (da_label(unit) != s[i]) break;
        pos ^= da_offset(unit);
        if (pos >= t->da_n) break;
        if (da_has_leaf(unit)) {
            if (found++ < 32) {
                best = i + 1;
                *value = da_value(da[pos]);
            }
        }
    }
    return best;
}

/* sentencepiece's NormalizePrefix: the normalised form of the next character or rule match,
 * and how many input bytes it consumed. */
static size_t tok_norm_prefix(const tok_tokenizer *t, const char *s, size_t len, const char **out,
                              size_t *out_len) {
    if (t->has_user) {
        size_t best = 0;
        uint32_t node = 0;
        for (size_t k = 0; k < len; k++) {
            if (!(node = tok_trie_step(&t->vocab, node, (uint8_t)s[k]))) break;
            int32_t id = t->vocab.value[node];
            if (id >= 0 && t->type[id] == TOK_USER) best = k + 1;
        }
        if (best) {
            *out = s;
            *out_len = best;
            return best;
        }
    }
    if (t->da) {
        uint32_t v = 0;
        size_t n = tok_charsmap_match(t, (const uint8_t *)s, len, &v);
        if (n > 0 && v < t->norm_len) {
            *out = t->norm_strs + v;
            *out_len = strlen(*out); /* bounded: charsmap has a NUL at norm_len */
            return n;
        }
    }
    uint32_t cp;
    size_t n = tok_utf8_decode(s, len, &cp);
    if (n == 0) { /* malformed: U+FFFD for one byte */
        *out = "\xef\xbf\xbd";
        *out_len = 3;
        return 1;
    }
    *out = s;
    *out_len = n;
    return n;
}

int tok_spm_normalize(const tok_tokenizer *t, const char *s, size_t len, tok_buf *out) {
    static const char ws[] = "\xe2\x96\x81";
    out->n = 0;
    const char *p;
    size_t plen;
    if (t->remove_extra_ws) { /* drop leading spaces */
        while (len > 0) {
            size_t used = tok_norm_prefix(t, s, len, &p, &plen);
            if (!(plen == 1 && p[0] == ' ')) break;
            s += used;
            len -= used;
        }
    }
    if (len == 0) return 0;
    if (tok_buf_reserve(out, len * 3 + 3) != 0) return -1;
    const char *space = t->escape_ws ? ws : " ";
    size_t space_len = t->escape_ws ? 3 : 1;
    if (!t->ws_as_suffix && t->add_dummy_prefix && tok_buf_add(out, space, space_len) != 0) return -1;
    bool prev_space = t->remove_extra_ws;
    while (len > 0) {
        size_t used = tok_norm_prefix(t, s, len, &p, &plen);
        while (prev_space && plen > 0 && p[0] == ' ') {
            p++;
            plen--;
        }
        if (plen > 0) {
            for (size_t i = 0; i < plen; i++) {
                int rc = t->escape_ws && p[i] == ' ' ? tok_buf_add(out, ws, 3) : tok_buf_add(out, p + i, 1);
                if (rc != 0) return -1;
            }
            prev_space = p[plen - 1] == ' ';
        }
        s += used;
        len -= used;
        if (!t->remove_extra_ws) prev_space = false;
    }
    if (t->remove_extra_ws)
        while (out->n >= space_len && memcmp(out->p + out->n - space_len, space, space_len) == 0)
            out->n -= space_len;
    if (t->ws_as_suffix && t->add_dummy_prefix && tok_buf_add(out, space, space_len) != 0) return -1;
    return 0;
}
