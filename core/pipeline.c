/* Pipeline files: a line-oriented format, parsed in one pass, then validated against the stages'
 * own parameter declarations. Every error names file:line and says how to fix it. */
#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sf_params.h"
#include "pipeline.h"

typedef struct parser {
    const char *path;
    int line;
    sf_pipeline *p;
    sf_stage_decl *open; /* the stage block being read */
} parser;

static int perr(const parser *ps, int line, const char *fmt, ...) SF_PRINTF(3, 4);
static int perr(const parser *ps, int line, const char *fmt, ...) {
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sf_fail("%s:%d: %s", ps->path, line, msg);
}

/* A copy of a piece of the file; NULL with sf_last_error() when memory runs out. */
static char *dup_text(const char *s) { return sf_strdup("a pipeline file's text", s); }

/* Room for one more entry in arr (n entries now); SF_ERR when memory runs out. */
static int grow_by_one(void **arr, size_t n, size_t size) {
    void *a = sf_realloc(*arr, "a pipeline file's entries", n + 1, size);
    if (!a) return SF_ERR;
    *arr = a;
    return SF_OK;
}
#define GROW(arr, n) do { if (grow_by_one((void **)&(arr), (size_t)(n), sizeof *(arr)) != SF_OK) return SF_ERR; } while (0)

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

static int is_ident(const char *s) {
    if (!*s || !(isalpha((unsigned char)*s) || *s == '_')) return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_')) return 0;
    return 1;
}

static const char *var_value(const sf_pipeline *p, const char *name, size_t n) {
    for (int i = p->n_vars - 1; i >= 0; i--)
        if (strlen(p->vars[i].key) == n && strncmp(p->vars[i].key, name, n) == 0) return p->vars[i].value;
    return NULL;
}

/* Reads a value: a "quoted string" (with \" and \\) or a bare word up to a # comment; then
 * substitutes ${name} from the variables defined so far. */
static int read_value(parser *ps, char *s, char **out) {
    char raw[4096];
    size_t n = 0;
    s = trim(s);
    if (*s == '"') {
        for (s++; *s && *s != '"'; s++) {
            if (*s == '\\' && (s[1] == '"' || s[1] == '\\')) s++;
            if (n + 1 >= sizeof raw) return perr(ps, ps->line, "value is too long");
            raw[n++] = *s;
        }
        if (*s != '"') return perr(ps, ps->line, "unterminated string: add the closing \"");
        char *rest = trim(s + 1);
        if (*rest && *rest != '#') return perr(ps, ps->line, "unexpected text after the closing quote: '%s'", rest);
    } else {
        char *hash = strchr(s, '#');
        if (hash) *hash = 0;
        s = trim(s);
        if (strlen(s) >= sizeof raw) return perr(ps, ps->line, "value is too long");
        n = strlen(s);
        memcpy(raw, s, n);
    }
    raw[n] = 0;
    char val[8192];
    size_t m = 0;
    for (char *c = raw; *c;) {
        if (c[0] == '$' && c[1] == '{') {
            char *end = strchr(c, '}');
            if (!end) return perr(ps, ps->line, "'${' without a closing '}'");
            const char *v = var_value(ps->p, c + 2, (size_t)(end - c - 2));
            if (!v)
                return perr(ps, ps->line, "undefined variable '%.*s': define it with 'set %.*s = ...' above, or pass %.*s=... on the command line",
                            (int)(end - c - 2), c + 2, (int)(end - c - 2), c + 2, (int)(end - c - 2), c + 2);
            size_t l = strlen(v);
            if (m + l >= sizeof val) return perr(ps, ps->line, "value is too long after substitution");
            memcpy(val + m, v, l);
            m += l;
            c = end + 1;
        } else {
            if (m + 1 >= sizeof val) return perr(ps, ps->line, "value is too long after substitution");
            val[m++] = *c++;
        }
    }
    val[m] = 0;
    return (*out = dup_text(val)) ? SF_OK : SF_ERR;
}

/* Splits "name = rest" at the first '='. */
static int split_assign(parser *ps, char *s, char **name, char **rest, const char *what) {
    char *eq = strchr(s, '=');
    if (!eq) return perr(ps, ps->line, "expected '%s NAME = VALUE'", what);
    *eq = 0;
    *name = trim(s);
    *rest = eq + 1;
    if (!is_ident(*name)) return perr(ps, ps->line, "'%s' is not a valid name (letters, digits, _)", *name);
    return SF_OK;
}

static int add_var(sf_pipeline *p, const char *key, const char *value, int line) {
    GROW(p->vars, p->n_vars);
    char *k = dup_text(key), *v = k ? dup_text(value) : NULL;
    if (!v) return free(k), SF_ERR;
    p->vars[p->n_vars++] = (sf_kv){k, v, line};
    return SF_OK;
}

static int stage_key(parser *ps, char *s) {
    sf_stage_decl *st = ps->open;
    char *key, *rest, *value;
    if (split_assign(ps, s, &key, &rest, "KEY") != SF_OK) return SF_ERR;
    if (read_value(ps, rest, &value) != SF_OK) return SF_ERR;
    for (int i = 0; i < st->n_params; i++)
        if (strcmp(st->params[i].key, key) == 0) {
            free(value);
            return perr(ps, ps->line, "'%s' is set twice in stage '%s' (first on line %d)", key, st->name, st->params[i].line);
        }
    if (strcmp(key, "input") == 0) {
        st->inputs_line = ps->line;
        char *save = NULL;
        int rc = SF_OK;
        for (char *tok = strtok_r(value, ",", &save); tok && rc == SF_OK; tok = strtok_r(NULL, ",", &save)) {
            char *in = NULL;
            if ((rc = grow_by_one((void **)&st->inputs, (size_t)st->n_inputs, sizeof *st->inputs)) == SF_OK &&
                !(in = dup_text(trim(tok))))
                rc = SF_ERR;
            if (in) st->inputs[st->n_inputs++] = in;
        }
        free(value);
        return rc;
    }
    char *k = dup_text(key);
    if (!k || grow_by_one((void **)&st->params, (size_t)st->n_params, sizeof *st->params) != SF_OK) {
        free(k), free(value);
        return SF_ERR;
    }
    st->params[st->n_params++] = (sf_kv){k, value, ps->line};
    return SF_OK;
}

static int parse_line(parser *ps, char *line, const char *dir) {
    char *s = trim(line);
    if (!*s || *s == '#') return SF_OK;
    if (ps->open) {
        if (strcmp(s, "}") == 0) {
            ps->open = NULL;
            return SF_OK;
        }
        if (strncmp(s, "stage ", 6) == 0)
            return perr(ps, ps->line, "stage block '%s' (line %d) is not closed: add '}' before this line", ps->open->name, ps->open->line);
        return stage_key(ps, s);
    }
    sf_pipeline *p = ps->p;
    char *name, *rest, *value;
    if (strncmp(s, "set ", 4) == 0) {
        if (split_assign(ps, s + 4, &name, &rest, "set") != SF_OK || read_value(ps, rest, &value) != SF_OK) return SF_ERR;
        /* command-line overrides came first and win; mark them as declared */
        int overridden = 0;
        for (int i = 0; i < p->n_vars; i++)
            if (p->vars[i].line <= 0 && strcmp(p->vars[i].key, name) == 0) p->vars[i].line = -1, overridden = 1;
        int rc = overridden ? SF_OK : add_var(p, name, value, ps->line);
        free(value);
        return rc;
    }
    if (strncmp(s, "plugin ", 7) == 0) {
        if (read_value(ps, s + 7, &value) != SF_OK) return SF_ERR;
        char path[PATH_MAX];
        if (value[0] == '/') snprintf(path, sizeof path, "%s", value);
        else snprintf(path, sizeof path, "%s/%s", dir, value);
        free(value);
        if (sf_plugins_load_file(path) != SF_OK) return perr(ps, ps->line, "%s", sf_last_error());
        return SF_OK;
    }
    if (strncmp(s, "curve ", 6) == 0) {
        if (p->curve_dir) return perr(ps, ps->line, "a second 'curve' line: one key directory serves the whole pipeline");
        /* relative to the working directory, like the stages' file parameters */
        return read_value(ps, s + 6, &p->curve_dir);
    }
    if (strncmp(s, "host ", 5) == 0) {
        if (split_assign(ps, s + 5, &name, &rest, "host") != SF_OK || read_value(ps, rest, &value) != SF_OK) return SF_ERR;
        if (strncmp(value, "tcp://", 6) != 0 && strncmp(value, "ipc://", 6) != 0) {
            free(value);
            return perr(ps, ps->line, "host '%s' must be tcp://ADDRESS:PORT or ipc://DIRECTORY", name);
        }
        if (strncmp(value, "tcp://", 6) == 0) {
            const char *colon = strrchr(value + 6, ':');
            char *end;
            long port = colon ? strtol(colon + 1, &end, 10) : 0;
            if (!colon || !colon[1] || *end || port < 1 || port > 65535) {
                free(value);
                return perr(ps, ps->line, "host '%s' needs a first port from 1 to 65535: tcp://ADDRESS:PORT", name);
            }
        }
        char *n = dup_text(name);
        if (!n || grow_by_one((void **)&p->hosts, (size_t)p->n_hosts, sizeof *p->hosts) != SF_OK) {
            free(n), free(value);
            return SF_ERR;
        }
        p->hosts[p->n_hosts++] = (sf_host){n, value, ps->line};
        return SF_OK;
    }
    if (strncmp(s, "stage ", 6) == 0) {
        char *type;
        if (split_assign(ps, s + 6, &name, &rest, "stage") != SF_OK) return SF_ERR;
        char *brace = strchr(rest, '{');
        if (!brace || *trim(brace + 1)) return perr(ps, ps->line, "expected 'stage %s = TYPE {' with '{' ending the line", name);
        *brace = 0;
        type = trim(rest);
        if (!is_ident(type)) return perr(ps, ps->line, "'%s' is not a stage type name", type);
        for (int i = 0; i < p->n_stages; i++)
            if (strcmp(p->stages[i].name, name) == 0)
                return perr(ps, ps->line, "stage '%s' is defined twice (first on line %d): give each stage its own name", name, p->stages[i].line);
        GROW(p->stages, p->n_stages);
        sf_stage_decl *st = &p->stages[p->n_stages++];
        memset(st, 0, sizeof *st);
        if (!(st->name = dup_text(name)) || !(st->type = dup_text(type))) return SF_ERR;
        st->line = ps->line;
        st->replicas = 1;
        ps->open = st;
        return SF_OK;
    }
    return perr(ps, ps->line, "expected 'stage', 'set', 'host', 'curve' or 'plugin', found '%.40s'", s);
}

/* Candidates for sf_closest: a stage's parameter names, the known stage types, a file's variables. */
static const char *next_param(void *arg, size_t i) {
    const sf_param_def *pd = ((const sf_stage_def *)arg)->params;
    for (size_t k = 0; pd && pd[k].name; k++)
        if (k == i) return pd[k].name;
    return NULL;
}
static const char *next_stage_type(void *arg, size_t i) {
    (void)arg;
    const sf_stage_entry *e = sf_plugins_at(i);
    return e ? e->def->name : NULL;
}
static const char *next_var(void *arg, size_t i) {
    const sf_pipeline *p = arg;
    for (int k = 0, n = 0; k < p->n_vars; k++) /* the file's own: line > 0 */
        if (p->vars[k].line > 0 && (size_t)n++ == i) return p->vars[k].key;
    return NULL;
}

/* " (did you mean 'x'?)" for the closest candidate, or "". */
static const char *did_you_mean(const char *word, const char *(*next)(void *, size_t), void *arg, char *buf, size_t cap) {
    const char *near = sf_closest(word, next, arg);
    if (near) snprintf(buf, cap, " (did you mean '%s'?)", near);
    else buf[0] = 0;
    return buf;
}

/* Whether kind (one word) is among the comma-separated kinds of list. */
static int kind_in(const char *kind, const char *list) {
    size_t n = strlen(kind);
    for (const char *k = list; *k;) {
        size_t m = strcspn(k, ", ");
        if (m == n && !memcmp(k, kind, n)) return 1;
        k += m + strspn(k + m, ", ");
    }
    return 0;
}

/* The stage types that emit one of the kinds of takes, as "forward, shard_source", into buf. */
static const char *emitters_of(const char *takes, char *buf, size_t cap) {
    buf[0] = 0;
    const sf_stage_entry *e;
    for (size_t i = 0; (e = sf_plugins_at(i)); i++)
        if (e->def->emits && kind_in(e->def->emits, takes))
            snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s", buf[0] ? ", " : "", e->def->name);
    return buf[0] ? buf : "none loaded";
}

static const sf_param_def *param_def(const sf_stage_def *d, const char *name) {
    for (const sf_param_def *pd = d->params; pd && pd->name; pd++)
        if (strcmp(pd->name, name) == 0) return pd;
    return NULL;
}

static int check_type(const sf_param_def *pd, const char *v) {
    char *end;
    errno = 0;
    switch (pd->type) {
    case SF_PARAM_INT: strtoll(v, &end, 0); return *v && !*end && !errno;
    case SF_PARAM_FLOAT: strtod(v, &end); return *v && !*end && !errno;
    case SF_PARAM_BOOL: return !strcmp(v, "true") || !strcmp(v, "false") || !strcmp(v, "1") || !strcmp(v, "0");
    default: return 1;
    }
}

static const char *type_name(sf_param_type t) {
    static const char *names[] = {"int", "float", "bool", "string"};
    return names[t];
}

/* Takes reserved keys (replicas, host, distribute, enabled) out of the params and checks the rest. */
static int validate_stage(parser *ps, sf_stage_decl *st) {
    sf_pipeline *p = ps->p;
    st->entry = sf_plugins_find(st->type);
    char hint[200];
    if (!st->entry)
        return perr(ps, st->line, "unknown stage type '%s'%s: 'saeflow stages' lists the available ones (add a 'plugin \"path.so\"' line for your own)",
                    st->type, did_you_mean(st->type, next_stage_type, NULL, hint, sizeof hint));
    const sf_stage_def *d = st->entry->def;
    int kept = 0;
    for (int i = 0; i < st->n_params; i++) {
        sf_kv *kv = &st->params[i];
        if (strcmp(kv->key, "replicas") == 0) {
            char *end;
            long r = strtol(kv->value, &end, 10);
            if (*end || r < 1 || r > 64) return perr(ps, kv->line, "replicas must be a whole number from 1 to 64");
            st->replicas = (int)r;
        } else if (strcmp(kv->key, "distribute") == 0) {
            if (strcmp(kv->value, "share") && strcmp(kv->value, "broadcast"))
                return perr(ps, kv->line, "distribute must be 'share' (each message to one replica) or 'broadcast' (to every replica)");
            st->broadcast = !strcmp(kv->value, "broadcast");
        } else if (strcmp(kv->key, "enabled") == 0) {
            /* read by drop_disabled: this stage is enabled */
        } else if (strcmp(kv->key, "host") == 0) {
            char *save = NULL;
            for (char *tok = strtok_r(kv->value, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                tok = trim(tok);
                int found = -1;
                for (int h = 0; h < p->n_hosts; h++)
                    if (strcmp(p->hosts[h].name, tok) == 0) found = h;
                if (found < 0) return perr(ps, kv->line, "unknown host '%s': declare it with 'host %s = tcp://ADDRESS:PORT'", tok, tok);
                GROW(st->hosts, st->n_hosts);
                st->hosts[st->n_hosts++] = found;
            }
        } else {
            const sf_param_def *pd = param_def(d, kv->key);
            if (!pd) {
                char list[600] = "";
                for (const sf_param_def *q = d->params; q && q->name; q++)
                    snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", list[0] ? ", " : "", q->name);
                return perr(ps, kv->line, "stage '%s' (%s) has no parameter '%s'%s; its parameters are: %s", st->name, st->type, kv->key,
                            did_you_mean(kv->key, next_param, (void *)d, hint, sizeof hint), list[0] ? list : "(none)");
            }
            if (!check_type(pd, kv->value))
                return perr(ps, kv->line, "parameter '%s' of stage '%s' must be %s, not '%s'", kv->key, st->name, type_name(pd->type), kv->value);
            if (sf_range_check(pd, kv->value) != SF_OK)
                return perr(ps, kv->line, "parameter '%s' of stage '%s' (%s) %s", kv->key, st->name, st->type, sf_last_error());
            continue;
        }
        /* a reserved key, now read: out of the parameters (after the loop, so that an error
         * above leaves every entry owned once) */
        free(kv->key);
        free(kv->value);
        kv->key = kv->value = NULL;
    }
    for (int i = 0; i < st->n_params; i++)
        if (st->params[i].key) st->params[kept++] = st->params[i];
    st->n_params = kept;
    for (const sf_param_def *pd = d->params; pd && pd->name; pd++)
        if (!pd->default_value && !sf_pipeline_param(st, pd->name))
            return perr(ps, st->line, "stage '%s' (%s) needs parameter '%s' (%s): %s", st->name, st->type, pd->name, type_name(pd->type), pd->doc ? pd->doc : "");
    if (p->n_hosts && !st->n_hosts)
        return perr(ps, st->line, "stage '%s' has no 'host = NAME': with hosts declared, every stage needs one", st->name);
    int line = st->inputs_line ? st->inputs_line : st->line;
    if (d->max_inputs == 0 && st->n_inputs)
        return perr(ps, line, "stage '%s' (%s) is a source and takes no input", st->name, st->type);
    if (st->n_inputs < d->min_inputs || st->n_inputs > d->max_inputs)
        return perr(ps, line, "stage '%s' (%s) takes %d to %d inputs, not %d: set 'input = NAME[, NAME...]'", st->name, st->type,
                    d->min_inputs, d->max_inputs, st->n_inputs);
    if (!(st->input_idx = sf_zalloc("a stage's inputs", (size_t)st->n_inputs + 1, sizeof *st->input_idx))) return SF_ERR;
    for (int i = 0; i < st->n_inputs; i++) {
        int found = -1;
        for (int j = 0; j < p->n_stages; j++)
            if (strcmp(p->stages[j].name, st->inputs[i]) == 0) found = j;
        if (found < 0) return perr(ps, line, "stage '%s' reads from '%s', which is not a stage in this file", st->name, st->inputs[i]);
        if (&p->stages[found] == st) return perr(ps, line, "stage '%s' reads from itself: data must flow one way (name another stage)", st->name);
        if (!p->stages[found].entry) p->stages[found].entry = sf_plugins_find(p->stages[found].type);
        if (p->stages[found].entry && !p->stages[found].entry->def->has_output)
            return perr(ps, line, "stage '%s' reads from '%s', but %s is a sink with no output", st->name, st->inputs[i], p->stages[found].type);
        for (int k = 0; k < i; k++)
            if (st->input_idx[k] == found) return perr(ps, line, "stage '%s' lists input '%s' twice", st->name, st->inputs[i]);
        const sf_stage_def *u = p->stages[found].entry ? p->stages[found].entry->def : NULL;
        if (d->takes && u && u->emits && !kind_in(u->emits, d->takes)) {
            char fit[400];
            return perr(ps, line, "stage '%s' (%s) takes %s messages, but its input '%s' (%s) emits %s; stages that emit %s: %s "
                        "(core/MESSAGES.md)", st->name, st->type, d->takes, st->inputs[i], u->name, u->emits, d->takes,
                        emitters_of(d->takes, fit, sizeof fit));
        }
        st->input_idx[i] = found;
    }
    return SF_OK;
}

static void stage_decl_free(sf_stage_decl *st) {
    for (int j = 0; j < st->n_params; j++) free(st->params[j].key), free(st->params[j].value);
    for (int j = 0; j < st->n_inputs; j++) free(st->inputs[j]);
    free(st->params), free(st->inputs), free(st->input_idx), free(st->hosts), free(st->name), free(st->type);
}

/* Stages with `enabled = false` are taken out before anything is checked (a flow run in several
 * modes, e.g. the demo's evaluation only in the pass that needs it); a stage reading one is an error. */
static int drop_disabled(parser *ps) {
    sf_pipeline *p = ps->p;
    unsigned char *off = sf_zalloc("the disabled stages", (size_t)p->n_stages, 1);
    if (!off) return SF_ERR;
    int rc = SF_OK;
    for (int i = 0; i < p->n_stages && rc == SF_OK; i++)
        for (int j = 0; j < p->stages[i].n_params; j++) {
            const sf_kv *kv = &p->stages[i].params[j];
            if (strcmp(kv->key, "enabled")) continue;
            if (strcmp(kv->value, "true") && strcmp(kv->value, "false") && strcmp(kv->value, "1") && strcmp(kv->value, "0"))
                rc = perr(ps, kv->line, "enabled must be true or false, not '%s'", kv->value);
            off[i] = !strcmp(kv->value, "false") || !strcmp(kv->value, "0");
        }
    for (int i = 0; i < p->n_stages && rc == SF_OK; i++)
        for (int k = 0; k < p->stages[i].n_inputs && !off[i] && rc == SF_OK; k++)
            for (int j = 0; j < p->n_stages; j++)
                if (off[j] && !strcmp(p->stages[j].name, p->stages[i].inputs[k]))
                    rc = perr(ps, p->stages[i].inputs_line ? p->stages[i].inputs_line : p->stages[i].line,
                              "stage '%s' reads from '%s', which is disabled (enabled = false): disable it too, or "
                              "enable '%s'", p->stages[i].name, p->stages[j].name, p->stages[j].name);
    int kept = 0;
    for (int i = 0; i < p->n_stages; i++) {
        sf_stage_decl *st = &p->stages[i];
        if (rc != SF_OK || !off[i]) p->stages[kept++] = *st;
        else stage_decl_free(st);
    }
    p->n_stages = kept;
    free(off);
    if (rc == SF_OK && p->n_stages == 0) rc = perr(ps, ps->line, "every stage is disabled (enabled = false)");
    return rc;
}

/* Depth-first search for a cycle through inputs; 0 unvisited, 1 on the path, 2 done. */
static int find_cycle(parser *ps, int s, int *mark) {
    sf_stage_decl *st = &ps->p->stages[s];
    mark[s] = 1;
    for (int i = 0; i < st->n_inputs; i++) {
        int u = st->input_idx[i];
        if (mark[u] == 1)
            return perr(ps, st->inputs_line, "stages form a cycle through '%s' and '%s': data must flow one way", st->name, ps->p->stages[u].name);
        if (mark[u] == 0 && find_cycle(ps, u, mark) != SF_OK) return SF_ERR;
    }
    mark[s] = 2;
    return SF_OK;
}

/* The pipeline's size against SF_MAX_INSTANCES, and each tcp host's ports: instance k listens on
 * the host's first port + k, which must stay a port. */
static int check_counts(parser *ps) {
    const sf_pipeline *p = ps->p;
    int instances = 0, crossing = -1; /* the stage whose instances pass the limit */
    for (int i = 0; i < p->n_stages; i++) {
        instances += p->stages[i].replicas;
        if (instances > SF_MAX_INSTANCES && crossing < 0) crossing = i;
    }
    if (crossing >= 0)
        return perr(ps, p->stages[crossing].line,
                    "%d stage instances (replicas included) in one pipeline; saeflow runs at most %d, and stage '%s' passes that: split it into pipelines joined by zmq_out / zmq_in, or use fewer replicas",
                    instances, SF_MAX_INSTANCES, p->stages[crossing].name);
    for (int h = 0; h < p->n_hosts; h++) {
        if (strncmp(p->hosts[h].endpoint, "tcp://", 6) != 0) continue;
        long first = strtol(strrchr(p->hosts[h].endpoint + 6, ':') + 1, NULL, 10);
        if (first + instances - 1 > 65535)
            return perr(ps, p->hosts[h].line, "host '%s': its stages listen on ports %ld to %ld (one per instance), beyond 65535: choose a first port up to %d",
                        p->hosts[h].name, first, first + instances - 1, 65535 - instances + 1);
    }
    return SF_OK;
}

sf_pipeline *sf_pipeline_load(const char *path, char **overrides, int n_overrides) {
    FILE *f = fopen(path, "r");
    if (!f) return sf_fail("%s: %s", path, strerror(errno)), NULL;
    sf_pipeline *p = sf_zalloc("a pipeline", 1, sizeof *p);
    if (!p || !(p->path = dup_text(path))) {
        fclose(f);
        sf_pipeline_free(p);
        return NULL;
    }
    parser ps = {.path = path, .p = p};
    for (int i = 0; i < n_overrides; i++) {
        char *eq = strchr(overrides[i], '=');
        if (!eq || eq == overrides[i]) {
            sf_fail("command line: '%s' is not KEY=VALUE", overrides[i]);
            goto fail;
        }
        *eq = 0;
        int rc = add_var(p, overrides[i], eq + 1, 0);
        *eq = '=';
        if (rc != SF_OK) goto fail;
    }
    int n_cli = p->n_vars;
    char dirbuf[PATH_MAX];
    snprintf(dirbuf, sizeof dirbuf, "%s", path);
    const char *dir = dirname(dirbuf);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        ps.line++;
        const char *nul = memchr(line, 0, (size_t)len);
        if (nul) {
            perr(&ps, ps.line, "a NUL byte at column %d: a pipeline file is text (is this the right file?)", (int)(nul - line) + 1);
            free(line);
            goto fail;
        }
        if (parse_line(&ps, line, dir) != SF_OK) {
            free(line);
            goto fail;
        }
    }
    free(line);
    if (ps.open) {
        perr(&ps, ps.open->line, "stage block '%s' is not closed: add a line with '}'", ps.open->name);
        goto fail;
    }
    for (int i = 0; i < n_cli; i++) {
        if (p->vars[i].line == 0) {
            char hint[200];
            sf_fail("command line: '%s' is not a variable of %s%s (declare it there with 'set %s = ...')", p->vars[i].key, path,
                    did_you_mean(p->vars[i].key, next_var, p, hint, sizeof hint), p->vars[i].key);
            goto fail;
        }
    }
    if (p->n_stages == 0) {
        perr(&ps, ps.line, "no stages: add a block 'stage NAME = TYPE { ... }'");
        goto fail;
    }
    if (drop_disabled(&ps) != SF_OK) goto fail;
    for (int i = 0; i < p->n_stages; i++)
        if (validate_stage(&ps, &p->stages[i]) != SF_OK) goto fail;
    if (check_counts(&ps) != SF_OK) goto fail;
    int *mark = sf_zalloc("the cycle search's marks", (size_t)p->n_stages, sizeof *mark);
    if (!mark) goto fail;
    for (int i = 0; i < p->n_stages; i++)
        if (mark[i] == 0 && find_cycle(&ps, i, mark) != SF_OK) {
            free(mark);
            goto fail;
        }
    free(mark);
    fclose(f);
    return p;
fail:
    fclose(f);
    sf_pipeline_free(p);
    return NULL;
}

void sf_pipeline_free(sf_pipeline *p) {
    if (!p) return;
    for (int i = 0; i < p->n_stages; i++) stage_decl_free(&p->stages[i]);
    for (int i = 0; i < p->n_hosts; i++) free(p->hosts[i].name), free(p->hosts[i].endpoint);
    for (int i = 0; i < p->n_vars; i++) free(p->vars[i].key), free(p->vars[i].value);
    free(p->stages), free(p->hosts), free(p->vars), free(p->path), free(p->curve_dir);
    free(p);
}

const char *sf_pipeline_param(const sf_stage_decl *s, const char *name) {
    for (int i = 0; i < s->n_params; i++)
        if (strcmp(s->params[i].key, name) == 0) return s->params[i].value;
    if (s->entry)
        for (const sf_param_def *pd = s->entry->def->params; pd && pd->name; pd++)
            if (strcmp(pd->name, name) == 0) return pd->default_value;
    return NULL;
}
