/* fm_output.c — see fm_output.h. */
#include "fm_output.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm_judge.h"
#include "saeflow.h"
#include "sf_output.h"
#include <utf8proc.h>

/* ---------------------------------------------------------------------------------------------- */
/* Per-feature analysis                                                                            */

const char *const fm_vote_names[FM_VOTES] = {"paper", "ascii", "script", "label"};

typedef struct fm_fres {
    int n_thr;                        /* examples above the threshold: a prefix of the sorted top list */
    fm_judgement j;                   /* languages by rule, granularity: from the token_act written */
    const char *verdict[FM_VOTES];    /* "en", "ja", "mixed", "unknown", or a corpus label */
} fm_fres;

/* A feature's examples above the threshold in the paper's token_act form, as its JSON file holds
 * them: display strings and activations quantised against the largest peak. Buffers for up to
 * top_n examples of max_T tokens, one set per writer thread. */
typedef struct fm_ta {
    fm_token_act *ex; /* [top_n] */
    const char **tok; /* [top_n * max_T] */
    int *act;         /* [top_n * max_T] */
    char (*oov)[24];  /* [top_n * max_T]: names of out-of-vocabulary ids */
    float *dense;     /* [max_T] */
} fm_ta;

/* The largest value n examples store (0 if none): the paper quantises against it (save_token_act:
 * the max over a feature's examples). */
static float stored_max(const fm_example *ex, int n) {
    float mx = 0;
    for (int e = 0; e < n; e++)
        for (int j = 0; j < ex[e].nnz; j++) mx = ex[e].val[j] > mx ? ex[e].val[j] : mx;
    return mx;
}

/* The paper's quantisation: ceil(10 * act / max) for act > 0, else 0; at most 10. */
static int quantise(float act, float max) {
    int q = act > 0 && max > 0 ? (int)ceil(act * 10.0 / max) : 0;
    return q < 10 ? q : 10;
}

/* Dense values of an example over its T tokens. */
static void dense(const fm_example *e, float *out) {
    memset(out, 0, (size_t)e->seq->T * sizeof *out);
    for (int j = 0; j < e->nnz; j++) out[e->pos[j]] = e->val[j];
}

static void token_act_build(const fm_feature *f, int n_thr, const fm_vocab *v, int max_T, fm_ta *ta) {
    float qmax = stored_max(f->top, n_thr);
    for (int e = 0; e < n_thr; e++) {
        const fm_example *ex = &f->top[e];
        size_t at = (size_t)e * max_T;
        dense(ex, ta->dense);
        for (int t = 0; t < ex->seq->T; t++) {
            ta->tok[at + t] = fm_vocab_str(v, ex->seq->tokens[t], ta->oov[at + t], sizeof ta->oov[at + t]);
            ta->act[at + t] = quantise(ta->dense[t], qmax);
        }
        ta->ex[e] = (fm_token_act){.n = ex->seq->T, .tok = ta->tok + at, .act = ta->act + at};
    }
}

static int analyse(fm_miner *m, int i, const fm_info *info, const fm_ta *ta, fm_fres *r) {
    fm_feature *f = &m->f[i];
    fm_judge_params jp = {.lang_share = info->lang_share, .gran = info->gran};
    if (fm_judge(ta->ex, r->n_thr, &jp, &r->j) != SF_OK) return SF_ERR;
    for (int rule = 0; rule < FM_RULE_COUNT; rule++) r->verdict[rule] = fm_flang_names[r->j.lang[rule].verdict];
    int *label_n = sf_zalloc("per-label counts", (size_t)m->n_labels, sizeof *label_n);
    if (!label_n) return SF_ERR;
    for (int e = 0; e < r->n_thr; e++) label_n[f->top[e].seq->label]++;
    r->verdict[FM_VOTE_LABEL] = fm_flang_names[r->n_thr ? FM_FLANG_MIXED : FM_FLANG_UNKNOWN];
    for (int l = 0; l < m->n_labels; l++)
        if (label_n[l] > info->lang_share * r->n_thr) r->verdict[FM_VOTE_LABEL] = m->labels[l];
    free(label_n);
    return SF_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* JSON                                                                                            */

/* A JSON string; wire data may not be UTF-8, and jansson refuses that. */
static json_t *jstr(const char *s) {
    json_t *j = json_string(s);
    return j ? j : json_string("<invalid UTF-8>");
}

static json_t *jreal(double x) { return isfinite(x) ? json_real(x) : json_null(); }

/* Shared JSON values for the millions of [token, act] pairs: one string per vocabulary entry, made
 * on first use, and the integers 0..10 (jansson reference-counts values, so arrays can share them).
 * One cache per writer thread: values are never shared between threads. */
typedef struct fm_jcache {
    const fm_vocab *v;
    json_t **tok; /* [v->n] */
    json_t *q[11];
} fm_jcache;

static int jcache_init(fm_jcache *c, const fm_vocab *v) {
    c->v = v;
    if (!(c->tok = sf_zalloc("the JSON token strings", (size_t)v->n, sizeof *c->tok))) return SF_ERR;
    for (int i = 0; i <= 10; i++) c->q[i] = json_integer(i);
    return SF_OK;
}

static void jcache_free(fm_jcache *c) {
    for (int i = 0; i < c->v->n; i++) json_decref(c->tok[i]);
    for (int i = 0; i <= 10; i++) json_decref(c->q[i]);
    free(c->tok);
}

/* The display string of id as a JSON value (a new reference). */
static json_t *jcache_tok(fm_jcache *c, int32_t id) {
    char buf[24];
    if (id < 0 || id >= c->v->n) return jstr(fm_vocab_str(c->v, id, buf, sizeof buf));
    if (!c->tok[id]) c->tok[id] = jstr(c->v->s[id]);
    return json_incref(c->tok[id]);
}

/* One example: its sequence (token ids), and the feature's values sparsely, where it fired. */
static json_t *example_json(const fm_miner *m, const fm_example *e) {
    json_t *o = json_object();
    json_object_set_new(o, "doc_id", json_integer(e->seq->doc_id));
    json_object_set_new(o, "pos", json_integer(e->seq->pos));
    json_object_set_new(o, "label", jstr(m->labels[e->seq->label]));
    json_object_set_new(o, "seq", json_integer((json_int_t)e->seq_no));
    json_object_set_new(o, "peak", jreal(e->peak));
    json_object_set_new(o, "peak_pos", json_integer(e->peak_pos));
    json_t *tk = json_array(), *ap = json_array(), *av = json_array();
    for (int t = 0; t < e->seq->T; t++) json_array_append_new(tk, json_integer(e->seq->tokens[t]));
    for (int j = 0; j < e->nnz; j++) {
        json_array_append_new(ap, json_integer(e->pos[j]));
        json_array_append_new(av, jreal(e->val[j]));
    }
    json_object_set_new(o, "tokens", tk);
    json_object_set_new(o, "act_pos", ap);
    json_object_set_new(o, "act_val", av);
    return o;
}

static json_t *feature_json(fm_miner *m, int i, const fm_vocab *v, const fm_fres *r, const fm_logits *lg,
                            const fm_ta *ta, fm_jcache *jc) {
    fm_feature *f = &m->f[i];
    json_t *o = json_object();
    char buf[24];
    /* The paper's schema: the examples above the threshold, as judged (fm_ta). */
    json_t *taj = json_array();
    for (int e = 0; e < r->n_thr; e++) {
        const fm_example *ex = &f->top[e];
        json_t *ex_j = json_array();
        for (int t = 0; t < ex->seq->T; t++) {
            json_t *pair = json_array();
            json_array_append_new(pair, jcache_tok(jc, ex->seq->tokens[t]));
            json_array_append(pair, jc->q[ta->ex[e].act[t]]);
            json_array_append_new(ex_j, pair);
        }
        json_array_append_new(taj, ex_j);
    }
    json_object_set_new(o, "token_act", taj);
    json_object_set_new(o, "feature", json_integer(i));
    json_object_set_new(o, "max_act", jreal(f->max));
    if (m->cfg.known_max) json_object_set_new(o, "max_preact", jreal(m->cfg.known_max[i]));
    json_object_set_new(o, "threshold", jreal(fm_miner_threshold(m, i)));
    json_object_set_new(o, "density", jreal(m->tokens ? (double)f->fired / (double)m->tokens : 0));
    json_object_set_new(o, "mean_act", jreal(f->fired ? f->sum / (double)f->fired : 0));
    json_object_set_new(o, "fired_tokens", json_integer((json_int_t)f->fired));
    json_object_set_new(o, "fired_sequences", json_integer((json_int_t)f->seqs));
    json_object_set_new(o, "n_above_threshold", json_integer(r->n_thr));
    json_t *ex = json_array();
    for (int e = 0; e < f->n_top; e++) {
        json_t *ej = example_json(m, &f->top[e]);
        json_object_set_new(ej, "above_threshold", json_boolean(e < r->n_thr));
        json_array_append_new(ex, ej);
    }
    json_object_set_new(o, "examples", ex);
    json_t *qe = json_array(), *qi = json_array();
    for (int b = f->n_buckets - 1; b >= 0; b--) { /* highest interval first, as dashboards show them */
        if (!f->bk[b].seqs) continue;
        double lo, hi;
        const fm_example *ivx = fm_miner_interval(m, i, b, &lo, &hi);
        json_t *ij = json_object();
        json_object_set_new(ij, "lo", jreal(lo));
        json_object_set_new(ij, "hi", jreal(hi));
        json_object_set_new(ij, "sequences", json_integer((json_int_t)f->bk[b].seqs));
        json_object_set_new(ij, "examples", json_integer(f->bk[b].n));
        json_array_append_new(qi, ij);
        for (int e = 0; e < f->bk[b].n; e++) {
            const fm_example *ex = &ivx[e];
            json_t *ej = example_json(m, ex);
            int q = f->max > 0 ? (int)(ex->peak / f->max * FM_INTERVALS) : 0;
            json_object_set_new(ej, "interval", json_integer(q < FM_INTERVALS ? q : FM_INTERVALS - 1));
            json_object_set_new(ej, "interval_lo", jreal(lo));
            json_object_set_new(ej, "interval_hi", jreal(hi));
            json_array_append_new(qe, ej);
        }
    }
    json_object_set_new(o, "quantile_intervals", qi);
    json_object_set_new(o, "quantile_examples", qe);
    json_t *h = json_object(), *hc = json_array();
    json_object_set_new(h, "bin_width", jreal(f->hist.width));
    for (int b = 0; f->hist.counts && b < m->cfg.hist_bins; b++)
        json_array_append_new(hc, json_integer((json_int_t)f->hist.counts[b]));
    json_object_set_new(h, "counts", hc);
    json_object_set_new(o, "histogram", h);

    json_t *lang = json_object(), *counts = json_object();
    for (int vt = 0; vt < FM_VOTES; vt++) json_object_set_new(lang, fm_vote_names[vt], jstr(r->verdict[vt]));
    for (int rule = 0; rule < FM_RULE_COUNT; rule++) {
        json_t *c = json_object();
        for (int l = 0; l < FM_LANG_COUNT; l++) json_object_set_new(c, fm_lang_names[l], json_integer(r->j.lang[rule].counts[l]));
        json_object_set_new(counts, fm_vote_names[rule], c);
    }
    json_object_set_new(lang, "counts", counts);
    json_object_set_new(o, "language", lang);

    json_t *g = json_object();
    json_object_set_new(g, "class", json_string(fm_gran_names[r->j.gran.gran]));
    json_object_set_new(g, "top_token", jstr(r->j.gran.top_token));
    json_object_set_new(g, "top_share", jreal(r->j.gran.top_share));
    json_object_set_new(g, "distinct_peak_tokens", json_integer(r->j.gran.distinct));
    json_object_set_new(g, "distinct_share", jreal(r->j.gran.distinct_share));
    json_object_set_new(g, "context_share", jreal(r->j.gran.context_share));
    json_object_set_new(g, "active_share", jreal(r->j.gran.active_share));
    json_object_set_new(o, "granularity", g);

    if (lg) {
        json_t *l = json_object();
        const int32_t *ids[2] = {lg->pos_id + (size_t)i * lg->n_top, lg->neg_id + (size_t)i * lg->n_top};
        const float *vals[2] = {lg->pos_val + (size_t)i * lg->n_top, lg->neg_val + (size_t)i * lg->n_top};
        for (int side = 0; side < 2; side++) {
            json_t *a = json_array();
            for (int j = 0; j < lg->n_top && ids[side][j] >= 0; j++) {
                json_t *pair = json_array();
                json_array_append_new(pair, jstr(fm_vocab_str(v, ids[side][j], buf, sizeof buf)));
                json_array_append_new(pair, jreal(vals[side][j]));
                json_array_append_new(pair, json_integer(ids[side][j]));
                json_array_append_new(a, pair);
            }
            json_object_set_new(l, side ? "negative" : "positive", a);
        }
        json_object_set_new(o, "logits", l);
    }
    return o;
}

/* Neuronpedia-style feature JSON: the field names of Neuronpedia's feature pages (statistics,
 * logit effects, histogram bars, activation records with every token's value). */
static json_t *neuronpedia_json(const fm_miner *m, int i, const fm_info *info, const fm_logits *lg, float *acts,
                                fm_jcache *jc) {
    const fm_feature *f = &m->f[i];
    json_t *o = json_object();
    char buf[24];
    json_object_set_new(o, "modelId", jstr(info->model ? info->model : ""));
    json_object_set_new(o, "layer", jstr(info->hook ? info->hook : ""));
    snprintf(buf, sizeof buf, "%d", i);
    json_object_set_new(o, "index", json_string(buf));
    json_object_set_new(o, "maxActApprox", jreal(f->max));
    json_object_set_new(o, "frac_nonzero", jreal(m->tokens ? (double)f->fired / (double)m->tokens : 0));
    const char *keys[2][2] = {{"pos_str", "pos_values"}, {"neg_str", "neg_values"}};
    for (int side = 0; lg && side < 2; side++) {
        const int32_t *ids = (side ? lg->neg_id : lg->pos_id) + (size_t)i * lg->n_top;
        const float *vals = (side ? lg->neg_val : lg->pos_val) + (size_t)i * lg->n_top;
        json_t *str = json_array(), *val = json_array();
        for (int j = 0; j < lg->n_top && ids[j] >= 0; j++) {
            json_array_append_new(str, jcache_tok(jc, ids[j]));
            json_array_append_new(val, jreal(vals[j]));
        }
        json_object_set_new(o, keys[side][0], str);
        json_object_set_new(o, keys[side][1], val);
    }
    json_t *hh = json_array(), *hv = json_array();
    for (int b = 0; f->hist.counts && b < m->cfg.hist_bins; b++) {
        json_array_append_new(hh, json_integer((json_int_t)f->hist.counts[b]));
        json_array_append_new(hv, jreal((b + 0.5) * f->hist.width));
    }
    json_object_set_new(o, "freq_hist_data_bar_heights", hh);
    json_object_set_new(o, "freq_hist_data_bar_values", hv);
    json_t *recs = json_array();
    for (int e = 0; e < f->n_top; e++) {
        const fm_example *ex = &f->top[e];
        json_t *r = json_object(), *tk = json_array(), *vs = json_array();
        dense(ex, acts);
        for (int t = 0; t < ex->seq->T; t++) {
            json_array_append_new(tk, jcache_tok(jc, ex->seq->tokens[t]));
            json_array_append_new(vs, jreal(acts[t]));
        }
        json_object_set_new(r, "tokens", tk);
        json_object_set_new(r, "values", vs);
        json_object_set_new(r, "maxValue", jreal(ex->peak));
        json_object_set_new(r, "maxValueTokenIndex", json_integer(ex->peak_pos));
        json_array_append_new(recs, r);
    }
    json_object_set_new(o, "activations", recs);
    return o;
}

/* Serialises in memory and writes once: jansson's file output makes one fwrite per token. */
static int dump_json(json_t *j, const char *path) {
    size_t len = json_dumpb(j, NULL, 0, JSON_COMPACT | JSON_REAL_PRECISION(9));
    char *text = len ? sf_alloc("the JSON text", len, 1) : NULL;
    if (len && !text) {
        json_decref(j);
        return sf_fail("cannot write %s: %s", path, sf_last_error());
    }
    int rc = SF_ERR;
    if (text && json_dumpb(j, text, len, JSON_COMPACT | JSON_REAL_PRECISION(9)) == len) {
        FILE *fp = fopen(path, "w");
        if (fp) {
            int ok = fwrite(text, 1, len, fp) == len;
            ok &= fclose(fp) == 0;
            if (ok) rc = SF_OK;
        }
    }
    if (rc != SF_OK) sf_fail("cannot write %s: %s", path, text ? strerror(errno) : "JSON serialisation failed");
    free(text);
    json_decref(j);
    return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* HTML                                                                                            */

void fm_html_text(FILE *fp, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", fp); break;
        case '<': fputs("&lt;", fp); break;
        case '>': fputs("&gt;", fp); break;
        case '"': fputs("&quot;", fp); break;
        case '\n': fputs("\xE2\x86\xB5", fp); break; /* ↵ */
        default: fputc(*s, fp);
        }
    }
}

static const char *css =
    "body{font-family:system-ui,\"Noto Sans\",\"Noto Sans CJK JP\",\"Hiragino Sans\",\"Yu Gothic\",\"Meiryo\",sans-serif;"
    "margin:1.5em;color:#222}.ex{font-family:ui-monospace,\"Noto Sans Mono CJK JP\",\"MS Gothic\",monospace}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{cursor:pointer;background:#f3f3f3}"
    "td.t{text-align:left}.ex{white-space:pre-wrap;line-height:1.7;border-bottom:1px solid #eee;"
    "padding:4px 0}.ex span{border-radius:2px}.meta{color:#777;font-size:85%}";

static void html_head(FILE *fp, const char *title) {
    fprintf(fp, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>");
    fm_html_text(fp, title);
    fprintf(fp, "</title><style>%s</style></head><body>\n", css);
}

/* The byte of a byte-fallback piece "<0xHH>", or -1. */
static int byte_piece(const char *s) {
    unsigned b;
    char end;
    return strlen(s) == 6 && sscanf(s, "<0x%2X%c", &b, &end) == 2 && end == '>' ? (int)b : -1;
}

/* How many of the n tokens from tokens[0] are byte pieces that together spell one UTF-8 character
 * (written into ch, NUL-terminated); 0 if tokens[0] does not start one. */
static int byte_char(const fm_vocab *v, const int32_t *tokens, int n, char ch[5]) {
    char buf[24];
    for (int k = 1; k <= 4 && k <= n; k++) {
        int b = byte_piece(fm_vocab_str(v, tokens[k - 1], buf, sizeof buf));
        if (b < 0) return 0;
        ch[k - 1] = (char)b;
        utf8proc_int32_t c;
        if (utf8proc_iterate((const utf8proc_uint8_t *)ch, k, &c) == k) {
            ch[k] = 0;
            return k;
        }
    }
    return 0;
}

/* One example: each token shaded orange by its value relative to vmax, value in the tooltip. Byte
 * pieces that spell a UTF-8 character show as that character (one span, shaded by their largest
 * value); others as the piece. */
static void html_example(FILE *fp, const fm_miner *m, const fm_example *e, const fm_vocab *v, float vmax,
                         float *acts) {
    char buf[24], ch[5];
    dense(e, acts);
    fprintf(fp, "<div class=\"ex\"><span class=\"meta\">peak %.4g &middot; doc %lld &middot; pos %d &middot; ",
            e->peak, (long long)e->seq->doc_id, e->seq->pos);
    fm_html_text(fp, m->labels[e->seq->label]);
    fputs("</span><br>", fp);
    for (int t = 0; t < e->seq->T;) {
        int k = byte_char(v, e->seq->tokens + t, e->seq->T - t, ch);
        float act = acts[t];
        for (int j = 1; j < k; j++) act = fmaxf(act, acts[t + j]);
        double a = vmax > 0 ? act / vmax : 0;
        if (a > 0) fprintf(fp, "<span style=\"background:rgba(255,140,0,%.3f)\" title=\"%.4g\">", a > 1 ? 1 : a, act);
        else fputs("<span>", fp);
        fm_html_text(fp, k ? ch : fm_vocab_str(v, e->seq->tokens[t], buf, sizeof buf));
        fputs("</span>", fp);
        t += k ? k : 1;
    }
    fputs("</div>\n", fp);
}

static void html_histogram(FILE *fp, const fm_miner *m, const fm_feature *f) {
    int nb = m->cfg.hist_bins, last = 0;
    uint64_t top = 0;
    for (int b = 0; f->hist.counts && b < nb; b++) {
        if (f->hist.counts[b] > top) top = f->hist.counts[b];
        if (f->hist.counts[b]) last = b;
    }
    if (!top) return;
    int shown = last + 1, W = 600, H = 140;
    double bw = (double)W / shown;
    fprintf(fp, "<h2>Activation histogram</h2><svg width=\"%d\" height=\"%d\" xmlns=\"http://www.w3.org/2000/svg\">", W, H + 20);
    for (int b = 0; b < shown; b++) {
        double h = (double)f->hist.counts[b] / (double)top * H;
        fprintf(fp, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#f08c00\"><title>[%.4g, %.4g): %llu</title></rect>",
                b * bw, H - h, bw * 0.9, h, b * f->hist.width, (b + 1) * f->hist.width,
                (unsigned long long)f->hist.counts[b]);
    }
    fprintf(fp, "<text x=\"0\" y=\"%d\" font-size=\"11\">0</text><text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\">%.4g</text></svg>\n",
            H + 14, W, H + 14, shown * f->hist.width);
}

static int html_feature(const char *path, fm_miner *m, int i, const fm_vocab *v, const fm_fres *r,
                        const fm_logits *lg, float *acts) {
    FILE *fp = fopen(path, "w");
    if (!fp) return sf_fail("cannot write %s: %s", path, strerror(errno));
    const fm_feature *f = &m->f[i];
    char title[64], buf[24];
    snprintf(title, sizeof title, "Feature %d", i);
    html_head(fp, title);
    fprintf(fp, "<p><a href=\"../index.html\">&larr; all features</a></p><h1>Feature %d</h1>\n<table>", i);
    fprintf(fp, "<tr><th>max</th><td>%.4g</td></tr><tr><th>density</th><td>%.3e</td></tr>"
                "<tr><th>mean</th><td>%.4g</td></tr><tr><th>sequences fired</th><td>%llu</td></tr>"
                "<tr><th>examples &gt; %.2g&middot;max</th><td>%d</td></tr>",
            f->max, m->tokens ? (double)f->fired / (double)m->tokens : 0, f->fired ? f->sum / (double)f->fired : 0,
            (unsigned long long)f->seqs, m->cfg.frac, r->n_thr);
    for (int vt = 0; vt < FM_VOTES; vt++) {
        fprintf(fp, "<tr><th>language (%s)</th><td class=\"t\">", fm_vote_names[vt]);
        fm_html_text(fp, r->verdict[vt]);
        fputs("</td></tr>", fp);
    }
    fprintf(fp, "<tr><th>granularity</th><td class=\"t\">%s: top peak token &ldquo;", fm_gran_names[r->j.gran.gran]);
    fm_html_text(fp, r->j.gran.top_token);
    fprintf(fp, "&rdquo; in %.0f%% of examples, %d distinct peak tokens, shared neighbour %.0f%%, active on %.0f%% of "
                "tokens</td></tr></table>\n",
            100 * r->j.gran.top_share, r->j.gran.distinct, 100 * r->j.gran.context_share, 100 * r->j.gran.active_share);
    html_histogram(fp, m, f);
    if (lg) {
        fputs("<h2>Logit effects</h2><table><tr><th>promoted</th><th>logit</th><th>suppressed</th><th>logit</th></tr>", fp);
        for (int j = 0; j < lg->n_top; j++) {
            size_t at = (size_t)i * lg->n_top + j;
            fputs("<tr><td class=\"t\">", fp);
            if (lg->pos_id[at] >= 0) fm_html_text(fp, fm_vocab_str(v, lg->pos_id[at], buf, sizeof buf));
            fprintf(fp, "</td><td>%+.3f</td><td class=\"t\">", lg->pos_id[at] >= 0 ? lg->pos_val[at] : 0);
            if (lg->neg_id[at] >= 0) fm_html_text(fp, fm_vocab_str(v, lg->neg_id[at], buf, sizeof buf));
            fprintf(fp, "</td><td>%+.3f</td></tr>", lg->neg_id[at] >= 0 ? lg->neg_val[at] : 0);
        }
        fputs("</table>\n", fp);
    }
    float vmax = stored_max(f->top, f->n_top);
    fputs(m->cfg.sampling == FM_SAMPLING_PAPER ? "<h2>Examples (the paper's sampling: the first in shuffled order "
                                                 "above the threshold)</h2>\n"
                                               : "<h2>Top examples</h2>\n",
          fp);
    for (int e = 0; e < f->n_top; e++) html_example(fp, m, &f->top[e], v, vmax, acts);
    if (f->n_res)
        fprintf(fp, "<h2>Examples across the activation range</h2>\n<p>Up to %d sequences sampled uniformly per "
                    "interval of peak activation.</p>\n", m->cfg.reservoir);
    for (int b = f->n_buckets - 1; b >= 0; b--) {
        if (!f->bk[b].n) continue;
        double lo, hi;
        const fm_example *ivx = fm_miner_interval(m, i, b, &lo, &hi);
        fprintf(fp, "<h3>[%.4g, %.4g): %llu sequences, %d shown</h3>\n", lo, hi, (unsigned long long)f->bk[b].seqs,
                f->bk[b].n);
        for (int e = 0; e < f->bk[b].n; e++)
            html_example(fp, m, &ivx[e], v, f->max, acts);
    }
    fputs("</body></html>\n", fp);
    int bad = ferror(fp);
    if (fclose(fp) != 0 || bad) return sf_fail("cannot write %s", path);
    return SF_OK;
}

static const char *sort_js =
    "<script>document.querySelectorAll('#features th').forEach(function(th,i){th.addEventListener('click',function(){"
    "var tb=document.querySelector('#features tbody'),rows=Array.prototype.slice.call(tb.rows),"
    "num=th.dataset.num==='1',dir=th.dataset.dir==='desc'?1:-1;th.dataset.dir=dir<0?'desc':'asc';"
    "rows.sort(function(a,b){var x=a.cells[i].dataset.v||a.cells[i].textContent,y=b.cells[i].dataset.v||b.cells[i].textContent;"
    "if(num){x=+x;y=+y;}return(x<y?-1:x>y?1:0)*dir;});rows.forEach(function(r){tb.appendChild(r);});});});"
    /* Search: rows whose text (feature number, languages, granularity, top token) contains every word. */
    "document.getElementById('filter').addEventListener('input',function(){"
    "var w=this.value.toLowerCase().split(/\\s+/).filter(Boolean),n=0,rows=document.querySelectorAll('#features tbody tr');"
    "rows.forEach(function(r){var t=r.textContent.toLowerCase(),ok=w.every(function(x){return t.indexOf(x)>=0;});"
    "r.style.display=ok?'':'none';n+=ok;});document.getElementById('shown').textContent=n+' of '+rows.length+' shown';});</script>\n";

/* ---------------------------------------------------------------------------------------------- */

/* The per-feature files are written by several threads, each taking the next feature. */
typedef struct fm_writer {
    fm_miner *m;
    const fm_vocab *v;
    const fm_info *info;
    const fm_logits *lg;
    const char *out_dir;
    fm_fres *res;
    int max_T;
    int next;   /* next feature to take (atomic) */
    int failed; /* atomic */
    pthread_mutex_t lock;
    char err[1024]; /* the first error, for the calling thread's sf_fail */
} fm_writer;

static int write_feature(fm_writer *w, int i, fm_jcache *jc, fm_ta *ta) {
    char path[4096];
    fm_fres *r = &w->res[i];
    fm_feature *f = &w->m->f[i];
    fm_miner_sort(w->m, i);
    float thr = fm_miner_threshold(w->m, i);
    while (r->n_thr < f->n_top && f->top[r->n_thr].peak > thr) r->n_thr++;
    token_act_build(f, r->n_thr, w->v, w->max_T, ta);
    if (analyse(w->m, i, w->info, ta, r) != SF_OK) return SF_ERR;
    snprintf(path, sizeof path, "%s/features/%d.json", w->out_dir, i);
    json_t *fj = feature_json(w->m, i, w->v, r, w->lg, ta, jc);
    if (w->info->pairs) json_object_set_new(fj, "pairs", fm_pairs_feature_json(w->info->pairs, i));
    if (dump_json(fj, path) != SF_OK) return SF_ERR;
    snprintf(path, sizeof path, "%s/neuronpedia/%d.json", w->out_dir, i);
    if (w->info->neuronpedia && dump_json(neuronpedia_json(w->m, i, w->info, w->lg, ta->dense, jc), path) != SF_OK)
        return SF_ERR;
    snprintf(path, sizeof path, "%s/features/%d.html", w->out_dir, i);
    if (w->info->html && html_feature(path, w->m, i, w->v, r, w->lg, ta->dense) != SF_OK) return SF_ERR;
    return SF_OK;
}

/* Records this thread's error (sf_last_error) as the writers' first, and stops them all. */
static void writer_fail(fm_writer *w) {
    pthread_mutex_lock(&w->lock);
    if (!w->failed) snprintf(w->err, sizeof w->err, "%s", sf_last_error());
    __atomic_store_n(&w->failed, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&w->lock);
}

static void *writer_thread(void *arg) {
    fm_writer *w = arg;
    size_t top = (size_t)(w->m->cfg.top_n > 0 ? w->m->cfg.top_n : 1), cells = top * (size_t)w->max_T;
    fm_ta ta = {.ex = sf_alloc("a writer's examples", top, sizeof *ta.ex)};
    if (ta.ex) ta.tok = sf_alloc("a writer's token strings", cells, sizeof *ta.tok);
    if (ta.tok) ta.act = sf_alloc("a writer's quantised values", cells, sizeof *ta.act);
    if (ta.act) ta.oov = sf_alloc("a writer's unknown-token names", cells, sizeof *ta.oov);
    if (ta.oov) ta.dense = sf_alloc("a writer's dense values", (size_t)w->max_T, sizeof *ta.dense);
    fm_jcache jc = {0};
    if (!ta.dense || jcache_init(&jc, w->v) != SF_OK) {
        writer_fail(w);
    } else {
        for (;;) {
            int i = __atomic_fetch_add(&w->next, 1, __ATOMIC_RELAXED);
            if (i >= w->m->cfg.n_features || __atomic_load_n(&w->failed, __ATOMIC_RELAXED)) break;
            if (!w->m->f[i].fired) continue;
            if (write_feature(w, i, &jc, &ta) != SF_OK) {
                writer_fail(w);
                break;
            }
        }
    }
    if (jc.tok) jcache_free(&jc);
    free(ta.ex);
    free(ta.tok);
    free(ta.act);
    free(ta.oov);
    free(ta.dense);
    return NULL;
}

/* The longest sequence among the stored examples (the token_act tables' width). */
static int longest_example(const fm_miner *m) {
    int max_T = 1;
    for (int i = 0; i < m->cfg.n_features; i++) {
        for (int e = 0; e < m->f[i].n_top; e++)
            if (m->f[i].top[e].seq->T > max_T) max_T = m->f[i].top[e].seq->T;
        for (int b = 0; b < m->f[i].n_buckets; b++) {
            double lo, hi;
            const fm_example *ivx = fm_miner_interval(m, i, b, &lo, &hi);
            for (int e = 0; e < m->f[i].bk[b].n; e++)
                if (ivx[e].seq->T > max_T) max_T = ivx[e].seq->T;
        }
    }
    return max_T;
}

/* Every feature's files, on info->threads threads (0: one a core, at most 64); res[i] gets feature i's results. */
static int write_features(const char *out_dir, fm_miner *m, const fm_vocab *v, const fm_info *info,
                          const fm_logits *lg, fm_fres *res) {
    fm_writer w = {.m = m, .v = v, .info = info, .lg = lg, .out_dir = out_dir, .res = res, .max_T = longest_example(m)};
    pthread_mutex_init(&w.lock, NULL);
    int n_threads = info->threads > 0 ? info->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    n_threads = n_threads < 1 ? 1 : n_threads > 64 ? 64 : n_threads;
    pthread_t th[64];
    int started = 0;
    while (started < n_threads - 1 && pthread_create(&th[started], NULL, writer_thread, &w) == 0) started++;
    writer_thread(&w); /* this thread works too */
    for (int t = 0; t < started; t++) pthread_join(th[t], NULL);
    pthread_mutex_destroy(&w.lock);
    return w.failed ? sf_fail("%s", w.err) : SF_OK;
}

/* The counts over the alive features that summary.json and index.html show. */
typedef struct fm_counts {
    int alive;
    int lang[FM_VOTES][FM_FLANG_COUNT]; /* features per language verdict, per rule */
    int gran[FM_GRAN_COUNT];            /* features per granularity */
} fm_counts;

/* summary.json's object; c gets the counts. */
static json_t *summary_json(const fm_miner *m, const fm_info *info, const fm_fres *res, fm_counts *c) {
    int n = m->cfg.n_features;
    json_t *sum = json_object(), *feats = json_array();
    for (int i = 0; i < n; i++) {
        const fm_feature *f = &m->f[i];
        if (!f->fired) continue;
        c->alive++;
        for (int vt = 0; vt < FM_VOTES; vt++) {
            int k = FM_FLANG_MIXED; /* a corpus label other than en/ja counts as mixed */
            for (int l = 0; l < FM_FLANG_COUNT; l++)
                if (strcmp(res[i].verdict[vt], fm_flang_names[l]) == 0) k = l;
            c->lang[vt][k]++;
        }
        c->gran[res[i].j.gran.gran]++;
        json_t *fj = json_object();
        json_object_set_new(fj, "id", json_integer(i));
        json_object_set_new(fj, "max_act", jreal(f->max));
        json_object_set_new(fj, "density", jreal((double)f->fired / (double)m->tokens));
        json_object_set_new(fj, "mean_act", jreal(f->sum / (double)f->fired));
        json_object_set_new(fj, "n_examples", json_integer(res[i].n_thr));
        for (int vt = 0; vt < FM_VOTES; vt++) {
            char key[32];
            snprintf(key, sizeof key, "lang_%s", fm_vote_names[vt]);
            json_object_set_new(fj, key, jstr(res[i].verdict[vt]));
        }
        json_object_set_new(fj, "granularity", json_string(fm_gran_names[res[i].j.gran.gran]));
        json_object_set_new(fj, "top_token", jstr(res[i].j.gran.top_token));
        json_object_set_new(fj, "top_share", jreal(res[i].j.gran.top_share));
        if (info->pairs) json_object_set_new(fj, "pairs", fm_pairs_feature_json(info->pairs, i));
        json_array_append_new(feats, fj);
    }

    json_object_set_new(sum, "schema", json_string("saeflow.feature_miner.summary/1"));
    json_object_set_new(sum, "checkpoint", jstr(info->checkpoint ? info->checkpoint : ""));
    json_object_set_new(sum, "hook", jstr(info->hook ? info->hook : ""));
    json_object_set_new(sum, "model", jstr(info->model ? info->model : ""));
    json_object_set_new(sum, "sae", jstr(info->sae_dir ? info->sae_dir : ""));
    json_object_set_new(sum, "d", json_integer(info->d));
    json_object_set_new(sum, "k", json_integer(info->k));
    json_object_set_new(sum, "n_features", json_integer(n));
    json_object_set_new(sum, "tokens", json_integer((json_int_t)m->tokens));
    json_object_set_new(sum, "sequences", json_integer((json_int_t)m->sequences));
    json_object_set_new(sum, "alive", json_integer(c->alive));
    json_object_set_new(sum, "dead_in_stream", json_integer(n - c->alive));
    json_object_set_new(sum, "nonfinite_values", json_integer((json_int_t)m->nonfinite));
    json_t *params = json_object();
    json_object_set_new(params, "top_n", json_integer(m->cfg.top_n));
    json_object_set_new(params, "threshold_frac", jreal(m->cfg.frac));
    json_object_set_new(params, "sampling", json_string(m->cfg.sampling == FM_SAMPLING_PAPER ? "paper" : "strongest"));
    json_object_set_new(params, "seed", json_integer((json_int_t)m->cfg.seed));
    json_object_set_new(params, "reservoir", json_integer(m->cfg.reservoir));
    json_object_set_new(params, "lang_share", jreal(info->lang_share));
    json_object_set_new(params, "min_examples", json_integer(info->gran.min_examples));
    json_object_set_new(params, "token_share", jreal(info->gran.token_share));
    json_object_set_new(params, "distinct_share", jreal(info->gran.distinct_share));
    json_object_set_new(params, "context_share", jreal(info->gran.context_share));
    json_object_set_new(params, "dense_share", jreal(info->gran.dense_share));
    json_object_set_new(sum, "params", params);
    json_t *lang = json_object();
    for (int vt = 0; vt < FM_VOTES; vt++) {
        json_t *per = json_object();
        for (int l = 0; l < FM_FLANG_COUNT; l++) json_object_set_new(per, fm_flang_names[l], json_integer(c->lang[vt][l]));
        json_object_set_new(lang, fm_vote_names[vt], per);
    }
    json_object_set_new(sum, "language", lang);
    json_t *gran = json_object();
    for (int g = 0; g < FM_GRAN_COUNT; g++) json_object_set_new(gran, fm_gran_names[g], json_integer(c->gran[g]));
    json_object_set_new(sum, "granularity", gran);
    if (info->pairs) json_object_set_new(sum, "pairs", fm_pairs_summary_json(info->pairs, c->alive));
    json_object_set_new(sum, "features", feats);
    return sum;
}

/* index.html: the run, its counts, and a sortable table of the alive features. */
static int write_index_html(const char *out_dir, const fm_miner *m, const fm_info *info, const fm_fres *res,
                            const fm_counts *c) {
    char path[4096];
    int n = m->cfg.n_features, alive = c->alive, rc = SF_OK;
    snprintf(path, sizeof path, "%s/index.html", out_dir);
    FILE *fp = fopen(path, "w");
    if (!fp) {
        rc = sf_fail("cannot write %s: %s", path, strerror(errno));
    } else {
        html_head(fp, "saeflow features");
        fputs("<h1>SAE features</h1><p>", fp);
        fm_html_text(fp, info->checkpoint ? info->checkpoint : "");
        fputs(" &middot; ", fp);
        fm_html_text(fp, info->hook ? info->hook : "");
        fprintf(fp, " &middot; %d features, %d alive in %llu tokens.</p>\n<p>Language (paper rule): ", n, alive,
                (unsigned long long)m->tokens);
        for (int l = 0; l < FM_FLANG_COUNT; l++) fprintf(fp, "%s %d &nbsp; ", fm_flang_names[l], c->lang[FM_RULE_PAPER][l]);
        fputs("<br>Granularity: ", fp);
        for (int g = 0; g < FM_GRAN_COUNT; g++) fprintf(fp, "%s %d &nbsp; ", fm_gran_names[g], c->gran[g]);
        if (info->pairs)
            fprintf(fp, "<br>Cross-lingual (pairs, our test): %d of %d alive (%d tested on %d translation pairs)",
                    info->pairs->n_cross, alive, info->pairs->n_tested, info->pairs->n_mined);
        fputs("</p>\n<p><input id=\"filter\" type=\"search\" placeholder=\"search: feature, language, granularity, token\" "
              "size=\"50\"> <span id=\"shown\"></span></p>\n<table id=\"features\"><thead><tr><th data-num=\"1\">feature</th><th data-num=\"1\">max</th>"
              "<th data-num=\"1\">density</th><th data-num=\"1\">mean</th><th data-num=\"1\">examples</th>"
              "<th>lang (paper)</th><th>lang (ascii)</th><th>lang (script)</th><th>lang (label)</th><th>granularity</th>"
              "<th>top peak token</th></tr></thead><tbody>\n", fp);
        for (int i = 0; i < n; i++) {
            const fm_feature *f = &m->f[i];
            if (!f->fired) continue;
            double dens = (double)f->fired / (double)m->tokens;
            fprintf(fp, "<tr><td data-v=\"%d\"><a href=\"features/%d.html\">%d</a></td><td>%.4g</td>"
                        "<td data-v=\"%.9g\">%.3e</td><td>%.4g</td><td>%d</td>",
                    i, i, i, f->max, dens, dens, f->sum / (double)f->fired, res[i].n_thr);
            for (int vt = 0; vt < FM_VOTES; vt++) {
                fputs("<td class=\"t\">", fp);
                fm_html_text(fp, res[i].verdict[vt]);
                fputs("</td>", fp);
            }
            fprintf(fp, "<td class=\"t\">%s</td><td class=\"t\">", fm_gran_names[res[i].j.gran.gran]);
            fm_html_text(fp, res[i].j.gran.top_token);
            fputs("</td></tr>\n", fp);
        }
        fputs("</tbody></table>\n", fp);
        fputs(sort_js, fp);
        fputs("</body></html>\n", fp);
        int bad = ferror(fp);
        if (fclose(fp) != 0 || bad) rc = sf_fail("cannot write %s", path);
    }
    return rc;
}

int fm_write_outputs(const char *out_dir, fm_miner *m, const fm_vocab *v, const fm_info *info,
                     const fm_logits *lg) {
    char path[4096];
    snprintf(path, sizeof path, "%s/features", out_dir);
    if (sf_mkdirs(path) != SF_OK) return SF_ERR;
    snprintf(path, sizeof path, "%s/neuronpedia", out_dir);
    if (info->neuronpedia && sf_mkdirs(path) != SF_OK) return SF_ERR;
    fm_fres *res = sf_zalloc("per-feature results", (size_t)m->cfg.n_features, sizeof *res);
    if (!res) return SF_ERR;
    int rc = write_features(out_dir, m, v, info, lg, res);
    fm_counts c = {0};
    if (rc == SF_OK) {
        json_t *sum = summary_json(m, info, res, &c);
        snprintf(path, sizeof path, "%s/summary.json", out_dir);
        rc = dump_json(sum, path);
    }
    if (rc == SF_OK && info->html) rc = write_index_html(out_dir, m, info, res, &c);
    free(res);
    return rc;
}
