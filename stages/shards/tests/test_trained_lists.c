/* The trained-sequence lists of an SAE checkpoint, one format with its writer and reader in
 * keys.c: sh_trained_build's tensors, saved with the safetensors writer, read back by
 * sh_trained_lists / sh_trained_at sorted by (doc, pos) with their row counts; a file without
 * the lists is SF_DONE, lists of unequal lengths are refused. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sf_check.h"
#include "sf_safetensors.h"
#include "shards.h"

static char dir[] = "/tmp/sf_trained_XXXXXX";

/* Saves the tensors t[0..n) (and nothing else when n == 0: a one-element marker) to dir/name. */
static void save(const char *name, const sf_st_tensor *t, int n, char *path, size_t len) {
    snprintf(path, len, "%s/%s", dir, name);
    sf_st_writer *w = sf_st_writer_new();
    static const float marker = 1;
    static const int64_t one = 1;
    sf_st_writer_add(w, "marker", SF_F32, 1, &one, &marker);
    for (int i = 0; i < n; i++) sf_st_writer_add(w, t[i].name, t[i].t.dtype, t[i].t.ndim, t[i].t.shape, t[i].t.data);
    CHECK(sf_st_writer_save(w, path, NULL) == SF_OK, "save %s: %s", path, sf_last_error());
    sf_st_writer_free(w);
}

int main(void) {
    if (!mkdtemp(dir)) return 1;
    /* Added out of order, with one key added twice (the set keeps it once). */
    const struct { int64_t doc; int32_t pos, rows; } in[] = {
        {7, 64, 3}, {-2, 0, 64}, {7, 0, 64}, {1LL << 40, 5, 1}, {7, 0, 64}, {0, 128, 17}};
    const struct { int64_t doc; int32_t pos, rows; } want[] = {
        {-2, 0, 64}, {0, 128, 17}, {7, 0, 64}, {7, 64, 3}, {1LL << 40, 5, 1}};
    const int nwant = (int)(sizeof want / sizeof *want);
    sh_keys set = {0};
    for (size_t i = 0; i < sizeof in / sizeof *in; i++) {
        sh_key *k = sh_keys_add(&set, in[i].doc, in[i].pos);
        k->val = SH_KEY_USED | (uint32_t)in[i].rows;
    }
    sh_trained_out out;
    CHECK(sh_trained_build(&set, &out) == SF_OK && out.n == nwant, "built %lld lists", (long long)out.n);

    char path[512];
    save("ck.safetensors", out.t, 3, path, sizeof path);
    sf_st_file *f = sf_st_open(path);
    CHECK(f != NULL, "open %s", path);
    sh_trained t;
    CHECK(f && sh_trained_lists(f, path, &t) == SF_OK && t.n == nwant, "read back %lld", (long long)t.n);
    for (int i = 0; f && i < nwant && i < t.n; i++) {
        int64_t d;
        int32_t p, r;
        sh_trained_at(&t, i, &d, &p, &r);
        CHECK(d == want[i].doc && p == want[i].pos && r == want[i].rows, "entry %d: doc %lld pos %d rows %d", i,
              (long long)d, p, r);
    }
    sf_st_close(f);

    save("none.safetensors", NULL, 0, path, sizeof path);
    f = sf_st_open(path);
    CHECK(f && sh_trained_lists(f, path, &t) == SF_DONE, "a checkpoint without lists is SF_DONE");
    sf_st_close(f);

    sf_st_tensor bad[3] = {out.t[0], out.t[1], out.t[2]};
    bad[1].t.shape[0] = out.n - 1; /* trained_pos one short */
    bad[1].t.nbytes -= 4;
    save("bad.safetensors", bad, 3, path, sizeof path);
    f = sf_st_open(path);
    CHECK(f && sh_trained_lists(f, path, &t) == SF_ERR && strstr(sf_last_error(), "one length"),
          "unequal lengths refused: %s", sf_last_error());
    sf_st_close(f);

    sh_trained_out_free(&out);
    sh_keys_free(&set);
    sf_remove_tree(dir);
    return failures != 0;
}
