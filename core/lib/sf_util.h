/* sf_util.h — small utilities the built-in stages and the runtime share, each written once here:
 * giving a finished temp file its name durably, the monotonic clock, and
 * the per-process cache that lets the replicas of a stage share one read-only model or tokenizer.
 * (Atomic whole-file writes are sf_write_file_atomic in sf_safetensors.h, mkdir -p sf_mkdirs in
 * sf_output.h.) */
#ifndef SF_UTIL_H
#define SF_UTIL_H

#include <pthread.h>

#include "saeflow.h"

/* The end of writing a file through a temporary name: fsyncs tmp, renames it to path, fsyncs the
 * directory, so after a crash path is either absent (or its older self) or complete. On failure tmp
 * is removed and path is unchanged. SF_OK or SF_ERR. */
SF_EXPORT int sf_rename_durable(const char *tmp, const char *path);

/* Seconds on the monotonic clock (for durations and rates; not the time of day). */
SF_EXPORT double sf_now(void);

/* A per-process cache of read-only objects (a model's weights, a tokenizer) shared by the replicas
 * of a stage that run in one process: the first acquire of a key loads it, later ones share it,
 * the last release frees it. Declare one per kind of object:
 *     static sf_shared_cache models = SF_SHARED_CACHE_INIT(free_model);                          */
typedef struct sf_shared_entry sf_shared_entry;
typedef struct sf_shared_cache {
    pthread_mutex_t lock;
    sf_shared_entry *head;
    void (*free_obj)(void *obj);
} sf_shared_cache;
#define SF_SHARED_CACHE_INIT(free_fn) {PTHREAD_MUTEX_INITIALIZER, NULL, (free_fn)}

/* The object cached under key, loaded with load(key, arg) if absent. Loads under the cache's lock,
 * so a second replica waits for the first's copy instead of loading its own. NULL with
 * sf_last_error() set when load fails (load reports with sf_fail) or memory runs out (the loaded
 * object is then freed). */
SF_EXPORT void *sf_shared_acquire(sf_shared_cache *c, const char *key, void *(*load)(const char *key, void *arg),
                                  void *arg);
/* Drops one reference to obj (from sf_shared_acquire on c); frees it with the last. NULL is fine. */
SF_EXPORT void sf_shared_release(sf_shared_cache *c, void *obj);

#endif
