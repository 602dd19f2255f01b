/* params.c — parameter ranges (numeric intervals and allowed words) and the closest-name search
 * behind "did you mean" hints. */
#include "sf_params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct interval {
    double lo, hi;
    int lo_open, hi_open;
} interval;

static int parse_bound(const char *s, const char *end, double *out) {
    while (s < end && *s == ' ') s++;
    while (end > s && end[-1] == ' ') end--;
    char buf[64];
    size_t n = (size_t)(end - s);
    if (n == 0 || n >= sizeof buf) return 0;
    memcpy(buf, s, n);
    buf[n] = 0;
    if (!strcmp(buf, "inf")) return *out = INFINITY, 1;
    if (!strcmp(buf, "-inf")) return *out = -INFINITY, 1;
    char *e;
    *out = strtod(buf, &e);
    return *e == 0;
}

/* "[lo, hi]", "(lo, hi]", "[0, inf)" */
static int parse_interval(const char *r, interval *iv) {
    size_t n = strlen(r);
    const char *comma = strchr(r, ',');
    if (n < 5 || (r[0] != '[' && r[0] != '(') || (r[n - 1] != ']' && r[n - 1] != ')') || !comma) return 0;
    iv->lo_open = r[0] == '(', iv->hi_open = r[n - 1] == ')';
    return parse_bound(r + 1, comma, &iv->lo) && parse_bound(comma + 1, r + n - 1, &iv->hi) && iv->lo <= iv->hi;
}

static int numeric(const sf_param_def *pd) { return pd->type == SF_PARAM_INT || pd->type == SF_PARAM_FLOAT; }

int sf_range_valid(const sf_param_def *pd) {
    interval iv;
    if (!pd->range) return SF_OK;
    if (numeric(pd) && !parse_interval(pd->range, &iv))
        return sf_fail("parameter '%s': range '%s' is not an interval like [1, 64], (0, 1] or [0, inf)", pd->name, pd->range);
    if (pd->type == SF_PARAM_BOOL) return sf_fail("parameter '%s': a bool takes no range", pd->name);
    if (pd->default_value && sf_range_check(pd, pd->default_value) != SF_OK)
        return sf_fail("parameter '%s': its default '%s' is outside its own range: %s", pd->name, pd->default_value, sf_last_error());
    return SF_OK;
}

const char *sf_range_text(const sf_param_def *pd, char *buf, size_t cap) {
    snprintf(buf, cap, "%s %s", numeric(pd) ? "in" : "one of", pd->range ? pd->range : "");
    return buf;
}

/* The i-th '|'-separated word of a string range. */
typedef struct words {
    const char *range;
    char word[128];
} words;

static const char *word_at(void *arg, size_t i) {
    words *w = arg;
    const char *s = w->range;
    for (size_t k = 0; k < i; k++) {
        s = strchr(s, '|');
        if (!s) return NULL;
        s++;
    }
    size_t n = strcspn(s, "|");
    if (n >= sizeof w->word) n = sizeof w->word - 1;
    memcpy(w->word, s, n);
    w->word[n] = 0;
    return w->word;
}

int sf_range_check(const sf_param_def *pd, const char *v) {
    char text[200];
    if (!pd->range) return SF_OK;
    if (numeric(pd)) {
        interval iv;
        if (!parse_interval(pd->range, &iv)) return SF_OK; /* refused when the plugin loaded */
        double x = strtod(v, NULL);
        int ok = (iv.lo_open ? x > iv.lo : x >= iv.lo) && (iv.hi_open ? x < iv.hi : x <= iv.hi);
        return ok ? SF_OK : sf_fail("must be %s, not %s", sf_range_text(pd, text, sizeof text), v);
    }
    words w = {pd->range, ""};
    for (size_t i = 0; word_at(&w, i); i++)
        if (!strcmp(w.word, v)) return SF_OK;
    const char *near = sf_closest(v, word_at, &w);
    char hint[200] = "";
    if (near) snprintf(hint, sizeof hint, " (did you mean '%s'?)", near);
    return sf_fail("must be %s, not '%s'%s", sf_range_text(pd, text, sizeof text), v, hint);
}

/* Edit distance counting a swap of two neighbouring letters as one edit (optimal string alignment),
 * case-insensitive, of strings up to 63 bytes (longer: far). */
static size_t distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b), d[64][64];
    if (n > 63 || m > 63) return (size_t)-1;
    for (size_t i = 0; i <= n; i++) d[i][0] = i;
    for (size_t j = 0; j <= m; j++) d[0][j] = j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            size_t cost = (a[i - 1] | 32) != (b[j - 1] | 32), best = d[i - 1][j - 1] + cost;
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && (a[i - 1] | 32) == (b[j - 2] | 32) && (a[i - 2] | 32) == (b[j - 1] | 32) &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[n][m];
}

const char *sf_closest(const char *word, const char *(*next)(void *arg, size_t i), void *arg) {
    static _Thread_local char best[128];
    size_t best_d = (size_t)-1, limit = strlen(word) / 3;
    if (limit < 1) limit = 1;
    const char *c;
    for (size_t i = 0; (c = next(arg, i)); i++) {
        size_t d = distance(word, c);
        if (d < best_d && d <= limit && *c) {
            best_d = d;
            snprintf(best, sizeof best, "%s", c);
        }
    }
    return best_d == (size_t)-1 ? NULL : best;
}
