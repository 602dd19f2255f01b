/* Plugin discovery and loading. A plugin is refused, with a message saying why, when it cannot
 * be opened, lacks the two entry symbols, or was built for another ABI version. Each stage
 * definition is copied into structs of this saeflow's layout (what the plugin's version and sizes
 * cover, the rest zero), so the rest of saeflow reads every field of every plugin directly. */
#include <dirent.h>
#include <dlfcn.h>
#include <stddef.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sf_params.h"
#include "plugins.h"
#include "sf_kinds.h"

#define MAX_STAGES 256

static sf_stage_entry stages[MAX_STAGES];
static size_t n_stages;

static int valid_def(const sf_stage_def *d, const char *path) {
    if (!d->name || !*d->name) return sf_fail("%s: a stage has no name", path);
    for (const char *c = d->name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_'))
            return sf_fail("%s: stage name '%s' must be lowercase letters, digits and _", path, d->name);
    int source = d->max_inputs == 0;
    if (source && !d->produce) return sf_fail("%s: stage '%s' has no inputs and no produce callback", path, d->name);
    if (!source && !d->on_message) return sf_fail("%s: stage '%s' takes inputs but has no on_message callback", path, d->name);
    if (d->min_inputs < 0 || d->max_inputs < d->min_inputs)
        return sf_fail("%s: stage '%s' declares min_inputs %d > max_inputs %d", path, d->name, d->min_inputs, d->max_inputs);
    return SF_OK;
}

/* Every parameter's range well formed and its default within it; every declared kind known. */
static int valid_ranges(const sf_stage_def *d, const char *path) {
    for (const sf_param_def *pd = d->params; pd && pd->name; pd++)
        if (sf_range_valid(pd) != SF_OK) return sf_fail("%s: stage '%s': %s", path, d->name, sf_last_error());
    const char *kinds[2] = {d->takes, d->emits};
    for (int i = 0; i < 2; i++) {
        for (const char *k = kinds[i]; k && *k;) {
            size_t n = strcspn(k, ", ");
            if (n && !sf_kind_findn(k, n))
                return sf_fail("%s: stage '%s' %s '%.*s', which is not a message kind of core/MESSAGES.md "
                               "('saeflow stages --kinds' lists them)", path, d->name, i ? "emits" : "takes", (int)n, k);
            k += n + strspn(k + n, ", ");
        }
    }
    return SF_OK;
}

/* The sizes of the structs a plugin of ABI version v was compiled with (ABI 3 on: its own record). */
#define PARAM_SIZE_V1 offsetof(sf_param_def, range)
#define PARAM_SIZE_V3 (offsetof(sf_param_def, range) + sizeof(const char *))
#define DEF_SIZE_V1 offsetof(sf_stage_def, check)
#define DEF_SIZE_V2 offsetof(sf_stage_def, def_size)
#define DEF_SIZE_V3 (offsetof(sf_stage_def, emits) + sizeof(const char *))

/* A copy of the plugin's definition d in this saeflow's layout: NULL (sf_fail) when its recorded
 * sizes are impossible or memory runs out. */
static sf_stage_def *normalize_def(const sf_stage_def *d, uint32_t version, const char *path) {
    size_t def_size = version == 1 ? DEF_SIZE_V1 : version == 2 ? DEF_SIZE_V2 : d->def_size ? d->def_size : DEF_SIZE_V3;
    size_t param_size = version < 3 ? PARAM_SIZE_V1 : d->param_size ? d->param_size : PARAM_SIZE_V3;
    if ((version >= 3 && def_size < DEF_SIZE_V3) || param_size < PARAM_SIZE_V1 || param_size % sizeof(void *)) {
        sf_fail("%s: stage '%s' records struct sizes %zu and %zu, too small for its ABI %u: build it with SF_STAGE_DEF_SIZES",
                path, d->name ? d->name : "?", def_size, param_size, version);
        return NULL;
    }
    sf_stage_def *out = sf_zalloc("a stage definition", 1, sizeof *out);
    if (!out) return NULL;
    memcpy(out, d, def_size < sizeof *out ? def_size : sizeof *out);
    out->def_size = sizeof *out, out->param_size = sizeof(sf_param_def);
    if (!d->params) return out;
    size_t n = 0;
    const char *raw = (const char *)d->params;
    while (((const sf_param_def *)(raw + n * param_size))->name) n++;
    sf_param_def *params = sf_zalloc("a stage's parameter definitions", n + 1, sizeof *params);
    if (!params) {
        free(out);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        memcpy(&params[i], raw + i * param_size, param_size < sizeof *params ? param_size : sizeof *params);
    out->params = params;
    return out;
}

int sf_plugins_load_file(const char *path) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) return sf_fail("cannot load plugin %s: %s", path, dlerror());
    const uint32_t *abi = dlsym(h, "saeflow_abi_version");
    const sf_stage_def *const *(*list)(void) = (const sf_stage_def *const *(*)(void))dlsym(h, "saeflow_stages");
    if (!abi || !list) {
        dlclose(h);
        return sf_fail("%s is not a saeflow plugin: it does not export %s (build it with SF_PLUGIN(...) from saeflow.h)",
                       path, !abi ? "saeflow_abi_version" : "saeflow_stages");
    }
    uint32_t version = *abi;
    if (version < SF_ABI_OLDEST || version > SF_ABI_VERSION) {
        dlclose(h);
        return sf_fail("%s was built for saeflow stage ABI %u, but this saeflow speaks ABI %u (and loads %u to %u): rebuild the plugin against this saeflow.h",
                       path, version, SF_ABI_VERSION, SF_ABI_OLDEST, SF_ABI_VERSION);
    }
    char *keep = strdup(path);
    for (const sf_stage_def *const *d = list(); d && *d; d++) {
        if (valid_def(*d, path) != SF_OK) return SF_ERR;
        const sf_stage_entry *prev = sf_plugins_find((*d)->name);
        if (prev) {
            if (strcmp(prev->path, path) != 0)
                sf_log(SF_LOG_DEBUG, "stage '%s' from %s is shadowed by %s", (*d)->name, path, prev->path);
            continue;
        }
        if (n_stages == MAX_STAGES) return sf_fail("too many stages (more than %d)", MAX_STAGES);
        const sf_stage_def *def = normalize_def(*d, version, path); /* kept for the life of the process */
        if (!def || valid_ranges(def, path) != SF_OK) return SF_ERR;
        stages[n_stages++] = (sf_stage_entry){def, keep, version};
    }
    return SF_OK; /* the handle stays open for the life of the process */
}

static void load_dir(const char *dir, int depth, int quiet) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char *names[512];
    int n = 0;
    while ((e = readdir(d)) && n < 512)
        if (e->d_name[0] != '.') names[n++] = strdup(e->d_name);
    closedir(d);
    /* Sorted, so the first of two plugins defining a stage is the same every run. */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char *t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
        }
    for (int i = 0; i < n; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        size_t l = strlen(names[i]);
        if (l > 3 && strcmp(names[i] + l - 3, ".so") == 0) {
            if (sf_plugins_load_file(path) != SF_OK && !quiet) sf_log(SF_LOG_WARN, "%s", sf_last_error());
        } else if (depth > 0) {
            load_dir(path, depth - 1, quiet);
        }
        free(names[i]);
    }
}

static int running_from_build_tree(void) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return 0;
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    char build[PATH_MAX];
    if (!realpath(SF_BUILD_EXE_DIR, build)) return 0;
    return strcmp(exe, build) == 0;
}

int sf_plugins_load_default(int quiet) {
    const char *env = getenv("SAEFLOW_PLUGIN_PATH");
    if (env) { /* the user's directories come first, so they can override a built-in stage */
        char *copy = strdup(env), *save = NULL;
        for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save))
            load_dir(dir, 1, quiet);
        free(copy);
    }
    if (running_from_build_tree()) load_dir(SF_BUILD_STAGES_DIR, 1, quiet);
    else load_dir(SF_INSTALL_STAGES_DIR, 0, quiet);
    return (int)n_stages;
}

const sf_stage_entry *sf_plugins_find(const char *name) {
    for (size_t i = 0; i < n_stages; i++)
        if (strcmp(stages[i].def->name, name) == 0) return &stages[i];
    return NULL;
}

size_t sf_plugins_count(void) { return n_stages; }
const sf_stage_entry *sf_plugins_at(size_t i) { return i < n_stages ? &stages[i] : NULL; }

const sf_command *sf_plugins_command(const char *name) {
    for (size_t i = 0; i < n_stages; i++)
        for (const sf_command *c = stages[i].def->commands; c && c->name; c++)
            if (strcmp(c->name, name) == 0) return c;
    return NULL;
}
