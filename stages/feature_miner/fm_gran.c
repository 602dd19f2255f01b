/* fm_gran.c — the granularity judge (see fm_gran.h): statistics of a feature's peak tokens, their
 * neighbours and its firing density, and the calibrated decision list over them. */
#include "fm_gran.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "saeflow.h"

const char *const fm_gran_names[FM_GRAN_COUNT] = {"token", "concept", "uninterpretable", "few"};

const fm_gran_params fm_gran_defaults = {
    .min_examples = FM_GRAN_MIN_EXAMPLES,
    .token_share = FM_GRAN_TOKEN_SHARE,
    .distinct_share = FM_GRAN_DISTINCT_SHARE,
    .context_share = FM_GRAN_CONTEXT_SHARE,
    .dense_share = FM_GRAN_DENSE_SHARE,
};

int fm_gran_check_params(const fm_gran_params *p) {
    if (p->min_examples < 0) return sf_fail("granularity: min_examples must be >= 0, not %d", p->min_examples);
    const char *names[] = {"token_share", "distinct_share", "context_share", "dense_share"};
    double v[] = {p->token_share, p->distinct_share, p->context_share, p->dense_share};
    for (int k = 0; k < 4; k++)
        if (!(v[k] >= 0 && v[k] <= 1)) return sf_fail("granularity: %s must be in [0, 1], not %g", names[k], v[k]);
    return SF_OK;
}

static int is_space(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* Whitespace stripped, NFKC case-folded (the raw token if it is not UTF-8); malloc'd, NULL out of memory. */
static char *normalise(const char *tok) {
    utf8proc_uint8_t *folded = utf8proc_NFKC_Casefold((const utf8proc_uint8_t *)tok);
    const char *s = folded ? (const char *)folded : tok;
    while (is_space((unsigned char)*s)) s++;
    size_t len = strlen(s);
    while (len > 0 && is_space((unsigned char)s[len - 1])) len--;
    char *out = strndup(s, len); /* NULL out of memory: the caller fails */
    free(folded);
    return out;
}

/* Copies at most cap-1 bytes of s, never cutting a UTF-8 sequence. */
static void copy_utf8(char *dst, size_t cap, const char *s) {
    size_t len = strlen(s);
    if (len >= cap) {
        len = cap - 1;
        while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80) len--;
    }
    memcpy(dst, s, len);
    dst[len] = 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorts s[n] and returns the length of its longest run of equal strings (0 if n = 0), the number
 * of distinct strings in *distinct and, with top, the first (in sort order) longest run's string. */
static int longest_run(char **s, int n, int *distinct, const char **top) {
    qsort(s, (size_t)n, sizeof *s, cmp_str);
    int best = 0, d = 0;
    for (int i = 0; i < n;) {
        int j = i + 1;
        while (j < n && strcmp(s[j], s[i]) == 0) j++;
        d++;
        if (j - i > best) {
            best = j - i;
            if (top) *top = s[i];
        }
        i = j;
    }
    if (distinct) *distinct = d;
    return best;
}

int fm_gran_judge(const fm_token_act *ex, int n, const fm_gran_params *p, fm_gran_stats *out) {
    memset(out, 0, sizeof *out);
    out->n = n;
    out->gran = FM_GRAN_FEW;
    if (n <= 0) return SF_OK;
    for (int e = 0; e < n; e++) {
        if (ex[e].n <= 0) return sf_fail("granularity: example %d has no tokens", e);
        for (int t = 0; t < ex[e].n; t++) {
            if (!ex[e].tok[t]) return sf_fail("granularity: example %d, token %d has no string", e, t);
            if (ex[e].act[t] < 0 || ex[e].act[t] > 10)
                return sf_fail("granularity: example %d, token %d: activation %d is not a quantised 0..10", e, t,
                               ex[e].act[t]);
        }
    }
    /* peak[e], and its neighbours where they exist (prev[0..n_prev), next[0..n_next)) */
    char **peak = sf_zalloc("granularity: peak tokens", (size_t)n * 3, sizeof *peak); /* zeroed: freeable */
    if (!peak) return SF_ERR;
    char **prev = peak + n, **next = peak + 2 * (size_t)n;
    int n_prev = 0, n_next = 0, oom = 0;
    double active = 0;
    for (int e = 0; e < n && !oom; e++) {
        const fm_token_act *x = &ex[e];
        int at = fm_token_act_peak(x), on = 0;
        for (int t = 0; t < x->n; t++) on += x->act[t] > 0;
        active += (double)on / x->n;
        oom |= !(peak[e] = normalise(x->tok[at]));
        if (at > 0) oom |= !(prev[n_prev++] = normalise(x->tok[at - 1]));
        if (at + 1 < x->n) oom |= !(next[n_next++] = normalise(x->tok[at + 1]));
    }
    if (oom) {
        for (size_t i = 0; i < (size_t)n * 3; i++) free(peak[i]);
        free(peak);
        return sf_fail("granularity: out of memory normalising %d examples' peak tokens", n);
    }
    const char *top = "";
    int top_n = longest_run(peak, n, &out->distinct, &top);
    copy_utf8(out->top_token, sizeof out->top_token, top);
    int ctx_prev = longest_run(prev, n_prev, NULL, NULL), ctx_next = longest_run(next, n_next, NULL, NULL);
    out->top_share = (double)top_n / n;
    out->distinct_share = (double)out->distinct / n;
    out->context_share = (double)(ctx_prev > ctx_next ? ctx_prev : ctx_next) / n;
    out->active_share = active / n;
    for (int i = 0; i < n; i++) free(peak[i]);
    for (int i = 0; i < n_prev; i++) free(prev[i]);
    for (int i = 0; i < n_next; i++) free(next[i]);
    free(peak);

    if (n < p->min_examples) out->gran = FM_GRAN_FEW;
    else if (out->top_share >= p->token_share) out->gran = FM_GRAN_TOKEN;
    else if (out->distinct_share >= p->distinct_share && out->context_share < p->context_share &&
             out->active_share < p->dense_share)
        out->gran = FM_GRAN_UNINTERPRETABLE;
    else out->gran = FM_GRAN_CONCEPT;
    return SF_OK;
}
