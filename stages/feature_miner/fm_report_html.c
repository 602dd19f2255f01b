/* fm_report_html.c — see fm_report_html.h.
 *
 * Every chart is a line chart over training: the x-axis is training tokens per model parameter on
 * a log scale when every run knows both (the suite's checkpoints.json), else the training step
 * (linear), else the runs' order. Checkpoints that saw no tokens yet (step 0) sit on a tick "0" one
 * decade left of the first seen-tokens decade. The y-axis starts at zero or below (a zero line),
 * with gridlines at 1-2-5 steps, labelled ticks and each point's value printed beside it. Points
 * carry data-x / data-v attributes with the plotted numbers, so tests can read them back. */
#include "fm_report_html.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "saeflow.h"

void fm_report_fmt_num(char *buf, size_t cap, double v, const char *fmt) {
    if (isfinite(v)) snprintf(buf, cap, fmt, v);
    else snprintf(buf, cap, "n/a");
}

void fm_report_fmt_loss(char *buf, size_t cap, const fm_run *x) {
    if (isfinite(x->loss) && isfinite(x->loss_sae)) snprintf(buf, cap, "%.3f (%+.3f)", x->loss, x->loss_sae - x->loss);
    else snprintf(buf, cap, "n/a");
}

/* An href from a page in from_dir to the file dir/name: a relative path between their real paths,
 * so the report and the dashboards can move together. 0 (buf empty) when the file does not exist. */
static int rel_href(char *buf, size_t cap, const char *from_dir, const char *dir, const char *name) {
    char target[PATH_MAX], a[PATH_MAX], b[PATH_MAX];
    buf[0] = 0;
    snprintf(target, sizeof target, "%s/%s", dir, name);
    if (access(target, R_OK) != 0 || !realpath(from_dir, a) || !realpath(target, b)) return 0;
    size_t common = 0;
    for (size_t i = 0; a[i] && a[i] == b[i]; i++)
        if (a[i] == '/') common = i;
    if (strncmp(a, b, strlen(a)) == 0 && b[strlen(a)] == '/') common = strlen(a);
    size_t len = 0;
    for (const char *p = a + common; *p; p++)
        if (*p == '/' && len + 4 < cap) memcpy(buf + len, "../", 3), len += 3;
    snprintf(buf + len, cap - len, "%s", b + common + 1);
    return 1;
}

/* ---------------------------------------------------------------------------------------------- */
/* Axes                                                                                            */

/* One style for report.html and the match pages: a font stack with CJK faces for Japanese tokens. */
#define FM_REPORT_STYLE \
    "<style>body{font-family:system-ui,\"Noto Sans\",\"Noto Sans CJK JP\",\"Hiragino Sans\",\"Yu Gothic\",\"Meiryo\"," \
    "sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{border:1px solid #ccc;" \
    "padding:2px 6px;text-align:right}th{background:#f3f3f3}figure{display:inline-block;margin:0.5em}" \
    "svg text{font-family:inherit}dt{font-weight:bold}dd{margin:0 0 0.4em 1.5em}</style>"

typedef enum { X_TOKENS_PER_PARAM, X_STEP, X_ORDER } x_kind;

typedef struct x_axis {
    x_kind kind;
    double lo, hi;  /* in log10 units for X_TOKENS_PER_PARAM; the "0" tick sits at lo when has_zero */
    int has_zero;
} x_axis;

/* Plot area of every chart, in SVG pixels. */
enum { CH_W = 600, CH_H = 300, CH_L = 62, CH_R = 440, CH_T = 34, CH_B = 240 };

static double x_value(const x_axis *ax, const fm_run *r, int i) {
    if (ax->kind == X_TOKENS_PER_PARAM) return r->tokens_seen / r->parameters;
    if (ax->kind == X_STEP) return (double)r->step;
    return i;
}

static double x_pos(const x_axis *ax, double v) {
    double u = ax->kind == X_TOKENS_PER_PARAM ? (v > 0 ? log10(v) : ax->lo) : v;
    return CH_L + (CH_R - CH_L) * (ax->hi > ax->lo ? (u - ax->lo) / (ax->hi - ax->lo) : 0.5);
}

/* The 1-2-5 step that cuts span into at most about five intervals. */
static double nice_step(double span) {
    if (!(span > 0)) return 1;
    double p = pow(10, floor(log10(span / 5))), f = span / 5 / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}

static x_axis choose_x(const fm_run *runs, int n) {
    x_axis ax = {X_TOKENS_PER_PARAM, 0, 0, 0};
    double mn = INFINITY, mx = 0;
    int all_tpp = 1, all_step = 1;
    for (int r = 0; r < n; r++) {
        double t = runs[r].tokens_seen / runs[r].parameters;
        if (!(isfinite(t) && t >= 0)) all_tpp = 0;
        else if (t > 0) mn = fmin(mn, t), mx = fmax(mx, t);
        else ax.has_zero = 1;
        if (runs[r].step < 0) all_step = 0;
    }
    if (all_tpp && mx > 0) {
        ax.lo = floor(log10(mn)) - ax.has_zero;
        ax.hi = fmax(ceil(log10(mx)), ax.lo + 1);
        return ax;
    }
    ax.has_zero = 0;
    if (all_step) {
        long smax = 0;
        for (int r = 0; r < n; r++) smax = runs[r].step > smax ? runs[r].step : smax;
        double st = nice_step((double)smax);
        ax.kind = X_STEP, ax.lo = 0, ax.hi = fmax(st, ceil(smax / st) * st);
        return ax;
    }
    ax.kind = X_ORDER, ax.lo = -0.5, ax.hi = n - 0.5;
    return ax;
}

static void x_ticks(FILE *fp, const x_axis *ax, const fm_run *runs, int n) {
    const char *label = ax->kind == X_TOKENS_PER_PARAM ? "training tokens per parameter (log scale)"
                        : ax->kind == X_STEP           ? "training step"
                                                       : "checkpoint";
    if (ax->kind == X_TOKENS_PER_PARAM) {
        for (int k = (int)ax->lo; k <= (int)ax->hi; k++) {
            int zero = ax->has_zero && k == (int)ax->lo;
            double x = CH_L + (CH_R - CH_L) * (k - ax->lo) / (ax->hi - ax->lo);
            fprintf(fp, "<line class=\"xgrid\" x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e4e4e4\"/>", x, CH_T, x, CH_B);
            fprintf(fp, "<text class=\"xtick\" data-v=\"%.17g\" x=\"%.1f\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">%g</text>",
                    zero ? 0.0 : pow(10, k), x, CH_B + 14, zero ? 0.0 : pow(10, k));
        }
        if (ax->has_zero) { /* a break mark: the log scale does not reach 0 */
            double xb = CH_L + (CH_R - CH_L) * 0.5 / (ax->hi - ax->lo);
            for (int j = 0; j < 2; j++)
                fprintf(fp, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#444\" stroke-width=\"1.5\"/>",
                        xb - 5 + 5 * j, CH_B + 5, xb + 5 * j, CH_B - 5);
        }
    } else if (ax->kind == X_STEP) {
        double st = nice_step(ax->hi - ax->lo);
        for (double v = ax->lo; v <= ax->hi + st / 2; v += st) {
            double x = x_pos(ax, v);
            fprintf(fp, "<line class=\"xgrid\" x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e4e4e4\"/>", x, CH_T, x, CH_B);
            fprintf(fp, "<text class=\"xtick\" data-v=\"%.17g\" x=\"%.1f\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">%g</text>",
                    v, x, CH_B + 14, v);
        }
    } else {
        for (int r = 0; r < n; r++) {
            fprintf(fp, "<text class=\"xtick\" data-v=\"%d\" x=\"%.1f\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">", r,
                    x_pos(ax, r), CH_B + 14);
            fm_html_text(fp, runs[r].name);
            fputs("</text>", fp);
        }
    }
    fprintf(fp, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">%s</text>", (CH_L + CH_R) / 2, CH_B + 32, label);
}

/* ---------------------------------------------------------------------------------------------- */
/* Charts                                                                                          */

typedef double (*series_fn)(const fm_run *, int);

/* One line per series over the runs; runs without a value are skipped (the line joins the rest). */
static void svg_lines(FILE *fp, const char *id, const char *title, const char *y_label, const x_axis *ax,
                      const fm_run *runs, int n, int n_series, const char *const *series, const char *const *colors,
                      series_fn value) {
    double vmin = 0, vmax = 0;
    for (int r = 0; r < n; r++)
        for (int s = 0; s < n_series; s++) {
            double v = value(&runs[r], s);
            if (isfinite(v)) vmin = fmin(vmin, v), vmax = fmax(vmax, v);
        }
    if (vmax <= vmin) vmax = vmin + 1;
    double st = nice_step(vmax - vmin), lo = floor(vmin / st) * st, hi = ceil(vmax / st) * st;
    if (hi <= lo) hi = lo + st;
#define YPOS(v) (CH_B - (CH_B - CH_T) * ((v) - lo) / (hi - lo))
    fprintf(fp, "<figure><svg class=\"chart\" id=\"%s\" width=\"%d\" height=\"%d\" xmlns=\"http://www.w3.org/2000/svg\">", id, CH_W, CH_H);
    fprintf(fp, "<text x=\"4\" y=\"16\" font-size=\"13\" font-weight=\"bold\">");
    fm_html_text(fp, title);
    fputs("</text>", fp);
    for (int k = 0; lo + k * st <= hi + st / 2; k++) {
        double v = lo + k * st, y = YPOS(v);
        if (fabs(v) < st * 1e-9) v = 0;
        fprintf(fp, "<line class=\"ygrid\" x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"%s\"/>", CH_L, y, CH_R, y,
                v == 0 ? "#444" : "#e4e4e4");
        fprintf(fp, "<text class=\"ytick\" data-v=\"%.17g\" x=\"%d\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\">%g</text>", v,
                CH_L - 4, y + 3, v);
    }
    fprintf(fp, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#444\"/>", CH_L, CH_T, CH_L, CH_B);
    fprintf(fp, "<text font-size=\"11\" text-anchor=\"middle\" transform=\"translate(14 %d) rotate(-90)\">", (CH_T + CH_B) / 2);
    fm_html_text(fp, y_label);
    fputs("</text>", fp);
    x_ticks(fp, ax, runs, n);
    for (int s = 0; s < n_series; s++) {
        fprintf(fp, "<g class=\"series\" data-series=\"%s\"><polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", series[s], colors[s]);
        for (int r = 0; r < n; r++) {
            double v = value(&runs[r], s);
            if (isfinite(v)) fprintf(fp, "%.2f,%.2f ", x_pos(ax, x_value(ax, &runs[r], r)), YPOS(v));
        }
        fputs("\"/>", fp);
        for (int r = 0; r < n; r++) {
            double v = value(&runs[r], s), xv = x_value(ax, &runs[r], r);
            if (!isfinite(v)) continue;
            double x = x_pos(ax, xv), y = YPOS(v);
            fprintf(fp, "<circle class=\"pt\" data-run=\"%d\" data-x=\"%.17g\" data-v=\"%.17g\" cx=\"%.2f\" cy=\"%.2f\" r=\"3\" fill=\"%s\"><title>",
                    r, xv, v, x, y, colors[s]);
            fm_html_text(fp, runs[r].name);
            fprintf(fp, " %s: %.4g</title></circle>", series[s], v);
            fprintf(fp, "<text class=\"val\" x=\"%.1f\" y=\"%.1f\" font-size=\"9\" fill=\"%s\">%.3g</text>", x + 4, y - 4, colors[s], v);
        }
        fputs("</g>", fp);
    }
    for (int s = 0; s < n_series; s++)
        fprintf(fp, "<rect x=\"%d\" y=\"%d\" width=\"10\" height=\"10\" fill=\"%s\"/><text x=\"%d\" y=\"%d\" font-size=\"11\">%s</text>",
                CH_R + 14, CH_T + 16 * s, colors[s], CH_R + 28, CH_T + 9 + 16 * s, series[s]);
    fputs("</svg></figure>\n", fp);
#undef YPOS
}

static double v_lang(const fm_run *r, int s) { return r->lang[FM_RULE_PAPER][s]; }
static double v_lang_script(const fm_run *r, int s) { return r->lang[FM_RULE_SCRIPT][s]; }
static double v_gran(const fm_run *r, int s) { return r->gran[s]; }
static double v_pairs(const fm_run *r, int s) { return (void)s, r->pairs; }
static double v_fvu(const fm_run *r, int s) { return (void)s, r->fvu; }
static double v_dead(const fm_run *r, int s) { return (void)s, r->dead; }
static double v_loss(const fm_run *r, int s) {
    return isfinite(r->loss) && isfinite(r->loss_sae) ? (s ? r->loss_sae : r->loss) : NAN;
}
static double v_loss_increase(const fm_run *r, int s) { return (void)s, r->loss_sae - r->loss; }
static double v_match(const fm_run *r, int s) {
    if (!r->matched) return NAN;
    return s == 0 ? r->match.persist : s == 1 ? r->match.appear : r->match.vanish;
}

/* ---------------------------------------------------------------------------------------------- */

static void html_table(FILE *html, const char *out, const fm_run *runs, int n) {
    fputs("<table id=\"report\"><thead><tr><th>checkpoint</th><th>tokens / parameter</th>"
          "<th>alive</th><th>en</th><th>ja</th><th>mixed</th><th>x-ling (pairs)</th><th>token</th><th>concept</th><th>uninterpretable</th><th>FVU</th><th>dead</th>"
          "<th>LM loss (+ with SAE)</th><th>persist</th><th>appear</th><th>vanish</th><th>same index</th><th>chance</th></tr></thead><tbody>\n", html);
    for (int r = 0; r < n; r++) {
        const fm_run *x = &runs[r];
        char fvu[32], dead[32], loss[64], pairs[32], tpp[32];
        fm_report_fmt_num(fvu, sizeof fvu, x->fvu, "%.4f");
        fm_report_fmt_num(dead, sizeof dead, x->dead, "%.4f");
        fm_report_fmt_num(pairs, sizeof pairs, 100 * x->pairs, "%.1f%%");
        fm_report_fmt_num(tpp, sizeof tpp, x->tokens_seen / x->parameters, "%.3g");
        fm_report_fmt_loss(loss, sizeof loss, x);
        char href[PATH_MAX];
        fputs("<tr><td style=\"text-align:left\">", html);
        if (rel_href(href, sizeof href, out, x->dir, "index.html")) {
            fputs("<a class=\"dashboard\" href=\"", html);
            fm_html_text(html, href);
            fputs("\">", html);
        }
        fm_html_text(html, x->name);
        fprintf(html, "%s</td><td>%s</td><td>%d</td><td>%.1f%%</td><td>%.1f%%</td><td>%.1f%%</td><td>%s</td><td>%.1f%%</td><td>%.1f%%</td>"
                      "<td>%.1f%%</td><td>%s</td><td>%s</td><td>%s</td>",
                href[0] ? "</a>" : "", tpp, x->alive, 100 * x->lang[FM_RULE_PAPER][FM_FLANG_EN], 100 * x->lang[FM_RULE_PAPER][FM_FLANG_JA],
                100 * x->lang[FM_RULE_PAPER][FM_FLANG_MIXED], pairs, 100 * x->gran[FM_GRAN_TOKEN], 100 * x->gran[FM_GRAN_CONCEPT],
                100 * x->gran[FM_GRAN_UNINTERPRETABLE], fvu, dead, loss);
        if (x->matched)
            fprintf(html, "<td><a href=\"match-%d.html\">%d</a></td><td>%d</td><td>%d</td><td>%.1f%%</td><td>%.2g</td></tr>\n",
                    (int)(x - runs), x->match.persist,
                    x->match.appear, x->match.vanish,
                    x->match.persist ? 100.0 * x->match.same_index / x->match.persist : 0, x->match.chance_persist);
        else fputs("<td></td><td></td><td></td><td></td><td></td></tr>\n", html);
    }
    fputs("</tbody></table>\n", html);
}

static void html_glossary(FILE *html, double thr) {
    fprintf(html, "<dl class=\"glossary\">"
        "<dt>en / ja / mixed</dt><dd>shares of the alive features (those that fired in the mined stream) by the paper's "
        "language rule; the second chart uses the script-aware rule.</dd>"
        "<dt>x-ling (pairs)</dt><dd>our test, not the paper's: the share of alive features that fire on both sides of the "
        "same English/Japanese translation pairs far above shuffled pairings.</dd>"
        "<dt>LM loss (+ with SAE)</dt><dd>the model's mean next-token loss on the mined tokens; in brackets its change "
        "when the SAE's reconstruction replaces the layer's activations (the forward stage's <code>sae</code>).</dd>"
        "<dt>persist / vanish</dt><dd>features of the previous checkpoint whose decoder direction has (has no) match "
        "with cosine &ge; %.2f in this checkpoint's SAE.</dd>"
        "<dt>appear</dt><dd>features of this checkpoint with no such match in the previous one.</dd>"
        "<dt>same index</dt><dd>the share of persisting features whose match has the same index: high when the two "
        "SAEs share their initialisation, so a high persist count may be inherited rather than learned.</dd>"
        "<dt>chance</dt><dd>the persist count expected if the two SAEs' directions were independent and uniformly "
        "random; persist far above it means the features really carry over.</dd></dl>\n", thr);
}

/* Each alive feature of a, its closest feature in b, their cosine; most similar first. */
typedef struct { int id, partner; float cos; } match_row;
static int by_cos_desc(const void *x, const void *y) {
    const match_row *a = x, *b = y;
    return (b->cos > a->cos) - (b->cos < a->cos);
}

int fm_report_write_match_html(const char *out, int r, const fm_run *a, const fm_run *b, double thr, int n,
                               const int *partner, const float *cos) {
    match_row *rows = sf_alloc("the match page's rows", (size_t)(n > 0 ? n : 1), sizeof *rows);
    if (!rows) return SF_ERR;
    int m = 0;
    for (int i = 0; i < n; i++)
        if (partner[i] >= 0) rows[m++] = (match_row){i, partner[i], cos[i]};
    qsort(rows, (size_t)m, sizeof *rows, by_cos_desc);
    char path[PATH_MAX], ha[PATH_MAX], hb[PATH_MAX], page[64];
    snprintf(path, sizeof path, "%s/match-%d.html", out, r);
    FILE *fp = fopen(path, "w");
    if (!fp) {
        free(rows);
        return sf_fail("cannot write %s: %s", path, strerror(errno));
    }
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Matched features</title>" FM_REPORT_STYLE
          "</head><body><p><a href=\"report.html\">&larr; report</a></p><h1>", fp);
    fm_html_text(fp, a->name);
    fputs(" &rarr; ", fp);
    fm_html_text(fp, b->name);
    fprintf(fp, "</h1><p>Every alive feature of the earlier checkpoint with the closest decoder direction among the later "
                "one's alive features; it persists when their cosine is &ge; %.2f. Feature numbers link to their "
                "pages in each checkpoint's dashboard (when it was written).</p>\n<table id=\"matches\"><thead><tr><th>",
            thr);
    fm_html_text(fp, a->name);
    fputs("</th><th>", fp);
    fm_html_text(fp, b->name);
    fputs("</th><th>cosine</th><th>persists</th></tr></thead><tbody>\n", fp);
    for (int k = 0; k < m; k++) {
        snprintf(page, sizeof page, "features/%d.html", rows[k].id);
        rel_href(ha, sizeof ha, out, a->dir, page);
        snprintf(page, sizeof page, "features/%d.html", rows[k].partner);
        rel_href(hb, sizeof hb, out, b->dir, page);
        const int ids[2] = {rows[k].id, rows[k].partner};
        const char *hrefs[2] = {ha, hb};
        fputs("<tr>", fp);
        for (int s = 0; s < 2; s++) {
            if (hrefs[s][0]) {
                fputs("<td><a href=\"", fp);
                fm_html_text(fp, hrefs[s]);
                fprintf(fp, "\">%d</a></td>", ids[s]);
            } else fprintf(fp, "<td>%d</td>", ids[s]);
        }
        fprintf(fp, "<td>%.4f</td><td>%s</td></tr>\n", rows[k].cos, rows[k].cos >= thr ? "yes" : "no");
    }
    fputs("</tbody></table></body></html>\n", fp);
    free(rows);
    if (ferror(fp) | fclose(fp)) return sf_fail("cannot write %s (disk full?)", path);
    return SF_OK;
}

int fm_report_write_html(const char *out, const fm_run *runs, int n, double thr, int do_match) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/report.html", out);
    FILE *html = fopen(path, "w");
    if (!html) return sf_fail("cannot write %s: %s", path, strerror(errno));
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>SAE features across checkpoints</title>"
          FM_REPORT_STYLE
          "</head><body><h1>SAE features across checkpoints</h1>\n", html);
    fputs("<p>Checkpoint names link to their feature dashboards (when mined with <code>html = true</code>); "
          "persist counts to the matched features, each linked to its page in both dashboards.</p>\n", html);
    html_table(html, out, runs, n);
    html_glossary(html, thr);
    x_axis ax = choose_x(runs, n);
    const char *lang_s[] = {"en", "ja", "mixed"}, *lang_c[] = {"#1f77b4", "#d62728", "#9467bd"};
    const char *gran_s[] = {"token", "concept", "uninterpretable", "few examples"},
               *gran_c[] = {"#f08c00", "#2ca02c", "#8c564b", "#999999"};
    const char *one_c[] = {"#555555"}, *fvu_s[] = {"FVU"}, *dead_s[] = {"dead fraction"};
    const char *loss_s[] = {"LM loss", "with SAE"}, *loss_c[] = {"#1f77b4", "#d62728"}, *inc_s[] = {"loss increase"};
    const char *match_s[] = {"persist", "appear", "vanish"}, *match_c[] = {"#2ca02c", "#1f77b4", "#d62728"};
    const char *pairs_s[] = {"cross-lingual (pairs)"}, *pairs_c[] = {"#17becf"};
    int any_pairs = 0, any_loss = 0;
    for (int r = 0; r < n; r++) any_pairs |= isfinite(runs[r].pairs), any_loss |= isfinite(v_loss(&runs[r], 0));
    svg_lines(html, "chart-lang", "Language of features (paper rule)", "share of alive features", &ax, runs, n, 3, lang_s, lang_c, v_lang);
    svg_lines(html, "chart-lang-script", "Language of features (script rule)", "share of alive features", &ax, runs, n, 3, lang_s,
              lang_c, v_lang_script);
    if (any_pairs)
        svg_lines(html, "chart-pairs", "Cross-lingual (pairs, our test)", "share of alive features", &ax, runs, n, 1, pairs_s,
                  pairs_c, v_pairs);
    svg_lines(html, "chart-gran", "Granularity", "share of alive features", &ax, runs, n, FM_GRAN_COUNT, gran_s, gran_c, v_gran);
    if (any_loss) {
        svg_lines(html, "chart-loss", "LM loss, and with the SAE spliced in", "mean next-token loss (nats)", &ax, runs, n, 2, loss_s,
                  loss_c, v_loss);
        svg_lines(html, "chart-loss-increase", "LM loss increase with the SAE", "loss with SAE - loss (nats)", &ax, runs, n, 1, inc_s,
                  one_c, v_loss_increase);
    }
    svg_lines(html, "chart-fvu", "FVU", "fraction of variance unexplained", &ax, runs, n, 1, fvu_s, one_c, v_fvu);
    svg_lines(html, "chart-dead", "Dead fraction", "share of features", &ax, runs, n, 1, dead_s, one_c, v_dead);
    if (do_match)
        svg_lines(html, "chart-match", "Features vs previous checkpoint", "features", &ax, runs, n, 3, match_s, match_c, v_match);
    fputs("</body></html>\n", html);
    if (ferror(html) | fclose(html)) return sf_fail("cannot write %s (disk full?)", path);
    return SF_OK;
}
