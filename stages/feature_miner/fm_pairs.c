/* fm_pairs.c — cross-lingual (pairs): per feature, how many translation pairs it fires on both
 * sides of, against shuffled pairings (see fm_pairs.h for the statistic and the rule).
 *
 * Reading the corpus keeps only the paired rows' id, lang and pair strings, never their text. A
 * paired section's doc_id is text_source's (ts_doc_hash of lang and id, as `label_field = lang`,
 * `id_field = id` give it), so the stream's sequences find their section by id alone. Memory: a
 * paired section keeps its mined tokens and positive top-k outputs until the end of the stream
 * (4 + 12 k bytes per token at most), as which tokens the other language has is known only then; at the end four fire bits
 * per feature and pair and the permuted counts of the tested features (4 P F_tested bytes). */
#include "fm_pairs.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "saeflow.h"
#include "ts_reader.h"

#define FM_PAIRS_MAX_LINE ((size_t)1 << 28) /* a corpus line longer than 256 MiB is refused */

/* ---------------------------------------------------------------------------------------------- */
/* Random permutations: splitmix64, written out so the tests can redo them.
 *   state = h(h(seed) ^ index), h the splitmix64 finaliser;
 *   Fisher-Yates from the top: for i = n-1 .. 1: j = next() % (i + 1), swap pi[i], pi[j];
 *   next(): state += 0x9E3779B97F4A7C15, return h'(state) (h' the finaliser without the add). */

static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static uint64_t h(uint64_t z) { return mix(z + 0x9E3779B97F4A7C15ULL); }
static uint64_t next(uint64_t *s) { return mix(*s += 0x9E3779B97F4A7C15ULL); }

void fm_pairs_permutation(uint64_t seed, int index, int n, int32_t *pi) {
    uint64_t s = h(h(seed) ^ (uint64_t)index);
    for (int i = 0; i < n; i++) pi[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(next(&s) % (uint64_t)(i + 1));
        int32_t t = pi[i];
        pi[i] = pi[j], pi[j] = t;
    }
}

/* ---------------------------------------------------------------------------------------------- */

static double lchoose(int n, int k) { return lgamma(n + 1.0) - lgamma(k + 1.0) - lgamma(n - k + 1.0); }

double fm_pairs_hyper_tail(int n, int a, int b, int c) {
    int lo = a + b - n > 0 ? a + b - n : 0, hi = a < b ? a : b;
    if (c <= lo) return 1.0;
    if (c > hi) return 0.0;
    double base = lchoose(n, b), first = lchoose(a, c) + lchoose(n - a, b - c) - base, sum = 0;
    for (int x = c; x <= hi; x++) /* terms relative to the first, for the tiny tails */
        sum += exp(lchoose(a, x) + lchoose(n - a, b - x) - base - first);
    double p = exp(first) * sum;
    return p < 1.0 ? p : 1.0;
}

/* ---------------------------------------------------------------------------------------------- */
/* The corpus */

typedef struct prow {
    char *id, *lang, *pair;
    const char *file; /* and line, for messages */
    long line;
    int used;
} prow;

static int prow_cmp(const void *x, const void *y) { return strcmp(((const prow *)x)->id, ((const prow *)y)->id); }

static void prows_free(prow *r, int n) {
    for (int i = 0; i < n; i++) free(r[i].id), free(r[i].lang), free(r[i].pair);
    free(r);
}

/* Appends the paired rows of one file (id, lang, pair strings) to rows[n], counting its rows. */
static int read_rows(const char *path, prow **rows_io, int *n_io, int *cap_io, long *rows_total) {
    gzFile gz = gzopen(path, "rb");
    if (!gz) return sf_fail("pairs %s: cannot open it", path);
    size_t cap = 1 << 16, len;
    char *buf = sf_alloc("a line of the pairs corpus", cap, 1);
    prow *rows = *rows_io;
    int n = *n_io, n_cap = *cap_io, rc = SF_OK;
    long line = 0;
    while (rc == SF_OK && buf) {
        len = 0; /* one whole line, growing the buffer */
        for (;;) {
            if (!gzgets(gz, buf + len, (int)(cap - len > (size_t)1 << 30 ? (size_t)1 << 30 : cap - len))) break;
            len += strlen(buf + len);
            if (len && buf[len - 1] == '\n') break;
            if (cap - len > 1) continue;
            if (cap >= FM_PAIRS_MAX_LINE) {
                rc = sf_fail("pairs %s:%ld: a line longer than %zu bytes", path, line + 1, FM_PAIRS_MAX_LINE);
                break;
            }
            char *b2 = sf_realloc(buf, "a line of the pairs corpus", cap * 2, 1);
            if (!b2) {
                rc = SF_ERR;
                break;
            }
            buf = b2, cap *= 2;
        }
        if (rc != SF_OK || len == 0) break;
        line++;
        while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ')) buf[--len] = 0;
        if (len == 0) continue;
        json_error_t err;
        json_t *o = json_loadb(buf, len, 0, &err);
        if (!json_is_object(o)) {
            json_decref(o);
            rc = sf_fail("pairs %s:%ld: not a JSON object (%s): the pairs corpus is JSON Lines", path, line, err.text);
            break;
        }
        (*rows_total)++;
        json_t *id = json_object_get(o, "id"), *lang = json_object_get(o, "lang"), *pair = json_object_get(o, "pair");
        if (!json_is_string(id) || !json_is_string(lang) || (pair && !json_is_string(pair) && !json_is_null(pair))) {
            json_decref(o);
            rc = sf_fail("pairs %s:%ld: want string fields id and lang and pair (a string or null), as "
                         "data/corpus/debian-docs.jsonl.gz has", path, line);
            break;
        }
        if (json_is_string(pair)) {
            if (n == n_cap) {
                int c2 = n_cap ? 2 * n_cap : 1024;
                prow *r2 = sf_realloc(rows, "the paired rows of the pairs corpus", (size_t)c2, sizeof *rows);
                if (!r2) {
                    json_decref(o);
                    rc = SF_ERR;
                    break;
                }
                rows = r2, n_cap = c2;
            }
            prow *r = &rows[n++];
            *r = (prow){.id = strdup(json_string_value(id)), .lang = strdup(json_string_value(lang)),
                        .pair = strdup(json_string_value(pair)), .file = path, .line = line};
            if (!r->id || !r->lang || !r->pair) rc = sf_fail("pairs %s: out of memory reading line %ld", path, line);
        }
        json_decref(o);
    }
    int gzerr = 0;
    const char *gzmsg = gzerror(gz, &gzerr);
    if (rc == SF_OK && gzerr != Z_OK && gzerr != Z_STREAM_END) rc = sf_fail("pairs %s: read error (%s)", path, gzmsg);
    if (!buf) rc = SF_ERR;
    gzclose(gz);
    free(buf);
    *rows_io = rows, *n_io = n, *cap_io = n_cap; /* the caller frees them, also after an error */
    return rc;
}

static size_t slot_find(const fm_pairs *p, uint64_t doc) {
    size_t i = (size_t)mix(doc) & (p->cap - 1);
    while (p->keys[i] && p->keys[i] != doc + 1) i = (i + 1) & (p->cap - 1);
    return i;
}

/* The pairs of the sorted rows: each side names the other, every pair has the same two languages. */
static int build_pairs(fm_pairs *p, prow *rows, int n) {
    const char *path = p->path;
    for (int i = 1; i < n; i++)
        if (!strcmp(rows[i].id, rows[i - 1].id))
            return sf_fail("pairs %s:%ld: id '%s' also at %s:%ld: ids must be unique", rows[i].file, rows[i].line, rows[i].id,
                           rows[i - 1].file, rows[i - 1].line);
    const char *l0 = rows[0].lang, *l1 = NULL;
    for (int i = 0; i < n && !l1; i++)
        if (strcmp(rows[i].lang, l0)) l1 = rows[i].lang;
    if (!l1) return sf_fail("pairs %s: every paired row has lang '%s': pairs join two languages", path, l0);
    if (strcmp(l0, l1) > 0) {
        const char *t = l0;
        l0 = l1, l1 = t;
    }
    if (!(p->labels[0] = sf_strdup("pairs label", l0)) || !(p->labels[1] = sf_strdup("pairs label", l1))) return SF_ERR;
    int n_pairs = 0;
    for (int i = 0; i < n; i++) {
        prow *r = &rows[i];
        int side = !strcmp(r->lang, l0) ? 0 : !strcmp(r->lang, l1) ? 1 : -1;
        if (side < 0)
            return sf_fail("pairs %s:%ld: lang '%s', but the pairs join '%s' and '%s': one pair of languages per corpus",
                           r->file, r->line, r->lang, l0, l1);
        if (side) continue;
        prow key = {.id = r->pair};
        prow *o = bsearch(&key, rows, (size_t)n, sizeof *rows, prow_cmp);
        if (!o) return sf_fail("pairs %s:%ld: pair '%s' is no paired row of the corpus", r->file, r->line, r->pair);
        if (strcmp(o->pair, r->id) || strcmp(o->lang, l1))
            return sf_fail("pairs %s:%ld: '%s' pairs with '%s' (%s:%ld), which pairs with '%s' in lang '%s': the two sides "
                           "must name each other and have the two languages", r->file, r->line, r->id, o->id, o->file, o->line,
                           o->pair, o->lang);
        r->used = o->used = 1;
        n_pairs++;
    }
    for (int i = 0; i < n; i++)
        if (!rows[i].used)
            return sf_fail("pairs %s:%ld: '%s' names pair '%s', which does not name it back", rows[i].file, rows[i].line, rows[i].id,
                           rows[i].pair);
    p->n_pairs = n_pairs;
    size_t cap = 16;
    while (cap < 4 * (size_t)n_pairs) cap *= 2;
    p->cap = cap;
    p->doc[0] = sf_alloc("pair doc ids", (size_t)n_pairs, sizeof *p->doc[0]);
    p->doc[1] = sf_alloc("pair doc ids", (size_t)n_pairs, sizeof *p->doc[1]);
    p->keys = sf_zalloc("pair id table", cap, sizeof *p->keys);
    p->slot_of = sf_alloc("pair id table", cap, sizeof *p->slot_of);
    p->sec = sf_zalloc("paired sections", 2 * (size_t)n_pairs, sizeof *p->sec);
    if (!p->doc[0] || !p->doc[1] || !p->keys || !p->slot_of || !p->sec) return SF_ERR;
    int k = 0;
    for (int i = 0; i < n; i++) {
        prow *r = &rows[i];
        if (strcmp(r->lang, l0)) continue;
        prow key = {.id = r->pair}, *o = bsearch(&key, rows, (size_t)n, sizeof *rows, prow_cmp);
        const prow *side[2] = {r, o};
        for (int s = 0; s < 2; s++) {
            uint64_t doc = ts_doc_hash(side[s]->lang, side[s]->id, strlen(side[s]->id), -1);
            size_t at = slot_find(p, doc);
            if (p->keys[at])
                return sf_fail("pairs %s:%ld: '%s' has the same document id as another row", side[s]->file, side[s]->line,
                               side[s]->id);
            p->keys[at] = doc + 1;
            p->slot_of[at] = 2 * k + s;
            p->doc[s][k] = doc;
        }
        k++;
    }
    return SF_OK;
}

fm_pairs *fm_pairs_load(const char *path, const fm_pairs_cfg *cfg) { /* path: one file or a comma-separated list */
    if (cfg->n_features < 1 || cfg->permutations < 1 || !(cfg->alpha > 0 && cfg->alpha < 1)) {
        sf_fail("pairs: want n_features >= 1, permutations >= 1 and 0 < alpha < 1");
        return NULL;
    }
    fm_pairs *p = sf_zalloc("pairs state", 1, sizeof *p);
    if (!p) return NULL;
    p->cfg = *cfg;
    if (!(p->path = sf_strdup("pairs path", path))) return fm_pairs_free(p), NULL;
    prow *rows = NULL;
    int n = 0, cap = 0, rc = SF_OK;
    long total = 0;
    char *list = sf_strdup("pairs path", path), *save = NULL;
    if (!list) return fm_pairs_free(p), NULL;
    for (char *f = strtok_r(list, ",", &save); f && rc == SF_OK; f = strtok_r(NULL, ",", &save))
        rc = read_rows(f, &rows, &n, &cap, &total); /* rows point into list for their file names */
    if (rc == SF_OK && n) qsort(rows, (size_t)n, sizeof *rows, prow_cmp);
    if (rc == SF_OK)
        rc = n ? build_pairs(p, rows, n)
               : sf_fail("pairs %s: none of its %ld rows has a `pair` (the id of the same section in the other "
                         "language), so there is nothing to test: name a corpus with translation pairs, e.g. "
                         "data/corpus/debian-docs.jsonl.gz, or leave the parameter pairs empty", path, total);
    prows_free(rows, n);
    free(list);
    if (rc != SF_OK) return fm_pairs_free(p), NULL;
    return p;
}

void fm_pairs_free(fm_pairs *p) {
    if (!p) return;
    if (p->sec)
        for (int i = 0; i < 2 * p->n_pairs; i++) free(p->sec[i].tok), free(p->sec[i].ent);
    free(p->sec), free(p->doc[0]), free(p->doc[1]), free(p->keys), free(p->slot_of);
    free(p->labels[0]), free(p->labels[1]), free(p->path), free(p->stat);
    free(p);
}

/* Appends n items of size sz to *arr (length *len, capacity *cap). */
static int push(void **arr, size_t *len, size_t *cap, const void *items, size_t n, size_t sz, const char *what) {
    if (*len + n > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < *len + n) c *= 2;
        void *a = sf_realloc(*arr, what, c, sz);
        if (!a) return SF_ERR;
        *arr = a, *cap = c;
    }
    if (n) memcpy((char *)*arr + *len * sz, items, n * sz); /* *arr and items may be NULL when n is 0 */
    *len += n;
    return SF_OK;
}

int fm_pairs_add(fm_pairs *p, int64_t doc_id, const int32_t *tokens, const int32_t *idx, const float *val, int T, int k) {
    if (doc_id < 0) return sf_fail("pairs: a sequence without doc_id: the pairs test needs text_source's document ids");
    size_t at = slot_find(p, (uint64_t)doc_id);
    if (!p->keys[at]) {
        p->seqs_other++;
        return SF_OK;
    }
    int F = p->cfg.n_features;
    fm_pairs_sec *sec = &p->sec[p->slot_of[at]];
    sec->seen = 1;
    p->seqs_paired++;
    if (push((void **)&sec->tok, &sec->n_tok, &sec->cap_tok, tokens, (size_t)T, sizeof *tokens, "a paired section's tokens") != SF_OK)
        return SF_ERR;
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            float v = val[(size_t)t * k + j];
            int32_t f = idx[(size_t)t * k + j];
            if (!(v > 0) || !isfinite(v)) continue;
            if (f < 0 || f >= F) return sf_fail("pairs: latent index %d outside [0, %d)", f, F);
            fm_pairs_ent e = {.tok = tokens[t], .feat = f, .val = v};
            if (push((void **)&sec->ent, &sec->n_ent, &sec->cap_ent, &e, 1, sizeof e, "a paired section's activations") != SF_OK)
                return SF_ERR;
        }
    return SF_OK;
}

static int cmp_u32(const void *x, const void *y) {
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return (a > b) - (a < b);
}

static int cmp_i32(const void *x, const void *y) {
    int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    return (a > b) - (a < b);
}

/* The distinct tokens of every paired section of one side that arrived, sorted. */
static int32_t *side_tokens(const fm_pairs *p, int side, size_t *n_out) {
    size_t n = 0;
    for (int k = 0; k < p->n_pairs; k++) n += p->sec[2 * k + side].n_tok;
    int32_t *t = sf_alloc("the tokens of one language's paired sections", n ? n : 1, sizeof *t);
    if (!t) return NULL;
    n = 0;
    for (int k = 0; k < p->n_pairs; k++) {
        const fm_pairs_sec *s = &p->sec[2 * k + side];
        if (s->n_tok) memcpy(t + n, s->tok, s->n_tok * sizeof *t); /* a section that never arrived has no tokens */
        n += s->n_tok;
    }
    qsort(t, n, sizeof *t, cmp_i32);
    size_t u = 0;
    for (size_t i = 0; i < n; i++)
        if (!u || t[i] != t[u - 1]) t[u++] = t[i];
    *n_out = u;
    return t;
}

/* Fire bits [n][F] per side: at the side's own tokens, those no paired section of the other
 * language contains (strict; a set that does not depend on the pairing, so the shuffled pairings
 * are a valid null), and at all its tokens (all_bits); the strict maxima summed for mean_max. */
static int fire_bits(fm_pairs *p, const int32_t *mined, int n, unsigned char *strict[2], unsigned char *all_bits[2]) {
    int F = p->cfg.n_features, rc = SF_OK;
    size_t n_tok[2] = {0, 0};
    int32_t *tok[2] = {side_tokens(p, 0, &n_tok[0]), side_tokens(p, 1, &n_tok[1])};
    float *mx = sf_alloc("a section's feature maxima", 2 * (size_t)F, sizeof *mx);
    if (!tok[0] || !tok[1] || !mx) rc = SF_ERR;
    for (int m = 0; rc == SF_OK && m < n; m++)
        for (int s = 0; s < 2; s++) {
            const fm_pairs_sec *me = &p->sec[2 * mined[m] + s];
            float *ms = mx, *ma = mx + F;
            memset(mx, 0, 2 * (size_t)F * sizeof *mx);
            for (size_t e = 0; e < me->n_ent; e++) {
                const fm_pairs_ent *x = &me->ent[e];
                if (x->val > ma[x->feat]) ma[x->feat] = x->val;
                if (x->val > ms[x->feat] && !bsearch(&x->tok, tok[1 - s], n_tok[1 - s], sizeof *tok[0], cmp_i32))
                    ms[x->feat] = x->val;
            }
            for (int f = 0; f < F; f++) {
                strict[s][(size_t)m * F + f] = ms[f] > 0;
                all_bits[s][(size_t)m * F + f] = ma[f] > 0;
                p->stat[f].mean_max[s] += ms[f];
            }
        }
    for (int s = 0; s < 2; s++) p->tokens_exclusive[s] = 0;
    for (int s = 0; rc == SF_OK && s < 2; s++)
        for (size_t i = 0; i < n_tok[s]; i++)
            p->tokens_exclusive[s] += !bsearch(&tok[s][i], tok[1 - s], n_tok[1 - s], sizeof *tok[0], cmp_i32);
    p->tokens_distinct[0] = (int)n_tok[0], p->tokens_distinct[1] = (int)n_tok[1];
    free(tok[0]), free(tok[1]), free(mx);
    return rc;
}

int fm_pairs_finish(fm_pairs *p) {
    int F = p->cfg.n_features, P = p->cfg.permutations, n = 0;
    p->sides_alone = p->n_tested = p->n_cross = p->n_tested_all = p->n_cross_all = 0;
    for (int k = 0; k < p->n_pairs; k++) {
        int have = p->sec[2 * k].seen + p->sec[2 * k + 1].seen;
        n += have == 2, p->sides_alone += have == 1;
    }
    p->n_mined = n;
    if (n == 0)
        return sf_fail("pairs: the stream held both sides of none of the %d pairs of %s (%llu sequences of paired "
                       "sections, %llu of other documents), so no feature can be called cross-lingual: mine both "
                       "languages of the paired sections (text_source with split = all, label_field = lang, id_field = id, "
                       "as pipelines/demo-pairs.flow does)", p->n_pairs, p->path,
                       (unsigned long long)p->seqs_paired, (unsigned long long)p->seqs_other);
    free(p->stat);
    if (!(p->stat = sf_zalloc("pairs statistics", (size_t)F, sizeof *p->stat))) return SF_ERR;
    int32_t *mined = sf_alloc("mined pairs", (size_t)n, sizeof *mined);
    unsigned char *bits = sf_alloc("fire bits of every feature and pair", 4 * (size_t)n, (size_t)F);
    if (!mined || !bits) {
        free(mined), free(bits);
        return SF_ERR;
    }
    for (int k = 0, m = 0; k < p->n_pairs; k++)
        if (p->sec[2 * k].seen && p->sec[2 * k + 1].seen) mined[m++] = k;
    size_t nF = (size_t)n * (size_t)F;
    unsigned char *S[2] = {bits, bits + nF}, *L[2] = {bits + 2 * nF, bits + 3 * nF};
    if (fire_bits(p, mined, n, S, L) != SF_OK) {
        free(mined), free(bits);
        return SF_ERR;
    }
    for (int f = 0; f < F; f++) {
        fm_pairs_stat *st = &p->stat[f];
        for (int m = 0; m < n; m++) {
            size_t at = (size_t)m * F + (size_t)f;
            st->fires[0] += S[0][at], st->fires[1] += S[1][at], st->both += S[0][at] & S[1][at];
            st->all_fires[0] += L[0][at], st->all_fires[1] += L[1][at], st->all_both += L[0][at] & L[1][at];
        }
        st->mean_max[0] /= n, st->mean_max[1] /= n;
        st->expected = (double)st->fires[0] * st->fires[1] / n;
        st->tested = st->fires[0] > 0 && st->fires[1] > 0;
        st->p_exact = fm_pairs_hyper_tail(n, st->fires[0], st->fires[1], st->both);
        st->p_perm = 1, st->z = NAN; /* untested: every shuffled count is 0 as well */
        p->n_tested += st->tested;
        st->all_p_exact = fm_pairs_hyper_tail(n, st->all_fires[0], st->all_fires[1], st->all_both);
        p->n_tested_all += st->all_fires[0] > 0 && st->all_fires[1] > 0;
    }
    p->threshold = p->cfg.alpha / (p->n_tested ? p->n_tested : 1);
    p->threshold_all = p->cfg.alpha / (p->n_tested_all ? p->n_tested_all : 1);
    for (int f = 0; f < F; f++) {
        fm_pairs_stat *st = &p->stat[f];
        st->all_cross = st->all_fires[0] > 0 && st->all_fires[1] > 0 && st->all_p_exact <= p->threshold_all;
        p->n_cross_all += st->all_cross;
    }
    /* Can n pairs reach the threshold at all? The smallest tail is 1 / C(n, n/2) (half fire on
     * both sides, always together). */
    if (-lchoose(n, n / 2) > log(p->threshold)) {
        free(mined), free(bits);
        return sf_fail("pairs: the stream held both sides of only %d of the %d pairs of %s: too few for any feature to "
                       "pass p <= %.3g / %d tested features (the smallest p %d pairs allow is %.3g): mine more of the "
                       "paired sections (text_source split = all)", n, p->n_pairs, p->path, p->cfg.alpha, p->n_tested, n,
                       exp(-lchoose(n, n / 2)));
    }
    /* The null: fire bits of the tested features, [n][Ft] per side, and P shuffled pairings. */
    int Ft = p->n_tested;
    int *col = sf_alloc("tested features", (size_t)(Ft ? Ft : 1), sizeof *col);
    unsigned char *A = sf_alloc("fire bits of the tested features", (size_t)n * (size_t)(Ft ? Ft : 1), 2);
    uint32_t *cnt = sf_alloc("permuted counts", (size_t)(Ft ? Ft : 1), sizeof *cnt);
    uint32_t *null = sf_alloc("permuted counts of every tested feature", (size_t)P * (size_t)(Ft ? Ft : 1), sizeof *null);
    int32_t *pi = sf_alloc("a permutation", (size_t)n, sizeof *pi);
    if (!col || !A || !cnt || !null || !pi) {
        free(col), free(A), free(cnt), free(null), free(pi), free(mined), free(bits);
        return SF_ERR;
    }
    unsigned char *B = A + (size_t)n * (size_t)Ft;
    for (int f = 0, j = 0; f < F; f++)
        if (p->stat[f].tested) col[j++] = f;
    for (int m = 0; m < n; m++)
        for (int j = 0; j < Ft; j++) {
            A[(size_t)m * Ft + j] = S[0][(size_t)m * F + col[j]];
            B[(size_t)m * Ft + j] = S[1][(size_t)m * F + col[j]];
        }
    free(bits);
    for (int r = 0; r < P; r++) {
        fm_pairs_permutation(p->cfg.seed, r, n, pi);
        memset(cnt, 0, (size_t)Ft * sizeof *cnt);
        for (int m = 0; m < n; m++) {
            const unsigned char *a = A + (size_t)m * Ft, *b = B + (size_t)pi[m] * Ft;
            for (int j = 0; j < Ft; j++) cnt[j] += a[j] & b[j];
        }
        memcpy(null + (size_t)r * Ft, cnt, (size_t)Ft * sizeof *cnt);
    }
    uint32_t *v = sf_realloc(cnt, "a feature's permuted counts", (size_t)P, sizeof *cnt);
    if (v) cnt = v;
    for (int j = 0; v && j < Ft; j++) {
        fm_pairs_stat *st = &p->stat[col[j]];
        double s = 0, s2 = 0;
        int ge = 0;
        for (int r = 0; r < P; r++) {
            uint32_t x = null[(size_t)r * Ft + j];
            v[r] = x, s += x, s2 += (double)x * x, ge += (int)x >= st->both;
        }
        st->null_mean = s / P;
        double var = s2 / P - st->null_mean * st->null_mean;
        st->null_sd = var > 0 ? sqrt(var) : 0;
        qsort(v, (size_t)P, sizeof *v, cmp_u32);
        int q = (int)ceil(0.999 * P) - 1; /* the smallest value with at least 99.9% of the counts at or below it */
        st->null_q999 = v[q < 0 ? 0 : q];
        st->p_perm = (1.0 + ge) / (P + 1.0);
        st->z = st->null_sd > 0 ? (st->both - st->null_mean) / st->null_sd : NAN;
        st->cross = st->p_exact <= p->threshold;
        p->n_cross += st->cross;
    }
    free(col), free(A), free(cnt), free(null), free(pi), free(mined);
    return v ? SF_OK : SF_ERR;
}

/* ---------------------------------------------------------------------------------------------- */

static json_t *jnum(double x) { return isfinite(x) ? json_real(x) : json_null(); }

static json_t *side_obj(const fm_pairs *p, double a, double b, int integer) {
    json_t *o = json_object();
    json_object_set_new(o, p->labels[0], integer ? json_integer((json_int_t)a) : jnum(a));
    json_object_set_new(o, p->labels[1], integer ? json_integer((json_int_t)b) : jnum(b));
    return o;
}

json_t *fm_pairs_summary_json(const fm_pairs *p, int alive) {
    json_t *o = json_object(), *lab = json_array();
    json_array_append_new(lab, json_string(p->labels[0]));
    json_array_append_new(lab, json_string(p->labels[1]));
    json_object_set_new(o, "corpus", json_string(p->path));
    json_object_set_new(o, "labels", lab);
    json_object_set_new(o, "pairs_in_corpus", json_integer(p->n_pairs));
    json_object_set_new(o, "pairs_mined", json_integer(p->n_mined));
    json_object_set_new(o, "sides_mined_alone", json_integer(p->sides_alone));
    json_object_set_new(o, "sequences_paired", json_integer((json_int_t)p->seqs_paired));
    json_object_set_new(o, "sequences_other", json_integer((json_int_t)p->seqs_other));
    json_object_set_new(o, "permutations", json_integer(p->cfg.permutations));
    json_object_set_new(o, "seed", json_integer((json_int_t)p->cfg.seed));
    json_object_set_new(o, "alpha", jnum(p->cfg.alpha));
    json_object_set_new(o, "features_tested", json_integer(p->n_tested));
    json_object_set_new(o, "threshold", jnum(p->threshold));
    json_object_set_new(o, "cross_lingual", json_integer(p->n_cross));
    json_object_set_new(o, "tokens_distinct", side_obj(p, p->tokens_distinct[0], p->tokens_distinct[1], 1));
    json_object_set_new(o, "tokens_exclusive", side_obj(p, p->tokens_exclusive[0], p->tokens_exclusive[1], 1));
    json_object_set_new(o, "features_tested_all_tokens", json_integer(p->n_tested_all));
    json_object_set_new(o, "cross_lingual_all_tokens", json_integer(p->n_cross_all));
    json_object_set_new(o, "alive", json_integer(alive));
    json_object_set_new(o, "share", jnum(alive ? (double)p->n_cross / alive : 0));
    json_object_set_new(o, "statistic",
                        json_string("pairs where the feature fires (top-k output > 0) on both sides, each at tokens "
                                    "no mined paired section of the other language contains (all_tokens: at any token)"));
    json_object_set_new(o, "rule",
                        json_string("cross-lingual (pairs) when p_exact <= alpha / features_tested: p_exact the upper "
                                    "tail of the shuffled-pairs null, hypergeometric given each side's firing count"));
    return o;
}

json_t *fm_pairs_feature_json(const fm_pairs *p, int i) {
    const fm_pairs_stat *st = &p->stat[i];
    json_t *o = json_object();
    json_object_set_new(o, "pairs", json_integer(p->n_mined));
    json_object_set_new(o, "fires", side_obj(p, st->fires[0], st->fires[1], 1));
    json_object_set_new(o, "both", json_integer(st->both));
    json_object_set_new(o, "expected", jnum(st->expected));
    json_object_set_new(o, "null_mean", jnum(st->null_mean));
    json_object_set_new(o, "null_sd", jnum(st->null_sd));
    json_object_set_new(o, "null_q999", jnum(st->null_q999));
    json_object_set_new(o, "z", jnum(st->z));
    json_object_set_new(o, "p_perm", jnum(st->p_perm));
    json_object_set_new(o, "p_exact", jnum(st->p_exact));
    json_object_set_new(o, "mean_max", side_obj(p, st->mean_max[0], st->mean_max[1], 0));
    json_object_set_new(o, "tested", json_boolean(st->tested));
    json_object_set_new(o, "cross_lingual", json_boolean(st->cross));
    json_t *all = json_object();
    json_object_set_new(all, "fires", side_obj(p, st->all_fires[0], st->all_fires[1], 1));
    json_object_set_new(all, "both", json_integer(st->all_both));
    json_object_set_new(all, "p_exact", jnum(st->all_p_exact));
    json_object_set_new(all, "cross_lingual", json_boolean(st->all_cross));
    json_object_set_new(o, "all_tokens", all);
    return o;
}
