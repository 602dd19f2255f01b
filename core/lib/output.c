/* output.c — finished outputs claimed at a run's start and replaced whole at its end; see
 * sf_output.h. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "sf_output.h"
#include "sf_safetensors.h"

int sf_mkdirs(const char *dir) {
    char buf[4200];
    size_t len = strlen(dir);
    if (len == 0 || len >= sizeof buf) return sf_fail("bad directory name '%s'", dir);
    memcpy(buf, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) return sf_fail("cannot create directory %s: %s", buf, strerror(errno));
        buf[i] = c;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return sf_fail("%s is not a directory", dir);
    return SF_OK;
}

int sf_output_claim(sf_output *o, const char *dir, const sf_output_opts *opts) {
    if ((size_t)snprintf(o->dir, sizeof o->dir, "%s", dir) >= sizeof o->dir || !dir[0])
        return sf_fail("output directory '%s': empty or too long", dir);
    const sf_output_mark *mark = NULL;
    char other[300] = "";
    DIR *d = opendir(dir);
    if (!d && errno != ENOENT) return sf_fail("output directory %s: %s", dir, strerror(errno));
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || (opts->keep && !strcmp(e->d_name, opts->keep)))
            continue;
        for (const sf_output_mark *m = opts->marks; m && m->file && !mark; m++)
            if (!strcmp(e->d_name, m->file)) mark = m;
        if (!other[0]) snprintf(other, sizeof other, "files (%s ...)", e->d_name);
    }
    if (d) closedir(d);
    int replaces = mark || (opts->aside && other[0]);
    if (replaces && !opts->overwrite)
        return sf_fail("%s already holds %s%s%s%s: set overwrite = true to replace it whole when this run completes%s, "
                       "or use another directory", dir, mark ? mark->what : other, mark ? " (" : "",
                       mark ? mark->file : "", mark ? ")" : "", opts->also ? opts->also : "");
    snprintf(o->work, sizeof o->work, "%s%s", dir, opts->aside || replaces ? ".partial" : "");
    if (strcmp(o->work, o->dir) != 0) {
        if (sf_remove_tree(o->work) != SF_OK) return SF_ERR; /* left by a run that did not complete */
        if (replaces) sf_log(SF_LOG_INFO, "overwrite: writing %s; it replaces %s when complete", o->work, dir);
    }
    return sf_mkdirs(o->work);
}

int sf_output_commit(const sf_output *o) {
    return strcmp(o->work, o->dir) ? sf_replace_dir(o->work, o->dir) : SF_OK;
}

void sf_output_abandon(const sf_output *o) {
    if (!o->work[0] || !strcmp(o->work, o->dir)) return;
    char err[1024];
    snprintf(err, sizeof err, "%s", sf_last_error());
    sf_remove_tree(o->work);
    if (err[0]) sf_fail("%s", err); /* the run's error, not the removal's */
}
