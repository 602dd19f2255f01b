/* The granularity judge (fm_gran.c) on made-up features: every class, each threshold on both
 * sides of its boundary, token normalisation, the first-of-ties peak, neighbours at the ends of an
 * example, the statistics it reports, and bad input. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "fm_gran.h"
#include "saeflow.h"
#include "sf_check.h"

#define MAX_EX 64
#define MAX_TOK 8

/* A feature under construction: examples with their own token and activation storage. */
typedef struct feat {
    int n;
    fm_token_act ex[MAX_EX];
    const char *tok[MAX_EX][MAX_TOK];
    int act[MAX_EX][MAX_TOK];
} feat;

/* Appends an example "prev peak next ." (". prev peak" when next is NULL; "peak next ." when prev
 * is NULL: the peak at that end): the peak at 10, the others at `rest` (0: off). */
static void add(feat *f, const char *prev, const char *peak, const char *next, int rest) {
    int e = f->n++, t = 0;
    if (!next) f->tok[e][t] = ".", f->act[e][t++] = rest;
    if (prev) f->tok[e][t] = prev, f->act[e][t++] = rest;
    f->tok[e][t] = peak, f->act[e][t++] = 10;
    if (next) f->tok[e][t] = next, f->act[e][t++] = rest;
    if (next) f->tok[e][t] = ".", f->act[e][t++] = rest;
    f->ex[e] = (fm_token_act){.n = t, .tok = f->tok[e], .act = f->act[e]};
}

/* A distinct made-up word per i. */
static const char *word(int i) {
    static char w[256][8];
    snprintf(w[i], sizeof w[i], "w%d", i);
    return w[i];
}

static fm_gran judge(const feat *f, const fm_gran_params *p, fm_gran_stats *g) {
    int rc = fm_gran_judge(f->ex, f->n, p, g);
    CHECK(rc == SF_OK, "judge failed: %s", sf_last_error());
    return g->gran;
}

static const char *name(fm_gran g) { return fm_gran_names[g]; }

int main(void) {
    const fm_gran_params *d = &fm_gran_defaults;
    fm_gran_stats g;
    CHECK(strcmp(fm_gran_names[FM_GRAN_UNINTERPRETABLE], "uninterpretable") == 0 && strcmp(fm_gran_names[FM_GRAN_FEW], "few") == 0,
          "class names");
    CHECK(d->min_examples == 5 && d->token_share == 0.5 && d->distinct_share == 0.65 && d->context_share == 0.7 &&
              d->dense_share == 0.9,
          "calibrated defaults");

    /* few: below min_examples, whatever the tokens; none at all too */
    feat f = {0};
    CHECK(judge(&f, d, &g) == FM_GRAN_FEW && g.n == 0, "no examples: few");
    for (int i = 0; i < 4; i++) add(&f, "the", " dog", "is", 0);
    CHECK(judge(&f, d, &g) == FM_GRAN_FEW && g.top_share == 1, "4 examples of one token: few, got %s", name(g.gran));
    add(&f, "the", " dog", "is", 0);
    CHECK(judge(&f, d, &g) == FM_GRAN_TOKEN, "5 examples of one token: token, got %s", name(g.gran));

    /* token: one normalised token (NFKC, case-folded, whitespace stripped) in at least half */
    f = (feat){0};
    const char *dogs[] = {" Dog", "dog", "ＤＯＧ", "DOG ", "\tdog"};
    for (int i = 0; i < 5; i++) add(&f, word(100 + i), dogs[i], word(200 + i), 0);
    const char *others[] = {"cat", "cat", "cat", word(0), word(1)};
    for (int i = 0; i < 5; i++) add(&f, word(110 + i), others[i], word(210 + i), 0);
    CHECK(judge(&f, d, &g) == FM_GRAN_TOKEN && g.top_share == 0.5 && strcmp(g.top_token, "dog") == 0 && g.distinct == 4,
          "5 of 10 are dog: token; got %s share %g top '%s' distinct %d", name(g.gran), g.top_share, g.top_token,
          g.distinct);
    f.ex[0].tok = (const char *[]){word(100), "cat", word(200), "."}; /* 4 dog, 4 cat */
    CHECK(judge(&f, d, &g) == FM_GRAN_CONCEPT && g.top_share == 0.4 && g.distinct_share == 0.4,
          "4 of 10: not token, 4 distinct of 10 not scattered: concept, got %s", name(g.gran));

    /* uninterpretable: scattered peaks (distinct/n >= 0.65), no shared neighbour, sparse firing */
    f = (feat){0};
    for (int i = 0; i < 8; i++) add(&f, word(100 + i), "の", word(200 + i), 0);
    for (int i = 0; i < 12; i++) add(&f, word(120 + i), word(i), word(220 + i), 0);
    CHECK(judge(&f, d, &g) == FM_GRAN_UNINTERPRETABLE && g.distinct == 13 && g.distinct_share == 0.65 &&
              g.context_share == 0.05 && g.active_share == 0.25,
          "13 distinct of 20: uninterpretable; got %s distinct %d share %g context %g active %g", name(g.gran),
          g.distinct, g.distinct_share, g.context_share, g.active_share);
    f.ex[19].tok = (const char *[]){word(139), "の", word(239), "."}; /* 12 distinct of 20 */
    CHECK(judge(&f, d, &g) == FM_GRAN_CONCEPT && g.distinct_share == 0.6, "12 distinct of 20: concept, got %s",
          name(g.gran));

    /* a shared neighbour makes scattered peaks a concept: 14 of 20 after "The" (0.7), then 13 */
    f = (feat){0};
    for (int i = 0; i < 20; i++) add(&f, i < 14 ? " The" : word(100 + i), word(i), word(200 + i), 0);
    CHECK(judge(&f, d, &g) == FM_GRAN_CONCEPT && g.context_share == 0.7 && g.distinct_share == 1,
          "14 of 20 after The: concept; got %s context %g", name(g.gran), g.context_share);
    f.ex[13].tok = (const char *[]){word(113), word(13), word(213), "."};
    CHECK(judge(&f, d, &g) == FM_GRAN_UNINTERPRETABLE && fabs(g.context_share - 0.65) < 1e-15,
          "13 of 20 after The: uninterpretable; got %s context %g", name(g.gran), g.context_share);
    /* the neighbour after the peak counts the same way */
    f = (feat){0};
    for (int i = 0; i < 20; i++) add(&f, word(100 + i), word(i), i < 14 ? "月" : word(200 + i), 0);
    CHECK(judge(&f, d, &g) == FM_GRAN_CONCEPT && g.context_share == 0.7, "14 of 20 before 月: concept, got %s",
          name(g.gran));
    /* peaks at the ends of their examples have no neighbour there: no shared "start" or "end" token */
    f = (feat){0};
    for (int i = 0; i < 10; i++) add(&f, NULL, word(i), word(200 + i), 0);
    for (int i = 10; i < 20; i++) add(&f, word(100 + i), word(i), NULL, 0);
    CHECK(judge(&f, d, &g) == FM_GRAN_UNINTERPRETABLE && g.context_share == 0.05,
          "peaks at the ends: uninterpretable; got %s context %g", name(g.gran), g.context_share);

    /* firing over whole examples makes scattered peaks a concept (a topic feature) */
    f = (feat){0};
    for (int i = 0; i < 20; i++) add(&f, word(100 + i), word(i), word(200 + i), 3);
    CHECK(judge(&f, d, &g) == FM_GRAN_CONCEPT && g.active_share == 1, "dense: concept; got %s active %g", name(g.gran),
          g.active_share);
    fm_gran_params half = *d;
    half.dense_share = 0.5; /* exact boundary: examples half on (2 of 4 tokens) */
    for (int i = 0; i < 20; i++) f.act[i][2] = f.act[i][3] = 0;
    CHECK(judge(&f, &half, &g) == FM_GRAN_CONCEPT && g.active_share == 0.5, "active 0.5 at dense_share 0.5: concept");
    f.act[7][0] = 0; /* one example less */
    CHECK(judge(&f, &half, &g) == FM_GRAN_UNINTERPRETABLE && g.active_share < 0.5,
          "active just below 0.5: uninterpretable, got %s", name(g.gran));

    /* the peak is the first of the highest activations */
    f = (feat){0};
    for (int i = 0; i < 5; i++) {
        add(&f, word(i), "cat", "sat", 0);
        f.act[i][0] = 10; /* ties with "cat": the earlier token, word(i), is the peak */
    }
    CHECK(judge(&f, d, &g) == FM_GRAN_CONCEPT && g.distinct == 5 && g.top_share == 0.2 && g.context_share == 1,
          "first of ties (peaks w0..w4 before cat, not cat): %s distinct %d context %g", name(g.gran), g.distinct,
          g.context_share);

    /* the top token is truncated to fit without cutting a character */
    f = (feat){0};
    char longtok[3 * 30 + 1] = "";
    for (int i = 0; i < 30; i++) strcat(longtok, "あ");
    for (int i = 0; i < 5; i++) add(&f, "x", longtok, "y", 0);
    judge(&f, d, &g);
    CHECK(strlen(g.top_token) == 63 && strncmp(g.top_token, longtok, 63) == 0, "top token truncated to 21 characters");

    /* bad input */
    f = (feat){0};
    for (int i = 0; i < 5; i++) add(&f, "a", "b", "c", 0);
    f.act[2][1] = 11;
    CHECK(fm_gran_judge(f.ex, f.n, d, &g) == SF_ERR && strstr(sf_last_error(), "0..10"), "act 11 refused");
    f.act[2][1] = -1;
    CHECK(fm_gran_judge(f.ex, f.n, d, &g) == SF_ERR, "act -1 refused");
    f.act[2][1] = 10;
    f.tok[3][0] = NULL;
    CHECK(fm_gran_judge(f.ex, f.n, d, &g) == SF_ERR && strstr(sf_last_error(), "no string"), "NULL token refused");
    f.tok[3][0] = "a";
    f.ex[4].n = 0;
    CHECK(fm_gran_judge(f.ex, f.n, d, &g) == SF_ERR && strstr(sf_last_error(), "no tokens"), "empty example refused");
    CHECK(fm_gran_check_params(d) == SF_OK, "defaults are valid");
    fm_gran_params bad = *d;
    bad.min_examples = -1;
    CHECK(fm_gran_check_params(&bad) == SF_ERR && strstr(sf_last_error(), "min_examples"), "min_examples -1 refused");
    bad = *d;
    bad.context_share = 1.5;
    CHECK(fm_gran_check_params(&bad) == SF_ERR && strstr(sf_last_error(), "context_share"), "share 1.5 refused");
    bad = *d;
    bad.token_share = NAN;
    CHECK(fm_gran_check_params(&bad) == SF_ERR && strstr(sf_last_error(), "token_share"), "NaN share refused");

    printf("%s\n", failures ? "FAIL" : "ok");
    return failures ? 1 : 0;
}
