/* test_util.c — the core library's small utilities (sf_util.h; and sf_output.h's mkdir -p): the
 * durable rename of a finished temp file, the monotonic clock, and the shared-object cache's load-once, share,
 * free-with-the-last-release and failure paths. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sf_check.h"
#include "sf_output.h"
#include "sf_util.h"

static int loads, frees;

static void *load_ok(const char *key, void *arg) {
    (void)arg;
    loads++;
    return strdup(key);
}
static void *load_fail(const char *key, void *arg) {
    (void)arg;
    sf_fail("cannot load %s: planted failure", key);
    return NULL;
}
static void free_obj(void *p) {
    frees++;
    free(p);
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

int main(void) {
    char root[] = "/tmp/sf-util-XXXXXX", path[512], tmp[512];
    CHECK(mkdtemp(root) != NULL, "mkdtemp: %s", strerror(errno));

    /* mkdir -p: every missing parent, an existing path is fine, a file in the way is an error */
    snprintf(path, sizeof path, "%s/a/b/c", root);
    CHECK(sf_mkdirs(path) == SF_OK && is_dir(path), "sf_mkdirs %s: %s", path, sf_last_error());
    CHECK(sf_mkdirs(path) == SF_OK, "sf_mkdirs of an existing directory: %s", sf_last_error());
    snprintf(path, sizeof path, "%s/file", root);
    FILE *f = fopen(path, "w");
    CHECK(f && fclose(f) == 0, "create %s", path);
    snprintf(path, sizeof path, "%s/file/sub", root);
    CHECK(sf_mkdirs(path) == SF_ERR && strstr(sf_last_error(), "file"), "sf_mkdirs through a file: '%s'", sf_last_error());
    CHECK(sf_mkdirs("") == SF_ERR, "sf_mkdirs of an empty name");

    /* durable rename: the content arrives under the new name, the temp name is gone */
    snprintf(tmp, sizeof tmp, "%s/out.partial", root);
    snprintf(path, sizeof path, "%s/out", root);
    f = fopen(tmp, "w");
    CHECK(f && fputs("hello", f) >= 0 && fclose(f) == 0, "write %s", tmp);
    CHECK(sf_rename_durable(tmp, path) == SF_OK, "sf_rename_durable: %s", sf_last_error());
    char buf[16] = {0};
    f = fopen(path, "r");
    CHECK(f && fread(buf, 1, sizeof buf - 1, f) == 5 && strcmp(buf, "hello") == 0, "renamed content '%s'", buf);
    if (f) fclose(f);
    CHECK(access(tmp, F_OK) != 0, "temp name still there");
    CHECK(sf_rename_durable(tmp, path) == SF_ERR && strstr(sf_last_error(), "out"), "a missing temp file is an error");
    snprintf(path, sizeof path, "%s/a", root); /* a rename onto a non-empty directory fails, removing tmp */
    f = fopen(tmp, "w");
    CHECK(f && fclose(f) == 0, "write %s", tmp);
    CHECK(sf_rename_durable(tmp, path) == SF_ERR && access(tmp, F_OK) != 0 && is_dir(path),
          "a failed rename leaves the target and removes tmp: %s", sf_last_error());

    /* monotonic clock */
    double t0 = sf_now();
    usleep(20000);
    double dt = sf_now() - t0;
    CHECK(dt >= 0.019 && dt < 5, "sf_now measured %.4f s for a 20 ms sleep", dt);

    /* the shared cache: one load per key, shared until the last release */
    static sf_shared_cache cache = SF_SHARED_CACHE_INIT(free_obj);
    char *a = sf_shared_acquire(&cache, "model-a", load_ok, NULL);
    char *a2 = sf_shared_acquire(&cache, "model-a", load_ok, NULL);
    char *b = sf_shared_acquire(&cache, "model-b", load_ok, NULL);
    CHECK(a && a == a2 && b && b != a && strcmp(b, "model-b") == 0 && loads == 2, "acquire: %d loads", loads);
    sf_shared_release(&cache, a);
    CHECK(frees == 0, "freed while still referenced");
    sf_shared_release(&cache, a2);
    CHECK(frees == 1, "not freed after the last release (%d)", frees);
    char *a3 = sf_shared_acquire(&cache, "model-a", load_ok, NULL);
    CHECK(a3 && loads == 3, "a released key loads again (%d loads)", loads);
    sf_shared_release(&cache, a3);
    sf_shared_release(&cache, b);
    sf_shared_release(&cache, NULL);
    CHECK(frees == 3 && cache.head == NULL, "everything freed (%d)", frees);
    CHECK(sf_shared_acquire(&cache, "bad", load_fail, NULL) == NULL && strstr(sf_last_error(), "planted failure") &&
              cache.head == NULL,
          "a failed load is reported and not cached: '%s'", sf_last_error());

    snprintf(path, sizeof path, "rm -rf '%s'", root);
    CHECK(system(path) == 0, "cleanup");
    if (!failures) printf("util: all checks passed\n");
    return failures != 0;
}
