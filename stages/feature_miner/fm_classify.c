/* fm_classify.c — see fm_classify.h.
 *
 * Per DIR (or DIR/features when DIR is a feature_miner run directory) it reads every *.json file
 * in name order (numbers in natural order), each an object whose "token_act" lists examples, each a
 * non-empty list of [token string, integer activation] pairs. Every feature is judged by fm_judge
 * with the miner's default parameters. With --json: one object per line and feature; without: a
 * summary per directory. A file's own labels, when it has the paper's ("language": {"en": N,
 * "ja": N}, "granularity": 1-4, the hand label), are passed through as "label" so tools can compare.
 * The first unreadable or malformed file stops the command (exit 1) with its name and the problem. */
#include "fm_classify.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fm_judge.h"
#include "saeflow.h"

static int usage(FILE *out) {
    fprintf(out,
            "usage: saeflow classify " FM_CLASSIFY_ARGS "\n"
            "  The language and granularity of every feature file (*.json with the paper's \"token_act\")\n"
            "  in each DIR (a feature_miner run directory means its features/).\n"
            "  Language rules: paper (llm-jp-sae's exactly), ascii, script (stages/feature_miner/README.md).\n"
            "  --json   one object per feature and line: {\"dir\", \"file\", \"examples\", \"language\": {RULE:\n"
            "           {\"en\", \"ja\", \"other\", \"none\", \"verdict\"}}, \"granularity\", and \"label\" when the\n"
            "           file has the paper's hand labels}; without it, a summary per directory.\n");
    return out == stdout ? 0 : 2;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Natural order (2.json before 10.json); strverscmp is GNU (the build defines _GNU_SOURCE). */
static int cmp_names(const void *a, const void *b) { return strverscmp(*(char *const *)a, *(char *const *)b); }

/* The *.json regular files of dir, sorted; NULL (and a message) on error. */
static char **list_features(const char *dir, int *n_out) {
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "saeflow classify: cannot read directory %s: %s\n", dir, strerror(errno));
        return NULL;
    }
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!ends_with(e->d_name, ".json") || e->d_name[0] == '.') continue;
        char path[PATH_MAX];
        struct stat st;
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path || stat(path, &st) != 0 ||
            !S_ISREG(st.st_mode))
            continue;
        char **grown = n == cap ? sf_realloc(names, "feature file names", (size_t)(cap ? 2 * cap : 256), sizeof *names)
                                : names;
        char *name = grown ? sf_strdup("a feature file name", e->d_name) : NULL;
        if (!name) {
            fprintf(stderr, "saeflow classify: %s: %s\n", dir, sf_last_error());
            for (int i = 0; i < n; i++) free((grown ? grown : names)[i]);
            free(grown ? grown : names);
            closedir(d);
            return NULL;
        }
        if (n == cap) cap = cap ? 2 * cap : 256;
        names = grown;
        names[n++] = name;
    }
    closedir(d);
    if (n == 0) {
        fprintf(stderr, "saeflow classify: %s has no feature files (*.json); give a folder of feature JSON files "
                        "(e.g. a run's features/ or llm-jp-sae's docs/data/<checkpoint>)\n", dir);
        free(names);
        return NULL;
    }
    qsort(names, (size_t)n, sizeof *names, cmp_names);
    *n_out = n;
    return names;
}

void fm_feature_file_free(fm_feature_file *f) {
    json_decref(f->root);
    free(f->ex);
    free(f->tok);
    free(f->act);
    memset(f, 0, sizeof *f);
}

int fm_feature_file_load(const char *path, fm_feature_file *f) {
    memset(f, 0, sizeof *f);
    json_error_t err;
    f->root = json_load_file(path, JSON_ALLOW_NUL, &err); /* a NUL in a token gets its own message below */
    if (!f->root) {
        return sf_fail("%s:%d:%d: not readable JSON: %s", path, err.line, err.column, err.text);
    }
    json_t *ta = json_object_get(f->root, "token_act");
    if (!json_is_array(ta)) {
        return sf_fail("%s: no \"token_act\" list (a feature file holds {\"token_act\": [[[token, act], ...], ...]})",
                       path);
    }
    size_t n = json_array_size(ta), cells = 0;
    if (n > INT_MAX) {
        return sf_fail("%s: too many examples (%zu)", path, n);
    }
    for (size_t e = 0; e < n; e++) {
        json_t *ex = json_array_get(ta, e);
        size_t len = json_is_array(ex) ? json_array_size(ex) : 0;
        if (len == 0 || len > INT_MAX || cells > SIZE_MAX / sizeof(const char *) - len) {
            return sf_fail("%s: token_act[%zu] is %s; every example is a non-empty list of [token, act] pairs", path, e,
                           !json_is_array(ex) ? "not a list" : len ? "too long" : "empty");
        }
        cells += len;
    }
    f->n = (int)n;
    f->ex = sf_alloc("examples", n ? n : 1, sizeof *f->ex);
    f->tok = f->ex ? sf_alloc("example tokens", cells ? cells : 1, sizeof *f->tok) : NULL;
    f->act = f->tok ? sf_alloc("example activations", cells ? cells : 1, sizeof *f->act) : NULL;
    if (!f->act) return sf_fail("%s: %s", path, sf_last_error());
    size_t at = 0;
    for (size_t e = 0; e < n; e++) {
        json_t *ex = json_array_get(ta, e);
        size_t len = json_array_size(ex);
        f->ex[e] = (fm_token_act){.n = (int)len, .tok = f->tok + at, .act = f->act + at};
        for (size_t t = 0; t < len; t++, at++) {
            json_t *pair = json_array_get(ex, t), *s = json_array_get(pair, 0), *a = json_array_get(pair, 1);
            const char *what = NULL;
            if (!json_is_array(pair) || json_array_size(pair) != 2) what = "is not a [token, act] pair";
            else if (!json_is_string(s)) what = "has a token that is not a string";
            else if (!json_is_integer(a)) what = "has an activation that is not an integer (token_act holds quantised integers)";
            else if (json_integer_value(a) < INT_MIN || json_integer_value(a) > INT_MAX) what = "has an activation out of range";
            else if (strlen(json_string_value(s)) != json_string_length(s)) what = "has a token with U+0000 (not supported)";
            if (what) return sf_fail("%s: token_act[%zu][%zu] %s", path, e, t, what);
            f->tok[at] = json_string_value(s);
            f->act[at] = (int)json_integer_value(a);
        }
    }
    return SF_OK;
}

/* The paper's hand labels of a file, if it has them: {"language": {"en", "ja"}, "granularity"}. */
static json_t *file_label(const json_t *root) {
    json_t *lang = json_object_get(root, "language"), *gran = json_object_get(root, "granularity");
    json_t *en = json_object_get(lang, "en"), *ja = json_object_get(lang, "ja");
    json_t *label = json_object();
    if (json_is_integer(en) && json_is_integer(ja))
        json_object_set_new(label, "language", json_pack("{sIsI}", "en", json_integer_value(en), "ja", json_integer_value(ja)));
    if (json_is_integer(gran)) json_object_set_new(label, "granularity", json_incref(gran));
    if (json_object_size(label) == 0) {
        json_decref(label);
        return NULL;
    }
    return label;
}

/* Per-directory totals for the summary. */
typedef struct fm_tally {
    int files;
    long long examples;
    int verdict[FM_RULE_COUNT][FM_FLANG_COUNT];
    int gran[FM_GRAN_COUNT];
    int labelled_lang, paper_reproduced; /* files with the paper's en/ja counts; of them, counts equal */
    int labelled_gran, label_gran[5];    /* hand granularity 1..4 (0: other values) */
} fm_tally;

static void print_summary(const char *dir, const char *feat_dir, const fm_tally *t) {
    printf("%s%s%s%s: %d features, %lld examples\n", dir, feat_dir != dir ? " (" : "", feat_dir != dir ? feat_dir : "",
           feat_dir != dir ? ")" : "", t->files, t->examples);
    printf("  %-8s", "language");
    for (int v = 0; v < FM_FLANG_COUNT; v++) printf(" %14s", fm_flang_names[v]);
    printf("\n");
    for (int r = 0; r < FM_RULE_COUNT; r++) {
        printf("  %-8s", fm_rule_names[r]);
        for (int v = 0; v < FM_FLANG_COUNT; v++)
            printf(" %6d %6.1f%%", t->verdict[r][v], 100.0 * t->verdict[r][v] / t->files);
        printf("\n");
    }
    printf("  granularity:");
    for (int g = 0; g < FM_GRAN_COUNT; g++) printf(" %s %d (%.1f%%)%s", fm_gran_names[g], t->gran[g], 100.0 * t->gran[g] / t->files, g + 1 < FM_GRAN_COUNT ? "," : "\n");
    if (t->labelled_lang)
        printf("  the files' own en/ja counts: the paper rule reproduces %d of %d\n", t->paper_reproduced, t->labelled_lang);
    if (t->labelled_gran)
        printf("  the files' hand granularity: 1 uninterpretable %d, 2 concept (semantic) %d, 3 concept (synonymy) %d, "
               "4 token %d%s\n", t->label_gran[1], t->label_gran[2], t->label_gran[3], t->label_gran[4],
               t->label_gran[0] ? ", other values" : "");
}

/* Judges every feature file of one directory; 0, or 1 after an error. */
static int classify_dir(const char *dir, int as_json) {
    char feat_dir[PATH_MAX], probe[PATH_MAX];
    const char *fd = dir;
    /* A feature_miner run directory: its feature files are in features/. */
    if (snprintf(probe, sizeof probe, "%s/summary.json", dir) < (int)sizeof probe && access(probe, F_OK) == 0 &&
        snprintf(feat_dir, sizeof feat_dir, "%s/features", dir) < (int)sizeof feat_dir && is_dir(feat_dir))
        fd = feat_dir;
    int n = 0;
    char **names = list_features(fd, &n);
    if (!names) return 1;
    fm_tally t = {0};
    fm_judge_params jp = FM_JUDGE_DEFAULTS;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", fd, names[i]) >= (int)sizeof path) {
            fprintf(stderr, "saeflow classify: %s/%s: path too long\n", fd, names[i]);
            rc = 1;
            break;
        }
        fm_feature_file f;
        if (fm_feature_file_load(path, &f) != SF_OK) {
            fprintf(stderr, "saeflow classify: %s\n", sf_last_error());
            fm_feature_file_free(&f);
            rc = 1;
            break;
        }
        fm_judgement j;
        if (fm_judge(f.ex, f.n, &jp, &j) != SF_OK) {
            fprintf(stderr, "saeflow classify: %s: %s\n", path, sf_last_error());
            fm_feature_file_free(&f);
            rc = 1;
            break;
        }
        int gc = j.gran.gran;
        json_t *label = file_label(f.root);
        t.files++;
        t.examples += f.n;
        t.gran[gc]++;
        for (int r = 0; r < FM_RULE_COUNT; r++) t.verdict[r][j.lang[r].verdict]++;
        json_t *ll = json_object_get(label, "language"), *lg = json_object_get(label, "granularity");
        if (ll) {
            t.labelled_lang++;
            t.paper_reproduced += json_integer_value(json_object_get(ll, "en")) == j.lang[FM_RULE_PAPER].counts[FM_LANG_EN] &&
                                  json_integer_value(json_object_get(ll, "ja")) == j.lang[FM_RULE_PAPER].counts[FM_LANG_JA];
        }
        if (lg) {
            json_int_t g = json_integer_value(lg);
            t.labelled_gran++;
            t.label_gran[g >= 1 && g <= 4 ? g : 0]++;
        }
        json_t *jdir = json_string(fd), *jfile = json_string(names[i]);
        if (as_json && (!jdir || !jfile)) {
            fprintf(stderr, "saeflow classify: %s: the path is not UTF-8, JSON cannot name it; rename it\n", path);
            rc = 1;
        }
        if (as_json && rc == 0) {
            json_t *o = json_object(), *lang = json_object();
            json_object_set_new(o, "dir", json_incref(jdir));
            json_object_set_new(o, "file", json_incref(jfile));
            json_object_set_new(o, "examples", json_integer(f.n));
            for (int r = 0; r < FM_RULE_COUNT; r++) {
                json_t *c = json_object();
                for (int l = FM_LANG_EN; l < FM_LANG_COUNT; l++)
                    json_object_set_new(c, fm_lang_names[l], json_integer(j.lang[r].counts[l]));
                json_object_set_new(c, "none", json_integer(j.lang[r].counts[FM_LANG_NONE]));
                json_object_set_new(c, "verdict", json_string(fm_flang_names[j.lang[r].verdict]));
                json_object_set_new(lang, fm_rule_names[r], c);
            }
            json_object_set_new(o, "language", lang);
            json_object_set_new(o, "granularity", json_string(fm_gran_names[gc]));
            if (label) json_object_set(o, "label", label);
            char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
            if (!line) {
                fprintf(stderr, "saeflow classify: %s: out of memory writing its JSON line\n", path);
                rc = 1;
            } else {
                puts(line);
                free(line);
            }
            json_decref(o);
        }
        json_decref(jdir);
        json_decref(jfile);
        json_decref(label);
        fm_feature_file_free(&f);
    }
    if (rc == 0 && !as_json) print_summary(dir, fd, &t);
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

int fm_classify_main(int argc, char **argv) {
    int as_json = 0, n_dirs = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage(stdout);
        if (!strcmp(argv[i], "--json")) as_json = 1;
        else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "saeflow classify: unknown option %s\n", argv[i]);
            return usage(stderr);
        } else n_dirs++;
    }
    if (n_dirs == 0) {
        fprintf(stderr, "saeflow classify: no DIR given\n");
        return usage(stderr);
    }
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-' && argv[i][1]) continue;
        if (classify_dir(argv[i], as_json) != 0) return 1;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
