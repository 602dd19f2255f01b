/* util.c — the small utilities of sf_util.h: a durable rename of a finished temp file,
 * the monotonic clock, and the per-process cache of shared read-only objects. */
#include "sf_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sf_safetensors.h"

int sf_rename_durable(const char *tmp, const char *path) {
    int fd = open(tmp, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        int err = errno;
        if (fd >= 0) close(fd);
        unlink(tmp);
        return sf_fail("writing %s: cannot sync %s: %s", path, tmp, strerror(err));
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        int err = errno;
        unlink(tmp);
        return sf_fail("renaming %s to %s: %s", tmp, path, strerror(err));
    }
    return sf_sync_parent(path);
}

double sf_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct sf_shared_entry {
    char *key;
    void *obj;
    int refs;
    sf_shared_entry *next;
};

void *sf_shared_acquire(sf_shared_cache *c, const char *key, void *(*load)(const char *key, void *arg), void *arg) {
    pthread_mutex_lock(&c->lock);
    sf_shared_entry *e = c->head;
    while (e && strcmp(e->key, key) != 0) e = e->next;
    if (!e) {
        void *obj = load(key, arg);
        if (obj && (!(e = sf_zalloc("a shared-object cache entry", 1, sizeof *e)) ||
                    !(e->key = sf_strdup("a shared-object cache key", key)))) {
            free(e);
            e = NULL;
            c->free_obj(obj);
        } else if (obj) {
            e->obj = obj;
            e->next = c->head;
            c->head = e;
        }
    }
    if (e) e->refs++;
    pthread_mutex_unlock(&c->lock);
    return e ? e->obj : NULL;
}

void sf_shared_release(sf_shared_cache *c, void *obj) {
    if (!obj) return;
    pthread_mutex_lock(&c->lock);
    for (sf_shared_entry **pe = &c->head; *pe; pe = &(*pe)->next) {
        sf_shared_entry *e = *pe;
        if (e->obj != obj) continue;
        if (--e->refs == 0) {
            *pe = e->next;
            c->free_obj(e->obj);
            free(e->key);
            free(e);
        }
        break;
    }
    pthread_mutex_unlock(&c->lock);
}
