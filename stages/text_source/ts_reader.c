/* ts_reader.c — corpora of text / JSON Lines files (gzip or not) read as a stream of documents:
 * one file open per corpus at a time, one line in memory per corpus, plus the shuffle buffer. */
#include "ts_reader.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

enum { TS_OTHER = 3 }; /* a record for another replica */

typedef struct ts_corpus {
    char *label;
    double weight;          /* relative chance of being drawn next */
    char **files;
    size_t n_files, next_file;
    gzFile f;
    const char *path;       /* the open file */
    int64_t line_no;        /* of the last line read */
    char *buf;              /* read buffer: bytes [pos, end) not yet returned */
    size_t pos, end, cap;
    bool eof;
    char *line;             /* the current line (NUL-terminated), without its newline */
    size_t line_len, line_cap;
    char *acc;              /* paragraph / whole-file document being gathered */
    size_t acc_len, acc_cap;
    int64_t acc_line;       /* its first line */
    bool skipping;          /* the rest of a paragraph / file with a bad line is skipped too */
} ts_corpus;

typedef struct ts_slot { /* a document waiting in the shuffle buffer */
    uint64_t doc_id;
    const char *label, *split;
    char *text, *source;
    size_t text_len;
} ts_slot;

struct ts_reader {
    ts_config cfg;
    ts_corpus *corpora;
    size_t n_corpora, n_active;
    uint64_t rng;           /* file order and corpus interleaving: the same in every replica */
    uint64_t rng_shuffle;   /* the shuffle buffer */
    int64_t ordinal;        /* documents of the selected split seen, for the replica filter */
    ts_slot *slots;
    size_t n_slots;
    ts_slot out;            /* the document last returned */
    char *text_field, *id_field, *label_field, *split_field;
    ts_counts counts;
};

static void ts_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void ts_errf(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static uint64_t ts_rand(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t ts_below(uint64_t *s, uint64_t n) { return n ? ts_rand(s) % n : 0; }

uint64_t ts_doc_hash(const char *label, const char *key, size_t key_len, int64_t index) {
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = label; *p; p++) h = (h ^ (uint8_t)*p) * 1099511628211ULL;
    h = (h ^ 0) * 1099511628211ULL;
    for (size_t i = 0; i < key_len; i++) h = (h ^ (uint8_t)key[i]) * 1099511628211ULL;
    if (index >= 0) {
        h = (h ^ 0) * 1099511628211ULL;
        for (int i = 0; i < 8; i++) h = (h ^ (uint8_t)(index >> (8 * i))) * 1099511628211ULL;
    }
    return h & 0x7fffffffffffffffULL;
}

enum ts_split ts_split_of(uint64_t doc_id, const double ratio[3], uint64_t split_seed) {
    uint64_t s = doc_id ^ (split_seed * 0xd1b54a32d192ed03ULL);
    double u = (double)(ts_rand(&s) >> 11) * (1.0 / 9007199254740992.0); /* [0, 1) */
    double total = ratio[0] + ratio[1] + ratio[2];
    if (u * total < ratio[0]) return TS_TRAIN;
    if (u * total < ratio[0] + ratio[1]) return TS_VALIDATION;
    return TS_TEST;
}

static const char *const ts_split_names[] = {"train", "validation", "test"};

/* Strict UTF-8 (no overlongs, surrogates, or code points past U+10FFFF). */
static bool ts_utf8_valid(const char *str, size_t len) {
    const uint8_t *s = (const uint8_t *)str;
    for (size_t i = 0; i < len;) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (n == 0 || len - i < n) return false;
        uint32_t cp = c & (0x7F >> n);
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) return false;
        i += n;
    }
    return true;
}

static bool ts_is_jsonl(const ts_config *cfg, const char *path) {
    if (cfg->format != TS_AUTO) return cfg->format == TS_JSONL;
    size_t n = strlen(path);
    if (n > 3 && strcmp(path + n - 3, ".gz") == 0) n -= 3;
    return (n > 6 && strncmp(path + n - 6, ".jsonl", 6) == 0) ||
           (n > 5 && strncmp(path + n - 5, ".json", 5) == 0);
}

/* ------------------------------------------------------------------------------------------ */
/* Files and lines                                                                             */

static int ts_add_corpus(ts_reader *r, const char *label, size_t label_len, const char *pattern,
                         char *err, size_t errlen) {
    ts_corpus *c = NULL;
    for (size_t i = 0; i < r->n_corpora; i++)
        if (strlen(r->corpora[i].label) == label_len && memcmp(r->corpora[i].label, label, label_len) == 0)
            c = &r->corpora[i];
    if (!c) {
        ts_corpus *p = realloc(r->corpora, (r->n_corpora + 1) * sizeof *p);
        if (!p) return -1;
        r->corpora = p;
        c = &p[r->n_corpora++];
        memset(c, 0, sizeof *c);
        if (!(c->label = strndup(label, label_len))) return -1;
        c->weight = 1;
    }
    glob_t g;
    int rc = glob(pattern, 0, NULL, &g);
    if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
        ts_errf(err, errlen, "no file matches %s", pattern);
        if (rc == 0) globfree(&g);
        return -1;
    }
    if (rc != 0) {
        ts_errf(err, errlen, "cannot expand %s", pattern);
        return -1;
    }
    char **files = realloc(c->files, (c->n_files + g.gl_pathc) * sizeof *files);
    if (!files) {
        globfree(&g);
        return -1;
    }
    c->files = files;
    for (size_t i = 0; i < g.gl_pathc; i++) c->files[c->n_files++] = strdup(g.gl_pathv[i]);
    globfree(&g);
    return 0;
}

/* Reads the next line of the corpus's open file into c->line. Lines longer than limit are
 * consumed but returned truncated to 0 bytes with *too_long set. 1 = line, 0 = end of file. */
static int ts_read_line(ts_corpus *c, size_t limit, bool *too_long, char *err, size_t errlen) {
    *too_long = false;
    c->line_len = 0;
    bool got = false;
    for (;;) {
        char *nl = c->pos < c->end ? memchr(c->buf + c->pos, '\n', c->end - c->pos) : NULL;
        size_t take = nl ? (size_t)(nl - (c->buf + c->pos)) : c->end - c->pos;
        if (take) got = true;
        if (!*too_long && c->line_len + take > limit) {
            *too_long = true;
            c->line_len = 0;
        }
        if (!*too_long && take) {
            if (c->line_len + take + 1 > c->line_cap) {
                size_t cap = c->line_cap ? c->line_cap : 4096;
                while (cap < c->line_len + take + 1) cap *= 2;
                char *p = realloc(c->line, cap);
                if (!p) {
                    ts_errf(err, errlen, "out of memory");
                    return -1;
                }
                c->line = p;
                c->line_cap = cap;
            }
            memcpy(c->line + c->line_len, c->buf + c->pos, take);
            c->line_len += take;
        }
        c->pos += take;
        if (nl) {
            c->pos++;
            break;
        }
        if (c->eof) {
            if (!got) return 0;
            break;
        }
        if (!c->buf && !(c->buf = malloc(c->cap = 1 << 16))) {
            ts_errf(err, errlen, "out of memory");
            return -1;
        }
        int n = gzread(c->f, c->buf, (unsigned)c->cap);
        if (n < 0) {
            int zerr;
            ts_errf(err, errlen, "%s: read error: %s", c->path, gzerror(c->f, &zerr));
            return -1;
        }
        c->pos = 0;
        c->end = (size_t)n;
        if (n == 0) c->eof = true;
    }
    if (c->line) c->line[c->line_len] = 0;
    c->line_no++;
    return 1;
}

/* Opens the corpus's next file; 0 when it has none left. */
static int ts_open_next(ts_corpus *c, char *err, size_t errlen) {
    if (c->f) {
        gzclose(c->f);
        c->f = NULL;
    }
    if (c->next_file == c->n_files) return 0;
    c->path = c->files[c->next_file++];
    if (!(c->f = gzopen(c->path, "rb"))) {
        ts_errf(err, errlen, "cannot open %s: %s", c->path, strerror(errno));
        return -1;
    }
    c->line_no = 0;
    c->pos = c->end = 0;
    c->eof = false;
    c->skipping = false;
    return 1;
}

/* ------------------------------------------------------------------------------------------ */

/* "LABEL=W,LABEL=W": each label must be a corpus; W a finite number >= 0. */
static int ts_parse_weights(ts_reader *r, const char *spec, char *err, size_t errlen) {
    while (*spec) {
        const char *end = strchr(spec, ',');
        size_t len = end ? (size_t)(end - spec) : strlen(spec);
        const char *eq = memchr(spec, '=', len);
        ts_corpus *c = NULL;
        size_t label_len = eq ? (size_t)(eq - spec) : 0;
        for (size_t i = 0; eq && i < r->n_corpora; i++)
            if (strlen(r->corpora[i].label) == label_len && memcmp(r->corpora[i].label, spec, label_len) == 0)
                c = &r->corpora[i];
        char num[64] = "", *num_end;
        if (eq && (size_t)(spec + len - eq - 1) < sizeof num) memcpy(num, eq + 1, (size_t)(spec + len - eq - 1));
        double w = strtod(num, &num_end);
        if (!c || !num[0] || *num_end || !(w >= 0 && w < 1e300)) {
            ts_errf(err, errlen, "weights item '%.*s' is not LABEL=WEIGHT for a corpus label", (int)len, spec);
            return -1;
        }
        c->weight = w;
        spec += len + (end ? 1 : 0);
    }
    return 0;
}

ts_reader *ts_open(const ts_config *cfg, char *err, size_t errlen) {
    ts_errf(err, errlen, "out of memory"); /* replaced by any more precise message */
    ts_reader *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->cfg = *cfg;
    /* Own copies of the strings the reader keeps using. */
    r->cfg.text_field = r->text_field = strdup(cfg->text_field);
    r->cfg.id_field = r->id_field = strdup(cfg->id_field);
    r->cfg.label_field = r->label_field = strdup(cfg->label_field);
    r->cfg.split_field = r->split_field = strdup(cfg->split_field ? cfg->split_field : "");
    r->cfg.corpora = NULL;
    if (!r->text_field || !r->id_field || !r->label_field || !r->split_field) goto fail;
    r->rng = cfg->seed ^ 0x5a17f10e5eedULL;
    r->rng_shuffle = cfg->seed ^ 0x5bdf11e5eedULL;
    double sum = cfg->ratio[0] + cfg->ratio[1] + cfg->ratio[2];
    if (!(cfg->ratio[0] >= 0 && cfg->ratio[1] >= 0 && cfg->ratio[2] >= 0 && sum > 0)) {
        ts_errf(err, errlen, "split ratios must be >= 0 and not all 0");
        goto fail;
    }
    const char *spec = cfg->corpora;
    while (*spec) {
        const char *end = strchr(spec, ',');
        size_t len = end ? (size_t)(end - spec) : strlen(spec);
        char *item = strndup(spec, len);
        if (!item) goto fail;
        char *eq = strchr(item, '='), *pattern = eq ? eq + 1 : item;
        size_t label_len = eq ? (size_t)(eq - item) : 0;
        while (*pattern == ' ') pattern++;
        int rc = *pattern ? ts_add_corpus(r, item, label_len, pattern, err, errlen) : -1;
        if (!*pattern) ts_errf(err, errlen, "empty file pattern in corpora '%s'", cfg->corpora);
        free(item);
        if (rc != 0) goto fail;
        spec += len + (end ? 1 : 0);
    }
    if (r->n_corpora == 0) {
        ts_errf(err, errlen, "corpora names no files");
        goto fail;
    }
    if (ts_parse_weights(r, cfg->weights ? cfg->weights : "", err, errlen) != 0) goto fail;
    for (size_t i = 0; i < r->n_corpora; i++) { /* file order within a corpus, by seed */
        ts_corpus *c = &r->corpora[i];
        for (size_t k = c->n_files; cfg->shuffle_buffer > 0 && k > 1; k--) {
            size_t j = ts_below(&r->rng, k);
            char *t = c->files[k - 1];
            c->files[k - 1] = c->files[j];
            c->files[j] = t;
        }
        int rc = ts_open_next(c, err, errlen);
        if (rc < 0) goto fail;
    }
    r->n_active = r->n_corpora;
    if (cfg->shuffle_buffer && !(r->slots = calloc(cfg->shuffle_buffer, sizeof *r->slots))) goto fail;
    return r;
fail:
    ts_close(r);
    return NULL;
}

static void ts_slot_free(ts_slot *s) {
    free(s->text);
    free(s->source);
    memset(s, 0, sizeof *s);
}

void ts_close(ts_reader *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_corpora; i++) {
        ts_corpus *c = &r->corpora[i];
        if (c->f) gzclose(c->f);
        for (size_t k = 0; k < c->n_files; k++) free(c->files[k]);
        free(c->files);
        free(c->label);
        free(c->buf);
        free(c->line);
        free(c->acc);
    }
    free(r->corpora);
    for (size_t i = 0; i < r->n_slots; i++) ts_slot_free(&r->slots[i]);
    free(r->slots);
    ts_slot_free(&r->out);
    free(r->text_field);
    free(r->id_field);
    free(r->label_field);
    free(r->split_field);
    free(r);
}

const ts_counts *ts_counts_get(const ts_reader *r) { return &r->counts; }

/* A bad record: counted, then skipped (TS_SKIPPED, message in err) or fatal (-1). */
static int ts_bad(ts_reader *r, int64_t *counter, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int ts_bad(ts_reader *r, int64_t *counter, char *err, size_t errlen, const char *fmt, ...) {
    if (r->cfg.replica != 0 && !r->cfg.fail_on_error) return TS_OTHER; /* replica 0 reports it */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    (*counter)++;
    return r->cfg.fail_on_error ? -1 : TS_SKIPPED;
}

static int ts_acc_add(ts_corpus *c, const char *s, size_t len) {
    if (c->acc_len + len + 1 > c->acc_cap) {
        size_t cap = c->acc_cap ? c->acc_cap : 4096;
        while (cap < c->acc_len + len + 1) cap *= 2;
        char *p = realloc(c->acc, cap);
        if (!p) return -1;
        c->acc = p;
        c->acc_cap = cap;
    }
    memcpy(c->acc + c->acc_len, s, len);
    c->acc_len += len;
    c->acc[c->acc_len] = 0;
    return 0;
}

/* Turns a record into a slot (doc id, label, split, copies); its split is `given` (from the
 * split field), or by the hash of its id when given is TS_ALL. Returns 1 if the document is
 * kept, 0 if it is not wanted (split, empty), TS_OTHER if another replica emits it, TS_SKIPPED
 * for bad input, -1 on error. */
static int ts_make(ts_reader *r, ts_corpus *c, const char *label, const char *key, size_t key_len,
                   int64_t index, enum ts_split given, const char *text, size_t len, int64_t line_no,
                   ts_slot *out, char *err, size_t errlen) {
    if (len > r->cfg.max_doc_bytes)
        return ts_bad(r, &r->counts.too_long, err, errlen,
                      "%s:%lld: document of %zu bytes is longer than max_doc_bytes",
                      c->path, (long long)line_no, len);
    if (len < r->cfg.min_chars || len == 0) {
        r->counts.too_short++;
        return 0;
    }
    uint64_t id = ts_doc_hash(label, key, key_len, index);
    enum ts_split sp = given != TS_ALL ? given : ts_split_of(id, r->cfg.ratio, r->cfg.split_seed);
    if (r->cfg.split != TS_ALL && sp != r->cfg.split) {
        r->counts.other_split++;
        return 0;
    }
    if (r->ordinal++ % r->cfg.replicas != r->cfg.replica) return TS_OTHER;
    char src[64];
    snprintf(src, sizeof src, ":%lld", (long long)line_no);
    out->doc_id = id;
    out->label = label; /* interned: the corpus label or a label from the corpus's table */
    out->split = ts_split_names[sp];
    out->text = malloc(len + 1);
    out->source = malloc(strlen(c->path) + strlen(src) + 1);
    if (!out->text || !out->source) {
        ts_errf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(out->text, text, len);
    out->text[len] = 0;
    out->text_len = len;
    strcpy(out->source, c->path);
    strcat(out->source, src);
    r->counts.docs++;
    return 1;
}

/* Labels taken from a JSON field are interned for the reader's lifetime. */
typedef struct ts_label_table {
    char **v;
    size_t n;
} ts_label_table;
static ts_label_table ts_labels; /* process-wide (replicas share it); labels are few */
static pthread_mutex_t ts_labels_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *ts_intern(const char *s) {
    const char *found = NULL;
    pthread_mutex_lock(&ts_labels_lock);
    for (size_t i = 0; i < ts_labels.n && !found; i++)
        if (strcmp(ts_labels.v[i], s) == 0) found = ts_labels.v[i];
    if (!found && ts_labels.n < 4096) { /* more would not be a label field */
        char **v = realloc(ts_labels.v, (ts_labels.n + 1) * sizeof *v);
        if (v) {
            ts_labels.v = v;
            if ((v[ts_labels.n] = strdup(s))) found = v[ts_labels.n++];
        }
    }
    pthread_mutex_unlock(&ts_labels_lock);
    return found;
}

/* The next document of one corpus in file order: 1, 0 at its end, TS_SKIPPED, TS_OTHER, -1. */
static int ts_corpus_next(ts_reader *r, ts_corpus *c, ts_slot *out, char *err, size_t errlen) {
    const ts_config *cfg = &r->cfg;
    for (;;) {
        if (!c->f) return 0;
        bool too_long, jsonl = ts_is_jsonl(cfg, c->path);
        int rc = ts_read_line(c, cfg->max_doc_bytes + 1, &too_long, err, errlen);
        if (rc < 0) return -1;
        if (rc == 0) { /* end of file: first the paragraph / file document it ends */
            if (!jsonl && cfg->unit != TS_LINE && c->acc_len > 0) {
                c->acc_len = 0;
                rc = ts_make(r, c, c->label, c->path, strlen(c->path), c->acc_line, TS_ALL, c->acc, strlen(c->acc),
                             c->acc_line, out, err, errlen);
                if (rc != 0) return rc;
            }
            if (ts_open_next(c, err, errlen) < 0) return -1;
            continue;
        }
        if (too_long) {
            c->acc_len = 0;
            c->skipping = !jsonl && cfg->unit != TS_LINE;
            return ts_bad(r, &r->counts.too_long, err, errlen, "%s:%lld: line longer than max_doc_bytes (%zu)",
                          c->path, (long long)c->line_no, cfg->max_doc_bytes);
        }
        if (!jsonl) {
            bool blank = strspn(c->line, " \t\r") == c->line_len;
            if (c->skipping) { /* after a bad line, up to the end of its paragraph / file */
                if (cfg->unit == TS_PARAGRAPH && blank) c->skipping = false;
                continue;
            }
            if (!ts_utf8_valid(c->line, c->line_len)) {
                c->acc_len = 0; /* the paragraph / file it belongs to goes too */
                c->skipping = cfg->unit != TS_LINE;
                return ts_bad(r, &r->counts.bad_utf8, err, errlen, "%s:%lld: invalid UTF-8", c->path,
                              (long long)c->line_no);
            }
            if (cfg->unit == TS_LINE) {
                rc = ts_make(r, c, c->label, c->path, strlen(c->path), c->line_no, TS_ALL, c->line, c->line_len,
                             c->line_no, out, err, errlen);
                if (rc != 0) return rc;
                continue;
            }
            if (cfg->unit == TS_PARAGRAPH && blank) {
                if (c->acc_len == 0) continue;
                c->acc_len = 0;
                rc = ts_make(r, c, c->label, c->path, strlen(c->path), c->acc_line, TS_ALL, c->acc, strlen(c->acc),
                             c->acc_line, out, err, errlen);
                if (rc != 0) return rc;
                continue;
            }
            if (c->acc_len == 0) c->acc_line = c->line_no;
            if ((c->acc_len && ts_acc_add(c, "\n", 1) != 0) || ts_acc_add(c, c->line, c->line_len) != 0) {
                ts_errf(err, errlen, "out of memory");
                return -1;
            }
            if (c->acc_len > cfg->max_doc_bytes) { /* keep memory bounded */
                c->acc_len = 0;
                c->skipping = true;
                return ts_bad(r, &r->counts.too_long, err, errlen, "%s:%lld: document longer than max_doc_bytes",
                              c->path, (long long)c->acc_line);
            }
            continue;
        }
        /* JSON Lines (checked as UTF-8 first, so raw invalid bytes count as such, not as bad JSON) */
        if (strspn(c->line, " \t\r") == c->line_len) continue;
        if (!ts_utf8_valid(c->line, c->line_len))
            return ts_bad(r, &r->counts.bad_utf8, err, errlen, "%s:%lld: invalid UTF-8", c->path, (long long)c->line_no);
        json_error_t je;
        json_t *o = json_loadb(c->line, c->line_len, 0, &je);
        if (!o || !json_is_object(o)) {
            json_decref(o);
            return ts_bad(r, &r->counts.bad_json, err, errlen, "%s:%lld: malformed JSON: %s", c->path,
                          (long long)c->line_no, o ? "not an object" : je.text);
        }
        json_t *text = json_object_get(o, cfg->text_field);
        json_t *lab = cfg->label_field[0] ? json_object_get(o, cfg->label_field) : NULL;
        json_t *idv = cfg->id_field[0] ? json_object_get(o, cfg->id_field) : NULL;
        json_t *spv = cfg->split_field[0] ? json_object_get(o, cfg->split_field) : NULL;
        const char *missing = !json_is_string(text)                                        ? cfg->text_field
                              : cfg->label_field[0] && !json_is_string(lab)                 ? cfg->label_field
                              : cfg->id_field[0] && !json_is_string(idv) && !json_is_integer(idv) ? cfg->id_field
                              : cfg->split_field[0] && !json_is_string(spv)                 ? cfg->split_field
                                                                                                   : NULL;
        if (missing) {
            json_decref(o);
            return ts_bad(r, &r->counts.missing_field, err, errlen,
                          "%s:%lld: field \"%s\" missing or of the wrong type",
                          c->path, (long long)c->line_no, missing);
        }
        enum ts_split given = TS_ALL;
        if (spv) {
            const char *v = json_string_value(spv);
            given = !strcmp(v, "train") ? TS_TRAIN : !strcmp(v, "valid") || !strcmp(v, "validation") ? TS_VALIDATION
                    : !strcmp(v, "test") ? TS_TEST : TS_ALL;
            if (given == TS_ALL) {
                rc = ts_bad(r, &r->counts.missing_field, err, errlen,
                            "%s:%lld: field \"%s\" is \"%.40s\", not train, valid, validation or test", c->path,
                            (long long)c->line_no, cfg->split_field, v);
                json_decref(o);
                return rc;
            }
        }
        const char *label = lab ? ts_intern(json_string_value(lab)) : c->label;
        char idbuf[32];
        const char *key = c->path;
        size_t key_len = strlen(c->path);
        int64_t index = c->line_no;
        if (json_is_integer(idv)) {
            snprintf(idbuf, sizeof idbuf, "%lld", (long long)json_integer_value(idv));
            key = idbuf;
            key_len = strlen(idbuf);
            index = -1;
        } else if (idv) {
            key = json_string_value(idv);
            key_len = json_string_length(idv);
            index = -1;
        }
        if (!label) {
            ts_errf(err, errlen, "too many distinct labels in field \"%s\"", cfg->label_field);
            rc = -1;
        } else {
            rc = ts_make(r, c, label, key, key_len, index, given, json_string_value(text), json_string_length(text),
                         c->line_no, out, err, errlen);
        }
        json_decref(o);
        if (rc != 0) return rc;
    }
}

/* The next document of the interleaved stream (before shuffling). */
static int ts_stream_next(ts_reader *r, ts_slot *out, char *err, size_t errlen) {
    while (r->n_active > 0) {
        /* Draw an open corpus with probability proportional to its weight (uniform if all 0). */
        double total = 0;
        for (size_t i = 0; i < r->n_corpora; i++)
            if (r->corpora[i].f) total += r->corpora[i].weight;
        double x = (double)(ts_rand(&r->rng) >> 11) * (1.0 / 9007199254740992.0) * total;
        size_t pick = total > 0 ? SIZE_MAX : ts_below(&r->rng, r->n_active), k = 0;
        ts_corpus *c = NULL;
        for (size_t i = 0; i < r->n_corpora && !c; i++) {
            if (!r->corpora[i].f) continue;
            if (total > 0 ? (x -= r->corpora[i].weight) < 0 : k++ == pick) c = &r->corpora[i];
        }
        for (size_t i = r->n_corpora; !c && i-- > 0;) /* rounding left x at >= 0: the last open one */
            if (r->corpora[i].f && (total == 0 || r->corpora[i].weight > 0)) c = &r->corpora[i];
        int rc = ts_corpus_next(r, c, out, err, errlen);
        if (!c->f) r->n_active--;
        /* Every replica draws the next corpus after each record another replica would return,
         * so all replicas walk the same interleaved stream. */
        if (rc != 0 && rc != TS_OTHER) return rc;
    }
    return 0;
}

int ts_next(ts_reader *r, ts_doc *doc, char *err, size_t errlen) {
    ts_slot_free(&r->out);
    size_t cap = r->cfg.shuffle_buffer;
    int rc;
    if (cap == 0) {
        rc = ts_stream_next(r, &r->out, err, errlen);
    } else {
        /* Fill the buffer, then hand out a random slot (its place taken by the last one). */
        while (r->n_slots < cap) {
            ts_slot s = {0};
            rc = ts_stream_next(r, &s, err, errlen);
            if (rc != 1) {
                ts_slot_free(&s);
                if (rc == 0) break;
                return rc;
            }
            r->slots[r->n_slots++] = s;
        }
        if (r->n_slots == 0) return 0;
        size_t j = ts_below(&r->rng_shuffle, r->n_slots);
        r->out = r->slots[j];
        r->slots[j] = r->slots[--r->n_slots];
        rc = 1;
    }
    if (rc == 1) {
        doc->doc_id = r->out.doc_id;
        doc->label = r->out.label;
        doc->split = r->out.split;
        doc->text = r->out.text;
        doc->text_len = r->out.text_len;
        doc->source = r->out.source;
    }
    return rc;
}

/* ---- the corpus fingerprint ---- */

#define TS_PRINT_SPAN (64u << 10) /* bytes read at each end of a file: 128 KiB a file at most */

/* CRC-32 of bytes [off, off + n) of fd (fewer at the end of the file), or -1. */
static int ts_crc_span(int fd, off_t off, size_t n, uLong *crc, unsigned char *buf) {
    ssize_t got = pread(fd, buf, n, off);
    if (got < 0) return -1;
    *crc = crc32(crc32(0L, Z_NULL, 0), buf, (uInt)got);
    return 0;
}

static int ts_cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int ts_fingerprint(const ts_reader *r, char *out, size_t cap, char *err, size_t errlen) {
    size_t n = 0;
    for (size_t i = 0; i < r->n_corpora; i++) n += r->corpora[i].n_files;
    uint32_t *digest = malloc((n ? n : 1) * sizeof *digest);
    unsigned char *buf = malloc(TS_PRINT_SPAN);
    int rc = digest && buf ? 0 : -1;
    if (rc) ts_errf(err, errlen, "out of memory");
    long long bytes = 0;
    size_t k = 0;
    for (size_t i = 0; rc == 0 && i < r->n_corpora; i++)
        for (size_t j = 0; rc == 0 && j < r->corpora[i].n_files; j++) {
            const ts_corpus *c = &r->corpora[i];
            int fd = open(c->files[j], O_RDONLY);
            struct stat st;
            uLong head = 0, tail = 0;
            if (fd < 0 || fstat(fd, &st) != 0 || ts_crc_span(fd, 0, TS_PRINT_SPAN, &head, buf) != 0 ||
                ts_crc_span(fd, st.st_size > TS_PRINT_SPAN ? st.st_size - TS_PRINT_SPAN : 0, TS_PRINT_SPAN, &tail,
                            buf) != 0) {
                ts_errf(err, errlen, "%s: %s", c->files[j], strerror(errno));
                rc = -1;
            } else {
                uint64_t fields[3] = {(uint64_t)st.st_size, head, tail};
                uLong d = crc32(crc32(0L, Z_NULL, 0), (const Bytef *)c->label, (uInt)strlen(c->label) + 1);
                digest[k++] = (uint32_t)crc32(d, (const Bytef *)fields, sizeof fields);
                bytes += st.st_size;
            }
            if (fd >= 0) close(fd);
        }
    if (rc == 0) {
        qsort(digest, k, sizeof *digest, ts_cmp_u32);
        uLong all = crc32(crc32(0L, Z_NULL, 0), (const Bytef *)digest, (uInt)(k * sizeof *digest));
        snprintf(out, cap, "v1:%08lx:%zu:%lld", all, k, bytes);
    }
    free(digest);
    free(buf);
    return rc;
}
