/* fm_vocab.c — the display strings of token ids (see fm_vocab.h). */
#include "fm_vocab.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow.h"
#include <utf8proc.h>
#ifdef FM_HAVE_TOK
#include "tok.h"
#endif

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* "▁" (U+2581, SentencePiece's space) -> ' ', in place. */
static void unmark_spaces(char *s) {
    char *w = s;
    for (const char *r = s; *r;) {
        if ((unsigned char)r[0] == 0xE2 && (unsigned char)r[1] == 0x96 && (unsigned char)r[2] == 0x81) {
            *w++ = ' ';
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = 0;
}

/* Display strings that are not UTF-8 become "<invalid UTF-8>": JSON cannot hold them, and the
 * language judges must see the string the feature files hold. */
static int vocab_utf8_only(fm_vocab *v) {
    for (int i = 0; i < v->n; i++) {
        const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)v->s[i];
        utf8proc_ssize_t left = (utf8proc_ssize_t)strlen(v->s[i]);
        while (left > 0) {
            utf8proc_int32_t c;
            utf8proc_ssize_t k = utf8proc_iterate(p, left, &c);
            if (k <= 0) break;
            p += k;
            left -= k;
        }
        if (left > 0) {
            char *shown = sf_strdup("a vocabulary entry", "<invalid UTF-8>");
            if (!shown) return SF_ERR;
            free(v->s[i]);
            v->s[i] = shown;
        }
    }
    return SF_OK;
}

static int vocab_load_listing(fm_vocab *v, const char *path) {
    FILE *fp = fopen(path, "r");
    if (!fp) return sf_fail("cannot open vocabulary %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int n = 0, alloc = 0;
    while ((len = getline(&line, &cap, fp)) >= 0) {
        char *tab = strchr(line, '\t');
        if (tab) *tab = 0;
        else if (len > 0 && line[len - 1] == '\n') line[len - 1] = 0;
        if (n == alloc) {
            char **grown = sf_realloc(v->s, "the vocabulary", alloc ? 2 * (size_t)alloc : 1024, sizeof *v->s);
            if (grown) v->s = grown, alloc = alloc ? 2 * alloc : 1024;
        }
        char *entry = n < alloc ? sf_strdup("a vocabulary entry", line) : NULL;
        if (!entry) {
            v->n = n; /* fm_vocab_free frees the entries so far */
            free(line);
            fclose(fp);
            return sf_fail("vocabulary %s: %s", path, sf_last_error());
        }
        if (strcmp(line, "<s>") == 0) v->bos = n;
        v->s[n] = entry;
        unmark_spaces(v->s[n]);
        n++;
    }
    free(line);
    fclose(fp);
    v->n = n;
    if (vocab_utf8_only(v) != SF_OK) return SF_ERR;
    return n > 0 ? SF_OK : sf_fail("vocabulary %s is empty", path);
}

int fm_vocab_load(fm_vocab *v, const char *path) {
    memset(v, 0, sizeof *v);
    v->bos = -1;
    if (ends_with(path, ".vocab") || ends_with(path, ".txt")) return vocab_load_listing(v, path);
#ifdef FM_HAVE_TOK
    char err[512];
    tok_tokenizer *t = tok_load(path, err, sizeof err);
    if (!t) return sf_fail("cannot load tokenizer %s: %s", path, err);
    int n = tok_vocab_size(t);
    v->bos = tok_bos_id(t);
    if (!(v->s = sf_zalloc("the vocabulary", (size_t)(n > 0 ? n : 1), sizeof *v->s))) {
        tok_free(t);
        return SF_ERR;
    }
    v->n = n; /* entries not yet made are NULL: fm_vocab_free frees what there is */
    for (int32_t id = 0; id < n; id++) {
        char buf[256];
        size_t len = tok_token_display(t, id, buf, sizeof buf);
        if (len >= sizeof buf) { /* a long piece: ask again with room for it */
            if ((v->s[id] = sf_alloc("a vocabulary entry", len + 1, 1))) tok_token_display(t, id, v->s[id], len + 1);
        } else {
            v->s[id] = sf_strdup("a vocabulary entry", buf);
        }
        if (!v->s[id]) {
            tok_free(t);
            return sf_fail("tokenizer %s: %s", path, sf_last_error());
        }
    }
    tok_free(t);
    return vocab_utf8_only(v);
#else
    return sf_fail("tokenizer %s: this build reads only spm_export_vocab listings (.vocab, .txt)", path);
#endif
}

void fm_vocab_free(fm_vocab *v) {
    for (int i = 0; i < v->n; i++) free(v->s[i]);
    free(v->s);
    memset(v, 0, sizeof *v);
    v->bos = -1;
}

const char *fm_vocab_str(const fm_vocab *v, int32_t id, char *buf, size_t cap) {
    if (id >= 0 && id < v->n) return v->s[id];
    snprintf(buf, cap, "<id %d>", (int)id);
    return buf;
}
