/* plugins.h — finding, loading and checking stage plugins. */
#ifndef SF_PLUGINS_H
#define SF_PLUGINS_H

#include "saeflow.h"

typedef struct sf_stage_entry {
    const sf_stage_def *def; /* in this saeflow's layout: fields newer than the plugin are 0 */
    const char *path;        /* the .so it came from */
    uint32_t abi;            /* the ABI version it was built for */
} sf_stage_entry;

/* The stage's check hook, or NULL (also for a plugin built before the hook existed). */
static inline int (*sf_stage_check_fn(const sf_stage_entry *e))(sf_ctx *) { return e->def->check; }

/* Loads every plugin found in the build tree (when saeflow runs from it), the install prefix,
 * and each directory of SAEFLOW_PLUGIN_PATH. Plugins that fail to load are reported as warnings
 * (quiet != 0 silences them); returns the number of stages known. */
int sf_plugins_load_default(int quiet);
/* Loads one plugin file (a path a pipeline names). SF_ERR with a message on failure. */
int sf_plugins_load_file(const char *path);
const sf_stage_entry *sf_plugins_find(const char *stage_name);
size_t sf_plugins_count(void);
const sf_stage_entry *sf_plugins_at(size_t i);
/* A subcommand some stage adds, or NULL. */
const sf_command *sf_plugins_command(const char *name);

#endif
