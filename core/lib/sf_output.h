/* sf_output.h — finished outputs, the one owner of "a finished output is not silently
 * overwritten": a run claims its output directory at its start and, when complete, puts it in
 * place whole (sae_trainer's out_dir, feature_miner's out).
 *
 * sf_output_claim refuses a directory that holds a finished output (one of the caller's marker
 * files) unless the user set overwrite; a run that replaces the directory whole (aside, or
 * overwrite) also refuses one that holds anything else, since the swap would remove it. Such a
 * run writes into DIR.partial, a sibling, which sf_output_commit exchanges with DIR in one atomic
 * rename (sf_replace_dir) once complete: until then DIR is untouched, so a failed or interrupted
 * run leaves it as it was, and nothing of an earlier run (a stale per-feature file) survives.
 * A DIR.partial found at claim time was left by a run that did not complete; it is replaced (a
 * stage that can resume, such as sae_trainer, resumes only in DIR itself). */
#ifndef SF_OUTPUT_H
#define SF_OUTPUT_H

#include "saeflow.h"

typedef struct sf_output_mark {
    const char *file; /* e.g. "config.json" */
    const char *what; /* what it means is there, for the refusal: "an SAE" */
} sf_output_mark;

typedef struct sf_output_opts {
    const sf_output_mark *marks; /* files that make DIR a finished output; ends with {NULL, NULL} */
    const char *keep;            /* an entry that may be in DIR (an input of this run), or NULL */
    const char *also;            /* appended to the refusal's ways out, e.g. ", resume = true to continue it" */
    int aside;                   /* 1: always write in DIR.partial (committed whole); 0: in DIR, unless replacing */
    int overwrite;               /* the user's overwrite = true */
} sf_output_opts;

typedef struct sf_output {
    char dir[4096];  /* where the finished output goes */
    char work[4200]; /* where this run writes: dir itself, or dir + ".partial" */
} sf_output;

/* Checks dir as above, then makes work (with its parents; an old DIR.partial removed first).
 * SF_ERR with sf_last_error() naming what dir holds and how to go on. */
SF_EXPORT int sf_output_claim(sf_output *o, const char *dir, const sf_output_opts *opts);
/* The run is complete: work takes dir's place whole (nothing to do when work is dir). */
SF_EXPORT int sf_output_commit(const sf_output *o);
/* The run failed: removes work when it is DIR.partial (dir stays as it was); keeps sf_last_error(). */
SF_EXPORT void sf_output_abandon(const sf_output *o);
/* mkdir -p: dir and its missing parents. SF_OK or SF_ERR. */
SF_EXPORT int sf_mkdirs(const char *dir);

#endif
