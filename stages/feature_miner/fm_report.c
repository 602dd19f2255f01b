/* fm_report.c — see fm_report.h.
 *
 * Per run directory it reads summary.json (feature_miner) and the SAE's metrics: the first of
 * RUN_DIR/metrics.json, RUN_DIR/eval.json, RUN_DIR/../eval.json, <sae>/eval.json (sae_eval), the last line of
 * <sae>/metrics.jsonl (sae_trainer), <sae>/metrics.json, <sae>/config.json, <sae>/cfg.json that has
 * the numbers "fvu" and "dead_fraction" (at the top level, or in an object "final" or
 * "metrics"); and the LM loss with and without the SAE spliced in ("loss", "loss_sae": the forward
 * stage's `sae` passes them to sae_eval) from the first of RUN_DIR/eval.json, RUN_DIR/../eval.json, RUN_DIR/metrics.json,
 * <sae>/eval.json that has both; and where each checkpoint sits in training (training_position). It
 * writes OUT/report.md, OUT/report.html (fm_report_html.c: table and SVG line charts), OUT/report.json
 * and per pair of consecutive checkpoints OUT/match-<r>.json and .html, and prints the Markdown table
 * and the HTML path. */
#include "fm_report.h"

#include <cblas.h>
#include <errno.h>
#include <jansson.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fm_lang.h"
#include "fm_output.h"
#include "fm_report_html.h"
#include "sae.h"
#include "saeflow.h"
#include "sf_output.h"

enum { FM_MATCH_CHUNK = 256 };

/* Unit-norm copies of the alive rows of W [n][d] and their row numbers; returns how many, or
 * SF_ERR when they do not fit in memory. */
static int alive_unit_rows(const float *W, int n, const unsigned char *alive, int d, float **out, int **ids) {
    float *R = sf_alloc("unit decoder rows", (size_t)n * (size_t)d, sizeof *R);
    int *id = R ? sf_alloc("decoder row numbers", (size_t)n, sizeof *id) : NULL;
    if (!id) {
        free(R);
        return SF_ERR;
    }
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (alive && !alive[i]) continue;
        const float *w = W + (size_t)i * d;
        double ss = 0;
        for (int j = 0; j < d; j++) ss += (double)w[j] * w[j];
        float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.f;
        for (int j = 0; j < d; j++) R[(size_t)m * d + j] = w[j] * inv;
        id[m++] = i;
    }
    *out = R;
    *ids = id;
    return m;
}

/* The regularised incomplete beta function I_x(a, b): the continued fraction (modified Lentz),
 * as in Numerical Recipes' betai/betacf. */
static double inc_beta(double a, double b, double x) {
    if (x <= 0) return 0;
    if (x >= 1) return 1;
    if (x > (a + 1) / (a + b + 2)) return 1 - inc_beta(b, a, 1 - x); /* where the fraction converges fast */
    double front = exp(lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log1p(-x)) / a;
    double tiny = 1e-300, c = 1, dd = 1 - (a + b) * x / (a + 1);
    dd = 1 / (fabs(dd) < tiny ? tiny : dd);
    double f = dd;
    for (int m = 1; m <= 500; m++) {
        for (int odd = 0; odd < 2; odd++) {
            double num = odd ? -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
                             : m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m));
            dd = 1 + num * dd;
            dd = 1 / (fabs(dd) < tiny ? tiny : dd);
            c = 1 + num / c;
            if (fabs(c) < tiny) c = tiny;
            f *= c * dd;
        }
        if (fabs(c * dd - 1) < 1e-15) break;
    }
    return front * f;
}

double fm_random_cos_tail(int d, double t) {
    /* The cosine's density is proportional to (1 - c^2)^((d-3)/2) on [-1, 1]. */
    if (t >= 1) return 0;
    if (t <= -1) return 1;
    double upper = 0.5 * inc_beta((d - 1) / 2.0, 0.5, 1 - t * t); /* P(cos >= |t|) */
    return t >= 0 ? upper : 1 - upper;
}

int fm_match_decoders(const float *W_a, int n_a, const unsigned char *alive_a, const float *W_b, int n_b,
                      const unsigned char *alive_b, int d, double threshold, fm_match *out, int *partner,
                      float *partner_cos) {
    float *A = NULL, *B = NULL, *C = NULL, *best_b = NULL;
    int *ida = NULL, *idb = NULL;
    int na = alive_unit_rows(W_a, n_a, alive_a, d, &A, &ida);
    int nb = na < 0 ? SF_ERR : alive_unit_rows(W_b, n_b, alive_b, d, &B, &idb);
    if (nb >= 0 && (C = sf_alloc("a block of decoder cosines", (size_t)FM_MATCH_CHUNK * (size_t)nb, sizeof *C)))
        best_b = sf_alloc("the best cosines", (size_t)nb, sizeof *best_b);
    if (!best_b) {
        free(A), free(B), free(ida), free(idb), free(C);
        return sf_fail("matching decoders (%d x %d features of width %d): %s", n_a, n_b, d, sf_last_error());
    }
    for (int i = 0; i < n_a; i++) partner[i] = -1, partner_cos[i] = NAN;
    for (int j = 0; j < nb; j++) best_b[j] = -2;
    memset(out, 0, sizeof *out);
    double sum_best = 0;
    for (int i0 = 0; i0 < na && nb > 0; i0 += FM_MATCH_CHUNK) {
        int m = na - i0 < FM_MATCH_CHUNK ? na - i0 : FM_MATCH_CHUNK;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, nb, d, 1.f, A + (size_t)i0 * d, d, B, d, 0.f, C, nb);
        for (int r = 0; r < m; r++) {
            const float *row = C + (size_t)r * nb;
            float best = -2;
            int arg = 0;
            for (int j = 0; j < nb; j++) {
                if (row[j] > best) best = row[j], arg = j;
                if (row[j] > best_b[j]) best_b[j] = row[j];
            }
            partner[ida[i0 + r]] = idb[arg];
            partner_cos[ida[i0 + r]] = best;
            sum_best += best;
            if (best >= threshold) out->persist++, out->same_index += ida[i0 + r] == idb[arg];
        }
    }
    out->vanish = na - out->persist;
    for (int j = 0; j < nb; j++) out->appear += !(best_b[j] >= threshold) || na == 0;
    out->mean_best_a = na && nb ? sum_best / na : 0;
    out->chance_persist = nb ? na * -expm1(nb * log1p(-fm_random_cos_tail(d, threshold))) : 0;
    free(A);
    free(B);
    free(ida);
    free(idb);
    free(C);
    free(best_b);
    return SF_OK;
}

/* ---------------------------------------------------------------------------------------------- */

static json_t *load_json(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return NULL;
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (!j) sf_log(SF_LOG_WARN, "%s: %s (line %d)", path, err.text, err.line);
    return j;
}

/* The last non-empty line of a JSON-lines file, parsed. */
static json_t *load_last_jsonl(const char *path) {
    FILE *fp = fopen(path, "r");
    if (!fp) return NULL;
    char *line = NULL, *last = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, fp) >= 0)
        if (line[strspn(line, " \t\r\n")]) {
            free(last);
            last = strdup(line);
        }
    free(line);
    fclose(fp);
    json_t *j = last ? json_loads(last, 0, NULL) : NULL;
    free(last);
    return j;
}

/* fvu and dead_fraction from a metrics object, at its top level or under "final"/"metrics". */
static int metrics_from(json_t *j, double *fvu, double *dead) {
    const char *const scopes[] = {NULL, "final", "metrics"};
    for (int s = 0; j && s < 3; s++) {
        json_t *o = scopes[s] ? json_object_get(j, scopes[s]) : j;
        json_t *f = json_object_get(o, "fvu"), *d = json_object_get(o, "dead_fraction");
        if (json_is_number(f) && json_is_number(d)) {
            *fvu = json_number_value(f);
            *dead = json_number_value(d);
            return 1;
        }
    }
    return 0;
}

static int pairs_from(fm_run *r, const char *dir);

/* The checkpoint's step and tokens seen, and the model's parameter count, from the suite's
 * checkpoints.json beside the model directory the summary names (its entry whose "dir" is that
 * directory's name; tools/train_suite.py writes it); else the step from a name "step<N>",
 * "step-<N>" or "step_<N>"; else unknown. */
static void training_position(fm_run *r) {
    const char *model = json_string_value(json_object_get(r->summary, "model"));
    if (model && *model) {
        char path[4096], *tmp = strdup(model);
        if (!tmp) return;
        size_t len = strlen(tmp);
        while (len > 1 && tmp[len - 1] == '/') tmp[--len] = 0;
        /* The parent by name, not "<model>/..": the model directory need not exist here. */
        char *slash = strrchr(tmp, '/');
        const char *base = slash ? slash + 1 : tmp;
        if (slash) *slash = 0;
        snprintf(path, sizeof path, "%s/checkpoints.json", slash ? (slash == tmp ? "/" : tmp) : ".");
        json_t *suite = load_json(path), *c;
        size_t i;
        json_array_foreach(json_object_get(suite, "checkpoints"), i, c) {
            const char *d = json_string_value(json_object_get(c, "dir"));
            if (!d || strcmp(d, base)) continue;
            json_t *t = json_object_get(c, "tokens_seen"), *st = json_object_get(c, "step"),
                   *p = json_object_get(suite, "parameters");
            if (json_is_number(t)) r->tokens_seen = json_number_value(t);
            if (json_is_number(p)) r->parameters = json_number_value(p);
            if (json_is_integer(st)) r->step = (long)json_integer_value(st);
            r->suite_src = strdup(path);
            break;
        }
        json_decref(suite);
        free(tmp);
        if (r->step >= 0) return;
    }
    const char *s = strstr(r->name, "step");
    if (s) {
        s += 4;
        if (*s == '-' || *s == '_') s++;
        char *end;
        long v = strtol(s, &end, 10);
        if (end > s && !*end && v >= 0) r->step = v;
    }
}

static int load_run(fm_run *r, const char *dir) {
    char path[4096];
    memset(r, 0, sizeof *r);
    r->dir = strdup(dir);
    r->fvu = r->dead = r->loss = r->loss_sae = r->tokens_seen = r->parameters = NAN;
    r->step = -1;
    snprintf(path, sizeof path, "%s/summary.json", dir);
    r->summary = load_json(path);
    if (!r->summary) {
        snprintf(path, sizeof path, "%s/feature_miner/summary.json", dir);
        r->summary = load_json(path);
    }
    if (!r->summary) return sf_fail("%s: no summary.json (nor feature_miner/summary.json)", dir);
    json_t *s = r->summary;
    const char *ck = json_string_value(json_object_get(s, "checkpoint"));
    char *tmp = strdup(dir);
    r->name = strdup(ck && *ck ? ck : basename(tmp));
    free(tmp);
    const char *sae = json_string_value(json_object_get(s, "sae"));
    r->sae = sae && *sae ? strdup(sae) : NULL;
    r->n_features = (int)json_integer_value(json_object_get(s, "n_features"));
    r->alive = (int)json_integer_value(json_object_get(s, "alive"));
    json_t *lang = json_object_get(s, "language"), *gran = json_object_get(s, "granularity");
    for (int v = 0; v < FM_VOTES; v++)
        for (int l = 0; l < FM_FLANG_COUNT; l++) {
            json_t *c = json_object_get(json_object_get(lang, fm_vote_names[v]), fm_flang_names[l]);
            /* Summaries of an older miner count "bilingual" and have no "ascii" rule: not zeros. */
            if (!json_is_integer(c))
                return sf_fail("%s: summary.json has no count language.%s.%s (written by an older feature_miner?); "
                               "mine the run again", dir, fm_vote_names[v], fm_flang_names[l]);
            r->lang[v][l] = r->alive ? (double)json_integer_value(c) / r->alive : 0;
        }
    for (int g = 0; g < FM_GRAN_COUNT; g++)
        r->gran[g] = r->alive ? (double)json_integer_value(json_object_get(gran, fm_gran_names[g])) / r->alive : 0;

    /* The first that has both numbers: an explicit file, sae_eval's held-out results, the trainer's
     * last metrics line, the model config. */
    const char *const cands[][2] = {{"run", "metrics.json"}, {"run", "eval.json"}, {"run", "../eval.json"},
                                    {"sae", "eval.json"},
                                    {"sae", "metrics.jsonl"}, {"sae", "metrics.json"}, {"sae", "config.json"},
                                    {"sae", "cfg.json"}};
    for (size_t c = 0; c < sizeof cands / sizeof cands[0]; c++) {
        const char *base = cands[c][0][0] == 'r' ? dir : r->sae;
        if (!base) continue;
        snprintf(path, sizeof path, "%s/%s", base, cands[c][1]);
        json_t *j = strstr(cands[c][1], ".jsonl") ? load_last_jsonl(path) : load_json(path);
        int found = metrics_from(j, &r->fvu, &r->dead);
        json_decref(j);
        if (found) {
            r->metrics_src = strdup(path);
            break;
        }
    }
    const char *const loss_cands[][2] = {{"run", "eval.json"}, {"run", "../eval.json"}, {"run", "metrics.json"},
                                         {"sae", "eval.json"}};
    for (size_t c = 0; c < sizeof loss_cands / sizeof loss_cands[0]; c++) {
        const char *base = loss_cands[c][0][0] == 'r' ? dir : r->sae;
        if (!base) continue;
        snprintf(path, sizeof path, "%s/%s", base, loss_cands[c][1]);
        json_t *j = load_json(path);
        json_t *l = json_object_get(j, "loss"), *ls = json_object_get(j, "loss_sae");
        int found = json_is_number(l) && json_is_number(ls);
        if (found) {
            r->loss = json_number_value(l);
            r->loss_sae = json_number_value(ls);
            r->loss_src = strdup(path);
        }
        json_decref(j);
        if (found) break;
    }
    training_position(r);
    return pairs_from(r, dir);
}

/* The cross-lingual (pairs) share: the run's own summary's `pairs` block, else that of a pairs run
 * beside it (RUN_DIR/../pairs/summary.json, as tools/demo.sh writes it), which must have mined the
 * same SAE. */
static int pairs_from(fm_run *r, const char *dir) {
    char path[4096];
    r->pairs = NAN;
    json_t *own = json_object_get(r->summary, "pairs"), *other = NULL, *block = own;
    if (block) {
        snprintf(path, sizeof path, "%s/summary.json", dir);
    } else {
        snprintf(path, sizeof path, "%s/../pairs/summary.json", dir);
        if (!(other = load_json(path))) return SF_OK;
        const char *sae = json_string_value(json_object_get(other, "sae"));
        if (!sae || !r->sae || strcmp(sae, r->sae)) {
            sf_fail("%s mined the SAE %s, %s/summary.json the SAE %s: its cross-lingual (pairs) share is not this "
                    "run's; mine the pairs with the same SAE", path, sae ? sae : "(none)", dir, r->sae ? r->sae : "(none)");
            json_decref(other); /* after the message: sae points into it */
            return SF_ERR;
        }
        block = json_object_get(other, "pairs");
    }
    json_t *share = json_object_get(block, "share");
    if (block && json_is_number(share)) {
        r->pairs = json_number_value(share);
        r->pairs_src = strdup(path);
    }
    json_decref(other);
    return SF_OK;
}

/* Alive mask of a run's features from its summary; NULL (sf_last_error) when out of memory. */
static unsigned char *alive_mask(const fm_run *r, int n) {
    unsigned char *a = sf_zalloc("a feature mask", (size_t)n, 1);
    if (!a) return NULL;
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(r->summary, "features"), i, f) {
        json_int_t id = json_integer_value(json_object_get(f, "id"));
        if (id >= 0 && id < n) a[id] = 1;
    }
    return a;
}

/* ---------------------------------------------------------------------------------------------- */

/* The Markdown table, to fp. */
static void markdown(FILE *fp, const fm_run *runs, int n, double thr) {
    fprintf(fp, "| checkpoint | alive | en | ja | mixed | en (script) | ja (script) | mixed (script) | x-ling (pairs) | token | concept "
                "| uninterpretable | few ex. | FVU | dead | LM loss (+ with SAE) | persist | appear | vanish | same index | chance |\n");
    fprintf(fp, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int r = 0; r < n; r++) {
        const fm_run *x = &runs[r];
        char fvu[32], dead[32], loss[64], pairs[32];
        fm_report_fmt_num(fvu, sizeof fvu, x->fvu, "%.4f");
        fm_report_fmt_num(dead, sizeof dead, x->dead, "%.4f");
        fm_report_fmt_num(pairs, sizeof pairs, 100 * x->pairs, "%.1f%%");
        fm_report_fmt_loss(loss, sizeof loss, x);
        fprintf(fp, "| %s | %d | %.1f%% | %.1f%% | %.1f%% | %.1f%% | %.1f%% | %.1f%% | %s | %.1f%% | %.1f%% | %.1f%% | %.1f%% | %s | %s | %s |",
                x->name, x->alive, 100 * x->lang[FM_RULE_PAPER][FM_FLANG_EN], 100 * x->lang[FM_RULE_PAPER][FM_FLANG_JA],
                100 * x->lang[FM_RULE_PAPER][FM_FLANG_MIXED], 100 * x->lang[FM_RULE_SCRIPT][FM_FLANG_EN], 100 * x->lang[FM_RULE_SCRIPT][FM_FLANG_JA],
                100 * x->lang[FM_RULE_SCRIPT][FM_FLANG_MIXED], pairs, 100 * x->gran[FM_GRAN_TOKEN], 100 * x->gran[FM_GRAN_CONCEPT],
                100 * x->gran[FM_GRAN_UNINTERPRETABLE], 100 * x->gran[FM_GRAN_FEW], fvu, dead, loss);
        if (x->matched)
            fprintf(fp, " %d | %d | %d | %.1f%% | %.2g |\n", x->match.persist, x->match.appear, x->match.vanish,
                    x->match.persist ? 100.0 * x->match.same_index / x->match.persist : 0, x->match.chance_persist);
        else fprintf(fp, " | | | | |\n");
    }
    fprintf(fp, "\nLanguage shares are of alive features (fired in the mined stream); the paper's rule, then the "
                "script-aware one. x-ling (pairs): our test, not the paper's: the share of alive features that fire on both sides of the same "
                "English/Japanese translation pairs far above shuffled pairings (stages/feature_miner/README.md; of the pairs run's alive features; n/a without one). LM loss: the model's mean next-token loss on the mined tokens, in brackets its "
                "change when the SAE's reconstruction replaces the layer (the forward stage's `sae`). persist/vanish: features of the previous checkpoint whose decoder direction has "
                "(has no) match with cosine >= %.2f here; appear: features here with no such match there. same index: "
                "share of the persisting features whose match has the same index (high when two SAEs share their "
                "initialisation); chance: persist expected between independent random directions.\n", thr);
}

/* OUT/match-<r>.json: each alive feature of run r-1 with its closest decoder direction in run r. */
static int write_pairs(const char *out, int r, const fm_run *a, const fm_run *b, double thr, int n,
                       const int *partner, const float *cos) {
    json_t *j = json_object(), *pairs = json_array();
    json_object_set_new(j, "from", json_string(a->name));
    json_object_set_new(j, "to", json_string(b->name));
    json_object_set_new(j, "from_dir", json_string(a->dir));
    json_object_set_new(j, "to_dir", json_string(b->dir));
    json_object_set_new(j, "threshold", json_real(thr));
    for (int i = 0; i < n; i++) {
        if (partner[i] < 0) continue;
        json_t *p = json_array();
        json_array_append_new(p, json_integer(i));
        json_array_append_new(p, json_integer(partner[i]));
        json_array_append_new(p, json_real(cos[i]));
        json_array_append_new(pairs, p);
    }
    json_object_set_new(j, "pairs", pairs);
    char path[4096];
    snprintf(path, sizeof path, "%s/match-%d.json", out, r);
    int rc = json_dump_file(j, path, JSON_COMPACT | JSON_REAL_PRECISION(6));
    json_decref(j);
    if (rc != 0) fprintf(stderr, "saeflow report: cannot write %s\n", path);
    return rc;
}

static int usage(FILE *fp, int rc) {
    fprintf(fp, "usage: saeflow report " FM_REPORT_ARGS "\n"
                "One feature_miner run directory per checkpoint, in training order; writes DIR/report.md,\n"
                "report.html, report.json, match-<r>.json and match-<r>.html (default DIR saeflow-report).\n"
                "  --out DIR              output directory\n"
                "  --match-threshold T    decoder cosine for a feature to persist (default 0.7)\n"
                "  --no-match             skip matching features between consecutive checkpoints\n");
    return rc;
}

typedef struct report_args {
    const char *out;
    double thr;
    int do_match;
} report_args;

/* Options into *a, run directories loaded into runs[*n]; 0, or the exit code. */
static int parse_args(int argc, char **argv, report_args *a, fm_run *runs, int *n) {
    *a = (report_args){"saeflow-report", 0.7, 1};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) a->out = argv[++i];
        else if (strcmp(argv[i], "--match-threshold") == 0 && i + 1 < argc) {
            char *end;
            a->thr = strtod(argv[++i], &end);
            if (*end || !(a->thr >= -1 && a->thr <= 1)) return usage(stderr, 2);
        } else if (strcmp(argv[i], "--no-match") == 0) a->do_match = 0;
        else if (argv[i][0] == '-') return usage(stderr, 2);
        else if (load_run(&runs[(*n)++], argv[i]) != SF_OK) {
            fprintf(stderr, "saeflow report: %s\n", sf_last_error());
            return 1;
        }
    }
    return *n == 0 ? usage(stderr, 2) : 0;
}

/* Decoder matching between consecutive checkpoints, two SAEs in memory at a time; writes
 * OUT/match-<r>.json and .html. A run whose SAE does not load is skipped (with a warning). SF_OK or SF_ERR. */
static int match_runs(fm_run *runs, int n, const char *out, double thr) {
    sae_model prev = {0}, cur = {0};
    int have_prev = 0, rc = SF_OK;
    for (int r = 0; rc == SF_OK && r < n; r++) {
        if (!runs[r].sae || sae_load(&cur, runs[r].sae) != SF_OK) {
            fprintf(stderr, "saeflow report: %s: cannot load its SAE (%s); no matching for it\n", runs[r].dir,
                    runs[r].sae ? sf_last_error() : "summary names none");
            if (have_prev) sae_model_free(&prev);
            have_prev = 0;
            continue;
        }
        if (have_prev && prev.d == cur.d) {
            unsigned char *a = alive_mask(&runs[r - 1], prev.n), *b = a ? alive_mask(&runs[r], cur.n) : NULL;
            int *partner = b ? sf_alloc("the matched partners", (size_t)prev.n, sizeof *partner) : NULL;
            float *cos = partner ? sf_alloc("the matched cosines", (size_t)prev.n, sizeof *cos) : NULL;
            if (!cos || fm_match_decoders(prev.W_dec, prev.n, a, cur.W_dec, cur.n, b, cur.d, thr, &runs[r].match,
                                          partner, cos) != SF_OK) {
                rc = SF_ERR;
            } else {
                runs[r].matched = 1;
                if (write_pairs(out, r, &runs[r - 1], &runs[r], thr, prev.n, partner, cos) != 0)
                    rc = sf_fail("cannot write %s/match-%d.json", out, r);
                else rc = fm_report_write_match_html(out, r, &runs[r - 1], &runs[r], thr, prev.n, partner, cos);
            }
            free(partner);
            free(cos);
            free(a);
            free(b);
        }
        if (have_prev) sae_model_free(&prev);
        prev = cur;
        memset(&cur, 0, sizeof cur);
        have_prev = 1;
    }
    if (have_prev) sae_model_free(&prev);
    return rc;
}

/* OUT/report.md (and the same table on stdout). */
static int write_markdown(const char *out, const fm_run *runs, int n, double thr) {
    char path[4096];
    snprintf(path, sizeof path, "%s/report.md", out);
    FILE *md = fopen(path, "w");
    if (!md) return sf_fail("cannot write %s: %s", path, strerror(errno));
    fprintf(md, "# SAE features across checkpoints\n\n");
    markdown(md, runs, n, thr);
    markdown(stdout, runs, n, thr);
    if (ferror(md) | fclose(md)) return sf_fail("cannot write %s (disk full?)", path);
    return SF_OK;
}

/* OUT/report.json: every number of the tables, with the files they came from. */
static int write_json(const char *out, const fm_run *runs, int n, double thr) {
    json_t *j = json_array();
    for (int r = 0; r < n; r++) {
        const fm_run *x = &runs[r];
        json_t *o = json_object();
        json_object_set_new(o, "checkpoint", json_string(x->name));
        json_object_set_new(o, "dir", json_string(x->dir));
        json_object_set_new(o, "alive", json_integer(x->alive));
        json_object_set_new(o, "n_features", json_integer(x->n_features));
        json_object_set_new(o, "step", x->step >= 0 ? json_integer(x->step) : json_null());
        json_object_set_new(o, "tokens_seen", isfinite(x->tokens_seen) ? json_real(x->tokens_seen) : json_null());
        json_object_set_new(o, "parameters", isfinite(x->parameters) ? json_real(x->parameters) : json_null());
        json_object_set_new(o, "tokens_per_parameter", isfinite(x->tokens_seen / x->parameters) ? json_real(x->tokens_seen / x->parameters) : json_null());
        json_object_set_new(o, "suite_source", x->suite_src ? json_string(x->suite_src) : json_null());
        for (int v = 0; v < FM_VOTES; v++) {
            json_t *l = json_object();
            for (int k = 0; k < FM_FLANG_COUNT; k++) json_object_set_new(l, fm_flang_names[k], json_real(x->lang[v][k]));
            char key[32];
            snprintf(key, sizeof key, "language_%s", fm_vote_names[v]);
            json_object_set_new(o, key, l);
        }
        json_t *g = json_object();
        for (int k = 0; k < FM_GRAN_COUNT; k++) json_object_set_new(g, fm_gran_names[k], json_real(x->gran[k]));
        json_object_set_new(o, "granularity", g);
        json_object_set_new(o, "fvu", isfinite(x->fvu) ? json_real(x->fvu) : json_null());
        json_object_set_new(o, "dead_fraction", isfinite(x->dead) ? json_real(x->dead) : json_null());
        json_object_set_new(o, "metrics_source", x->metrics_src ? json_string(x->metrics_src) : json_null());
        int has_loss = isfinite(x->loss) && isfinite(x->loss_sae);
        json_object_set_new(o, "lm_loss", has_loss ? json_real(x->loss) : json_null());
        json_object_set_new(o, "lm_loss_sae", has_loss ? json_real(x->loss_sae) : json_null());
        json_object_set_new(o, "lm_loss_increase", has_loss ? json_real(x->loss_sae - x->loss) : json_null());
        json_object_set_new(o, "lm_loss_source", x->loss_src ? json_string(x->loss_src) : json_null());
        json_object_set_new(o, "cross_lingual_pairs", isfinite(x->pairs) ? json_real(x->pairs) : json_null());
        json_object_set_new(o, "pairs_source", x->pairs_src ? json_string(x->pairs_src) : json_null());
        if (x->matched) {
            json_t *m = json_object();
            json_object_set_new(m, "persist", json_integer(x->match.persist));
            json_object_set_new(m, "appear", json_integer(x->match.appear));
            json_object_set_new(m, "vanish", json_integer(x->match.vanish));
            json_object_set_new(m, "same_index", json_integer(x->match.same_index));
            json_object_set_new(m, "chance_persist", json_real(x->match.chance_persist));
            json_object_set_new(m, "mean_best_cosine", json_real(x->match.mean_best_a));
            json_object_set_new(m, "threshold", json_real(thr));
            json_object_set_new(o, "match_previous", m);
        }
        json_array_append_new(j, o);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/report.json", out);
    int rc = json_dump_file(j, path, JSON_INDENT(1)) == 0 ? SF_OK : sf_fail("cannot write %s", path);
    json_decref(j);
    return rc;
}

int fm_report_main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return usage(stdout, 0);
    fm_run *runs = sf_zalloc("the run list", (size_t)argc, sizeof *runs);
    if (!runs) {
        fprintf(stderr, "saeflow report: %s\n", sf_last_error());
        return 1;
    }
    report_args a;
    int n = 0, rc = parse_args(argc, argv, &a, runs, &n);
    char path[4096];
    snprintf(path, sizeof path, "%s/report.html", a.out);
    if (rc == 0 && (sf_mkdirs(a.out) != SF_OK || (a.do_match && match_runs(runs, n, a.out, a.thr) != SF_OK) ||
                    write_markdown(a.out, runs, n, a.thr) != SF_OK ||
                    fm_report_write_html(a.out, runs, n, a.thr, a.do_match) != SF_OK || write_json(a.out, runs, n, a.thr) != SF_OK)) {
        fprintf(stderr, "saeflow report: %s\n", sf_last_error());
        rc = 1;
    }
    if (rc == 0) printf("\n%s\n", path);
    for (int r = 0; r < n; r++) {
        free(runs[r].dir);
        free(runs[r].name);
        free(runs[r].sae);
        free(runs[r].metrics_src);
        free(runs[r].loss_src);
        free(runs[r].pairs_src);
        free(runs[r].suite_src);
        json_decref(runs[r].summary);
    }
    free(runs);
    return rc;
}
