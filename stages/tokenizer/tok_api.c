/* tok_api.c — the public entry points of tok.h: loading a tokenizer file (either format), encoding,
 * decoding and freeing, each dispatching to the SentencePiece (tok_spm.c) or Hugging Face
 * (tok_hf.c) implementation over the shared toolbox (tok_core.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tok_internal.h"

/* ------------------------------------------------------------------------------------------ */
/* Public entry points                                                                         */

static void tok_scratch_free(tok_scratch *sc);

int tok_encode(const tok_tokenizer *t, const char *text, size_t len, int flags, tok_ids *out) {
    out->n = 0;
    if (!out->scratch && !(out->scratch = calloc(1, sizeof *out->scratch))) return -1;
    if (t->hf) return tok_hf_encode(t, text, len, flags, out);
    if ((flags & TOK_ADD_SPECIAL) && t->bos_id >= 0 && tok_push(out, t->bos_id) != 0) return -1;
    tok_buf *norm = &out->scratch->norm;
    if (tok_spm_normalize(t, text, len, norm) != 0) return -1;
    if (t->kind == TOK_SPM_UNIGRAM) return tok_unigram(t, norm->p, norm->n, true, out);
    return tok_spm_bpe(t, norm->p, norm->n, out);
}

void tok_ids_free(tok_ids *v) {
    free(v->ids);
    if (v->scratch) tok_scratch_free(v->scratch);
    memset(v, 0, sizeof *v);
}

tok_tokenizer *tok_load_mem(const void *buf, size_t len, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0; /* the loaders add a message only where none was written */
    tok_tokenizer *t = tok_alloc();
    if (!t) {
        tok_errf(err, errlen, "out of memory");
        return NULL;
    }
    const char *p = buf;
    size_t i = len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0 ? 3 : 0; /* a UTF-8 BOM */
    while (i < len && (p[i] == ' ' || p[i] == '\n' || p[i] == '\r' || p[i] == '\t')) i++;
    if (i == len) { /* an empty protobuf parses as a model of 0 pieces: say what is really wrong */
        tok_errf(err, errlen, "the file is empty%s: not a tokenizer (expected a Hugging Face tokenizer.json "
                              "or a SentencePiece .model)", len ? " (only white space)" : "");
        tok_free(t);
        return NULL;
    }
    int rc = i < len && p[i] == '{' ? tok_hf_load(t, p + i, len - i, err, errlen)
                                    : tok_spm_load(t, buf, len, err, errlen);
    if (rc != 0) {
        tok_free(t);
        return NULL;
    }
    return t;
}

int tok_find(const char *spec, char *path, size_t cap, char *err, size_t errlen) {
    static const char *const names[] = {"tokenizer.json", "tokenizer.model"};
    char tried[1024] = "";
    size_t tried_len = 0;
    for (const char *p = spec, *end; *p; p = *end ? end + 1 : end) {
        end = strchr(p, ',');
        if (!end) end = p + strlen(p);
        size_t len = (size_t)(end - p);
        if (len == 0) continue;
        if (len >= cap) {
            tok_errf(err, errlen, "tokenizer path of %zu bytes is too long", len);
            return -1;
        }
        char cand[4096];
        struct stat st;
        for (int k = -1; k < 2; k++) { /* the candidate itself; if a folder, the files in it */
            int n = k < 0 ? snprintf(cand, sizeof cand, "%.*s", (int)len, p)
                          : snprintf(cand, sizeof cand, "%.*s/%s", (int)len, p, names[k]);
            if (n < 0 || (size_t)n >= cap || (size_t)n >= sizeof cand) continue;
            int exists = stat(cand, &st) == 0;
            if (exists && S_ISDIR(st.st_mode)) continue; /* a folder: look inside */
            if (exists) {
                memcpy(path, cand, (size_t)n + 1);
                return 0;
            }
            int w = snprintf(tried + tried_len, sizeof tried - tried_len, "%s%s", tried_len ? ", " : "", cand);
            if (w > 0) tried_len = tried_len + (size_t)w < sizeof tried ? tried_len + (size_t)w : sizeof tried - 1;
            if (k < 0) break; /* neither file nor folder: nothing inside to try */
        }
    }
    tok_errf(err, errlen, "no tokenizer found (tried %s): set tokenizer to a tokenizer.json or SentencePiece .model "
                          "file, or to a folder holding one", tried_len ? tried : "nothing: the path is empty");
    return -1;
}

tok_tokenizer *tok_load(const char *spec, char *err, size_t errlen) {
    char path[4096];
    if (tok_find(spec, path, sizeof path, err, errlen) != 0) return NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        tok_errf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    tok_buf b = {0};
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (tok_buf_add(&b, chunk, got) != 0) {
            fclose(f);
            free(b.p);
            tok_errf(err, errlen, "out of memory reading %s", path);
            return NULL;
        }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(b.p);
        tok_errf(err, errlen, "cannot read %s", path);
        return NULL;
    }
    char msg[512] = "";
    tok_tokenizer *t = tok_load_mem(b.p ? b.p : "", b.n, msg, sizeof msg);
    free(b.p);
    if (!t) tok_errf(err, errlen, "%s: %s", path, msg);
    return t;
}

void tok_free(tok_tokenizer *t) {
    if (!t) return;
    free(t->blob);
    free(t->piece_off);
    free(t->piece_len);
    free(t->score);
    free(t->uni_score);
    free(t->type);
    tok_trie_free(&t->vocab);
    free(t->charsmap);
    free((void *)t->da);
    free(t->unk_surface);
    if (t->hf) tok_hf_free(t->hf);
    free(t);
}

int32_t tok_vocab_size(const tok_tokenizer *t) { return t->n_vocab; }
int32_t tok_bos_id(const tok_tokenizer *t) { return t->bos_id; }
int32_t tok_eos_id(const tok_tokenizer *t) { return t->eos_id; }

const char *tok_kind(const tok_tokenizer *t) {
    static const char *const names[] = {"sentencepiece-unigram", "sentencepiece-bpe", "hf-bpe",
                                        "hf-unigram", "hf-wordpiece", "hf-wordlevel"};
    return names[t->kind];
}


/* ------------------------------------------------------------------------------------------ */
/* Decoding                                                                                    */

/* The bytes one SentencePiece-style token stands for: ▁ -> ' ', <0xNN> -> the byte. */
static int tok_spm_token_bytes(const tok_tokenizer *t, int32_t id, tok_buf *out) {
    size_t len = 0;
    const char *s = tok_piece(t, id, &len);
    if (t->type[id] == TOK_BYTE) {
        char b = (char)tok_byte_piece_value(s, len);
        return tok_buf_add(out, &b, 1);
    }
    if (t->type[id] == TOK_UNKNOWN && t->unk_surface)
        return tok_buf_add(out, t->unk_surface, strlen(t->unk_surface));
    for (size_t i = 0; i < len;) {
        if (len - i >= 3 && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
            if (tok_buf_add(out, " ", 1) != 0) return -1;
            i += 3;
        } else {
            if (tok_buf_add(out, s + i, 1) != 0) return -1;
            i++;
        }
    }
    return 0;
}

/* Appends raw bytes, replacing each byte of an invalid UTF-8 sequence by U+FFFD (what
 * SentencePiece and Hugging Face decoders do). */
static int tok_add_utf8_lossy(tok_buf *out, const char *s, size_t len) {
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = tok_utf8_decode(s + i, len - i, &cp);
        if (n == 0) {
            if (tok_buf_add(out, "\xef\xbf\xbd", 3) != 0) return -1;
            i++;
        } else {
            if (tok_buf_add(out, s + i, n) != 0) return -1;
            i += n;
        }
    }
    return 0;
}

char *tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                 size_t *len) {
    tok_buf raw = {0}, out = {0};
    int rc = 0;
    if (t->hf) {
        rc = tok_hf_decode(t, ids, n, skip_special, &out);
    } else {
        for (size_t i = 0; i < n && rc == 0; i++) {
            int32_t id = ids[i];
            if (id < 0 || id >= t->n_vocab) continue;
            if (t->type[id] == TOK_CONTROL && skip_special) continue;
            if (t->type[id] == TOK_CONTROL) {
                size_t pl;
                const char *p = tok_piece(t, id, &pl);
                rc = tok_add_utf8_lossy(&out, raw.p, raw.n) | tok_buf_add(&out, p, pl);
                raw.n = 0;
                continue;
            }
            rc = tok_spm_token_bytes(t, id, &raw);
        }
        if (rc == 0) rc = tok_add_utf8_lossy(&out, raw.p, raw.n);
        /* The dummy prefix added while encoding is not part of the text. */
        if (rc == 0 && t->add_dummy_prefix && !t->ws_as_suffix && out.n > 0 && out.p[0] == ' ') {
            memmove(out.p, out.p + 1, out.n - 1);
            out.n--;
        }
    }
    free(raw.p);
    if (rc != 0 || tok_buf_add(&out, "", 1) != 0) {
        free(out.p);
        return NULL;
    }
    *len = out.n - 1;
    return out.p;
}

size_t tok_token_display(const tok_tokenizer *t, int32_t id, char *buf, size_t cap) {
    tok_buf raw = {0}, out = {0};
    size_t plen = 0;
    const char *piece = tok_piece(t, id, &plen);
    int rc = 0;
    if (!piece) {
        rc = tok_buf_add(&out, "<invalid>", 9);
    } else if (t->type[id] == TOK_CONTROL || t->type[id] == TOK_UNKNOWN) {
        rc = tok_buf_add(&out, piece, plen);
    } else {
        rc = t->hf ? tok_hf_token_bytes(t, id, &raw) : tok_spm_token_bytes(t, id, &raw);
        /* Valid UTF-8 as is; stray bytes as <0xNN>. */
        for (size_t i = 0; rc == 0 && i < raw.n;) {
            uint32_t cp;
            size_t n = tok_utf8_decode(raw.p + i, raw.n - i, &cp);
            if (n == 0) {
                char hex[8];
                snprintf(hex, sizeof hex, "<0x%02X>", (uint8_t)raw.p[i]);
                rc = tok_buf_add(&out, hex, 6);
                i++;
            } else {
                rc = tok_buf_add(&out, raw.p + i, n);
                i += n;
            }
        }
    }
    size_t full = rc == 0 ? out.n : 0;
    if (cap > 0) {
        size_t k = full < cap - 1 ? full : cap - 1;
        if (k) memcpy(buf, out.p, k);
        buf[k] = 0;
    }
    free(raw.p);
    free(out.p);
    return full;
}

static void tok_scratch_free(tok_scratch *sc) {
    free(sc->norm.p);
    free(sc->tmp.p);
    free(sc->nodes);
    free(sc->syms);
    free(sc->heap);
    tok_map_free(&sc->rev);
    if (sc->hf) tok_hf_scratch_free(sc->hf);
    free(sc);
}
